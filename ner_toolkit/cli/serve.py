"""``ner-serve``: an HTTP server (Starlette + uvicorn) tagging texts with a trained model, with dynamic
batching; the API is described in ``ner_toolkit/serve/app.py``.

The model loads before the port is bound, so a bad model directory (exit 2, one ``error:`` line) never
leaves a half-started server; a port in use is exit 2 as well, checked before the (slow) model load. Once listening, one line on stderr:
``serving DIR on http://HOST:PORT (max batch N, max wait M ms)`` (``--port 0``: the port the system
chose). SIGTERM or Ctrl-C: stop accepting, finish the requests in flight and queued, exit 0; requests still
running after ``--graceful-timeout`` seconds (a client that never finishes its body) are cut off.

Each connection is bounded (``serve.http``, ``serve.layers``): its request head in size and time, its body in
size and time, and the requests at once across connections (503 beyond ``--max-concurrency``).
"""
from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..extras import require
from .common import Parser, checked_threads, device_options, model_options, speed_options, threads_options

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_MS = 0.0  # as Triton: no added delay; requests queued while the model is busy still batch
DEFAULT_MAX_HEADER_BYTES = 32 * 1024  # nginx's large_client_header_buffers: 4 x 8k
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0  # the default 1 MiB body at 17 KB/s
DEFAULT_MAX_CONCURRENCY = 128
DEFAULT_GRACEFUL_TIMEOUT = 30.0


def _parser(prog: Optional[str] = None) -> Parser:
    from ..serve.app import Limits

    limits = Limits()
    p = Parser(prog=prog, description="Serve a trained model over HTTP: POST /predict, GET /health, GET /metadata, "
                                      "GET /stats; with --label-studio, also a Label Studio ML backend.",
               parents=[model_options(), device_options(), speed_options(), threads_options()])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"most texts/sentences tagged in one model call across requests (default "
                        f"{DEFAULT_MAX_BATCH}); a larger request is tagged alone")
    p.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                   help=f"longest a request waits for batch-mates when its batch is not full (default "
                        f"{DEFAULT_MAX_WAIT_MS:g}; 0: only the requests already queued are batched)")
    p.add_argument("--workers", type=int, default=1,
                   help="model processes, each with its own copy of the model and tagging its own batches "
                        "(default 1); more use more cores and memory")
    p.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes,
                   help=f"largest request body; larger: 413 (default {limits.max_body_bytes})")
    p.add_argument("--max-texts", type=int, default=limits.max_texts,
                   help=f"most texts or sentences in one request; more: 413 (default {limits.max_texts})")
    p.add_argument("--max-tokens", type=int, default=limits.max_tokens,
                   help=f"most words in one request (after word tokenisation); more: 413 "
                        f"(default {limits.max_tokens})")
    p.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES,
                   help=f"largest request line and headers together; larger: 431 (default "
                        f"{DEFAULT_MAX_HEADER_BYTES})")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                   help=f"seconds a request's line and headers may take to arrive; longer: 408 and the "
                        f"connection closes (default {DEFAULT_HEADER_TIMEOUT:g})")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                   help=f"seconds a request body may take to arrive in full; longer: 408 (default "
                        f"{DEFAULT_BODY_TIMEOUT:g})")
    p.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY,
                   help=f"most POST requests in progress at once; more: 503 with Retry-After (default "
                        f"{DEFAULT_MAX_CONCURRENCY}; GET /health, /metadata, /stats are not counted)")
    p.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT,
                   help=f"on SIGTERM or Ctrl-C, seconds to let the requests in progress finish before they are "
                        f"cut off and the server exits (default {DEFAULT_GRACEFUL_TIMEOUT:g})")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--label-studio", action="store_true",
                   help="also be a Label Studio ML backend: /setup, /webhook, /train, and Label Studio's /predict "
                        "and /health (docs/label-studio.md); annotations are kept in --work-dir and train new "
                        "model versions on START_TRAINING")
    p.add_argument("--work-dir", default="ner-label-studio",
                   help="with --label-studio: the annotations corpus and the training rounds' directories "
                        "(default ./ner-label-studio)")
    p.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --label-studio: a config override for every training round, e.g. --train-set "
                        "training.epochs=5 (repeatable; data.train is the server's)")
    return p


def _check(args: Any) -> None:
    checked_threads(args)  # of each model process; 0: the free cores divided among the workers
    for name in ("workers", "max_batch", "batch_size", "max_body_bytes", "max_texts", "max_tokens",
                 "max_header_bytes", "max_concurrency"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be at least 1, got {getattr(args, name)}", flag)
    for name in ("header_timeout", "body_timeout", "graceful_timeout"):
        value = getattr(args, name)
        if not 0 < value <= 86_400:  # NaN fails too
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be more than 0 and at most 86400 seconds, got {value:g}", flag)
    if not 0 <= args.max_wait_ms <= 60_000:
        raise UserError(f"--max-wait-ms must be from 0 to 60000, got {args.max_wait_ms:g}", "--max-wait-ms")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}", "--port")
    if not args.label_studio and (args.train_overrides or args.work_dir != "ner-label-studio"):
        raise UserError("--work-dir and --train-set apply to --label-studio only; add --label-studio",
                        "--work-dir" if args.work_dir != "ner-label-studio" else "--train-set")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here (not by uvicorn) so that a busy port is one error line and
    ``--port 0`` reports the port chosen."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve the host ({exc.strerror})", "--host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "in use by another process; choose another --port" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise UserError(f"cannot listen on {host} port {port}: {why}", "--port") from None
    sock.set_inheritable(True)
    return sock


def url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(argv: list[str], prog: Optional[str] = None) -> int:
    # Before the parser (its defaults come from serve.app, on starlette): --help says the same line.
    # httptools: the request-head bounds are built on uvicorn's httptools protocol.
    require("serve", prog or "ner serve")
    import uvicorn

    args = _parser(prog).parse_args(argv)
    _check(args)

    from ..model.directory import resolve_model_dir
    from ..serve.app import Limits, create_app
    from ..serve.http import bounded_protocol
    from ..serve.layers import stack
    from ..serve.worker import default_threads, start_models

    model_dir = resolve_model_dir(args.model).resolve()
    if args.port != 0:
        bind(args.host, args.port).close()  # a busy port fails now, not after a long model load
    # The model runs in a child process: the event loop here and the model there each get a core.
    load = dict(directory=str(model_dir), device=args.device, batch_size=args.batch_size,
                precision=args.precision, trust_remote_code=args.trust_remote_code, quantize=args.quantize,
                compile=args.compile)
    threads = args.threads or default_threads(args.workers)
    backend = _label_studio(args, model_dir, load, threads) if args.label_studio else None
    models = start_models(load, args.workers, threads)
    limits = Limits(args.max_body_bytes, args.max_texts, args.max_tokens)
    # model_dir and config_sha256 come from each model process: what it loaded.
    metadata = {"version": _version(),
                "connections": {"max_header_bytes": args.max_header_bytes, "header_timeout": args.header_timeout,
                                "body_timeout": args.body_timeout, "max_concurrency": args.max_concurrency,
                                "graceful_timeout": args.graceful_timeout}}
    sock = bind(args.host, args.port)
    app = create_app(models, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, limits=limits,
                     metadata=metadata, body_timeout=args.body_timeout, label_studio=backend)
    ready = (f"serving {model_dir} on {url(args.host, sock)} "
             f"(max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms)")
    _log_to_stderr()
    config = uvicorn.Config(stack(app, limits.max_body_bytes, args.max_concurrency), log_level="warning",
                            access_log=args.access_log, lifespan="on",
                            http=bounded_protocol(args.max_header_bytes, args.header_timeout),
                            timeout_graceful_shutdown=args.graceful_timeout)
    server = _ready_server(config, ready)
    # uvicorn handles SIGTERM/SIGINT while serving (graceful drain), then restores the handlers it found
    # and raises the signal again: ignored here, so that a drained server exits 0 rather than as killed.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        for model in models:  # after the drain: the batcher has run everything queued
            model.close()
    return 0 if server.started else 1


def _label_studio(args: Any, model_dir: Any, load: dict, threads: int) -> Any:
    """The Label Studio backend, its training overrides checked now against the model's config (a bad one is
    exit 2 here, not a failed round later)."""
    from ..config import load_config
    from ..serve.backend import LabelStudioBackend
    from ..serve.worker import start_models

    try:
        config = load_config(model_dir / "config.yaml", tuple(args.train_overrides))
    except UserError as exc:
        if exc.path != "--set":
            raise
        raise UserError(exc.message.replace("(from --set ", "(from --train-set "), "--train-set", exc.line) from None
    return LabelStudioBackend(model_dir, Path(args.work_dir).resolve(),
                              lambda directory: start_models({**load, "directory": directory}, args.workers, threads),
                              tuple(args.train_overrides), config.data.unknown_tag)


def _log_to_stderr() -> None:
    """The server's own lines (a restarted model, a 5xx with its request id, a client gone mid-body) on
    stderr, as uvicorn writes its own."""
    from uvicorn.logging import DefaultFormatter

    logger = logging.getLogger("ner_toolkit.serve")
    if any(getattr(h, "ner_serve", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False))
    handler.ner_serve = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _version() -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version("ner_toolkit")
    except metadata.PackageNotFoundError:
        return None


def _ready_server(config: Any, ready: str) -> Any:
    """A uvicorn server that says once, on stderr, that it listens (what scripts and tests wait for)."""
    import uvicorn

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: Optional[list] = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(ready, file=sys.stderr, flush=True)

    return ReadyServer(config)
