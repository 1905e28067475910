"""The model of ``ner-serve`` in a process of its own.

Python runs one thread at a time (the GIL), so a model thread inside the server process shares one core
with the event loop: every request parsed, every response written and every Python step of tagging
(collation, decoding, building predictions) waits for the other. In a child process the model keeps a
core to itself while the server process handles HTTP; a batch crosses a socket pair as a pickled frame of
documents and comes back as pickled predictions (``serve.pipe``: frames of any size, in any number of parts).

``ModelProcess`` looks to ``serve.create_app`` like a predictor (``labels``, ``word_tokenizer``,
``batch_size``, ``device``, ``precision``, and ``identity``: the model directory and its config's sha256;
``submit`` in place of ``predict_documents``); the child sends those once its model has loaded, so after a
restart they describe the model the new child loaded. A model directory the user must fix comes back as a
``UserError`` before the server listens.

A child is dead only when its socket reaches EOF (it exited: only it holds the other end). The first death
is repaired at once: a new child loads the model and the batch is sent to it. Deaths and failed loads in a
row wait before the next try (0.5 s, doubling up to 30 s); meanwhile, and when a load fails (the model
directory gone or changed into one that does not load), batches are refused with ``ModelUnavailable``
(503) and ``health`` names the problem. An answered batch ends the row.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import multiprocessing
import signal
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from ..data.text import Document
from ..errors import UserError, one_line_logging
from ..results import Prediction
from ..threads import free_cores
from .batching import ModelUnavailable
from .pipe import Channel, ChannelClosed, recv_frame, send_frame

log = logging.getLogger("ner_toolkit.serve")

_SHOWN = ("labels", "word_tokenizer", "batch_size", "device", "precision")
FIRST_DELAY = 0.5  # seconds before the second try in a row; doubled for each further one
MAX_DELAY = 30.0


def _identity(directory: str) -> dict:
    """What the child is about to load: read before the model, so a directory replaced meanwhile shows."""
    try:
        digest: Optional[str] = hashlib.sha256((Path(directory) / "config.yaml").read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"model_dir": directory, "config_sha256": digest}


def _child(sock: socket.socket, load: dict, threads: Optional[int]) -> None:
    """Load the model, report its attributes, then tag every batch received until the socket closes."""
    # The server process decides when to stop (after draining); a Ctrl-C sent to the terminal's process
    # group must not kill the model under requests still in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    # The library's notes and warnings on the inherited stderr, as the server process prints its own.
    with one_line_logging():
        _serve_batches(sock, load)


def _serve_batches(sock: socket.socket, load: dict) -> None:
    """``_child``'s work: load, report ``ready``, answer every batch until the socket closes."""
    from ..predict import Predictor

    try:
        try:
            identity = _identity(load["directory"])
            predictor = Predictor.load(**load)
            if load.get("compile"):
                # Compiling takes seconds: on a warm-up batch now, not inside the first requests' latency.
                # Sizes of 1 compile graphs of their own: one sentence, one word, and the general case.
                for warm_up in ([["a"]], [["a", "b"]], [["a"], ["b"]], [["a", "b"], ["c", "d"]]):
                    predictor.predict(warm_up)
        except UserError as exc:
            send_frame(sock, ("user-error", (exc.message, exc.path, exc.line)))
            return
        except BaseException:
            send_frame(sock, ("error", traceback.format_exc()))
            return
        shown = {name: getattr(predictor, name) for name in _SHOWN}
        shown["device"] = str(shown["device"])
        send_frame(sock, ("ready", {**shown, "identity": identity}))
        while True:
            documents = recv_frame(sock)
            if documents is None:
                return
            try:
                reply: tuple[str, Any] = ("ok", predictor.predict_documents(documents))
            except Exception:
                reply = ("error", traceback.format_exc())
            send_frame(sock, reply)
    except ChannelClosed:  # the server process has gone
        return


class ModelProcessError(RuntimeError):
    """A batch failed in the model process (its traceback is the message), or killed two in a row."""


class ModelProcess:
    """A predictor living in a child process; ``submit`` sends it a batch from the event loop.

    ``load``: the keyword arguments of ``Predictor.load`` (picklable: paths as strings); ``threads``:
    torch threads in the child (None: torch's default).
    """

    def __init__(self, load: dict, threads: Optional[int] = None) -> None:
        self.load, self.threads = dict(load), threads
        self._context = multiprocessing.get_context("spawn")  # fork would copy the server's threads and locks
        self._loading: Optional[tuple[Any, socket.socket]] = None  # a child launched, not yet ready
        self._process: Optional[Any] = None
        self._sock: Optional[socket.socket] = None  # the server's end, until the event loop takes it over
        self._channel: Optional[Channel] = None
        self._starting: Optional["asyncio.Task[None]"] = None
        self._failures = 0  # deaths and failed loads since the last answered batch
        self._not_before = 0.0  # time.monotonic() before which no new child is started
        self._problem = ""  # why the last child died or failed to load
        self.restarts = 0
        self.identity: dict = {}
        self.labels: Any = None
        self.word_tokenizer: str = ""
        self.batch_size = 0
        self.device = ""
        self.precision = ""

    # --- starting (blocking: before the server runs, or on a thread) ----------------------------------------

    def start(self) -> "ModelProcess":
        """Start the child and wait until its model has loaded (``UserError``: a bad model directory)."""
        return self.launch().wait_ready()

    def launch(self) -> "ModelProcess":
        """Start the child; ``wait_ready`` then waits for its model (several children load at once)."""
        parent, child = socket.socketpair()
        process = self._context.Process(target=_child, args=(child, self.load, self.threads),
                                        name="ner-serve-model", daemon=True)
        process.start()
        child.close()  # only the child holds its end: its exit is an EOF here
        self._loading = (process, parent)
        return self

    def wait_ready(self) -> "ModelProcess":
        assert self._loading is not None, "launch() first"
        process, sock = self._loading
        try:
            kind, payload = recv_frame(sock)
        except ChannelClosed:
            kind, payload = "exit", None
        self._loading = None
        if kind != "ready":
            sock.close()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
            if kind == "user-error":
                raise UserError(*payload)
            if kind == "exit":
                raise ModelProcessError(f"the model process exited while loading (exit code {process.exitcode})")
            raise ModelProcessError(f"the model process failed to load the model:\n{payload}")
        previous = self.identity
        for name, value in payload.items():
            setattr(self, name, value)
        # Published only now: until its "ready", the socket is the loader's (a batch sent on it would read
        # the "ready" frame as its answer).
        self._process, self._sock = process, sock
        if previous and previous != self.identity:
            log.warning("the new model process serves another model: config sha256 %s -> %s",
                        previous.get("config_sha256"), self.identity.get("config_sha256"))
        return self

    # --- serving (on the event loop) ------------------------------------------------------------------------

    def submit(self, documents: Sequence[Document]) -> "asyncio.Future[list[Prediction]]":
        """Send a batch to the child; the future gives its predictions (with CRF scores, as
        ``Predictor.predict_documents``). Call on the event loop, one batch at a time (the batcher gives a
        model its next batch only once the last is answered).

        The batch is queued on the socket here, not in a task, so the model starts before the loop runs
        anything else; the answer is read on the loop as it arrives (no thread waits for it: a thread would
        wait for the GIL behind the event loop on every batch). A child that dies under a batch is replaced
        and the batch sent again, once (tagging has no side effects); a batch that kills a second child too
        raises ``ModelProcessError``; ``ModelUnavailable`` while no child can be started."""
        batch = list(documents)
        sent = self._channel is not None
        if self._channel is not None:
            self._channel.write(batch)
        return asyncio.ensure_future(self._answer(batch, sent))

    async def _answer(self, batch: list[Document], sent: bool) -> list[Prediction]:
        for _ in range(2):
            if not sent:
                await self._ready()
                assert self._channel is not None
                self._channel.write(batch)
            sent = False
            channel, process = self._channel, self._process
            assert channel is not None
            try:
                await channel.drain()
                kind, payload = await channel.read()
            except ChannelClosed:
                self._died(process)
                continue
            self._failures = 0
            if kind != "ok":
                raise ModelProcessError(f"the model failed on a batch:\n{payload}")
            return payload
        raise ModelProcessError(f"the model process died again on the same batch of {len(batch)} documents")

    async def _ready(self) -> None:
        """A child to send to: the one there is, or a new one (one start at a time, shared by every caller)."""
        if self._channel is not None:
            return
        if self._starting is None:
            wait = self._not_before - time.monotonic()
            if self._sock is None and wait > 0:
                raise ModelUnavailable(f"{self._problem}; the next try is in {math.ceil(wait)} s", wait)
            self._bring_up()
        assert self._starting is not None
        # Shielded: a request that goes away must not cancel a start others wait for.
        await asyncio.shield(self._starting)

    def _bring_up(self) -> None:
        self._starting = asyncio.ensure_future(self._start_on_loop())
        self._starting.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _start_on_loop(self) -> None:
        """A new child when there is none, then the event loop's channel to it."""
        try:
            if self._sock is None:
                self.restarts += 1
                log.warning("starting a new model process (restart %d)", self.restarts)
                try:
                    await asyncio.to_thread(self.start)  # loads the model: seconds, off the loop
                except (UserError, ModelProcessError) as exc:
                    reason = f"the model does not load: {str(exc).splitlines()[0]}"
                    self._failed(reason)
                    raise ModelUnavailable(reason, self._not_before - time.monotonic()) from None
            sock = self._sock
            assert sock is not None
            channel = await Channel.open(sock)
            if self._sock is not sock:  # the child was found dead meanwhile
                channel.close()
                raise ModelUnavailable(self._problem, self._not_before - time.monotonic())
            self._channel, self._sock = channel, None  # the socket is the channel's now
        finally:
            self._starting = None

    def _died(self, process: Any) -> None:
        """The child ``process`` has gone (EOF); nothing if that was already found."""
        if process is None or process is not self._process:
            return
        code = self._reap(1.0)  # it has exited or is exiting: its end of the socket is closed
        self._failed(f"the model process died (exit code {code})")

    def _failed(self, reason: str) -> None:
        self._failures += 1
        delay = 0.0 if self._failures == 1 else min(MAX_DELAY, FIRST_DELAY * 2 ** (self._failures - 2))
        self._not_before = time.monotonic() + delay
        self._problem = reason
        log.warning("%s; %s", reason, "replacing it" if delay == 0 else f"the next try in {delay:g} s")

    def health(self) -> Optional[str]:
        """None when this model can answer (or a first restart is under way), else why not. A child found
        dead here is replaced now, not by the next batch; a model whose wait is over is tried again."""
        if self._process is not None and not self._process.is_alive():
            self._died(self._process)
        if self._channel is not None or self._sock is not None:
            return None
        if self._starting is None and time.monotonic() >= self._not_before:
            self._bring_up()
        return None if self._failures <= 1 else self._problem

    @property
    def state(self) -> str:
        if self._channel is not None or self._sock is not None:
            return "ready"
        return "starting" if self._starting is not None else "down"

    # --- stopping -------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Ask the child to stop (on the event loop, after the last batch); ``close`` reaps it."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.write(None)
            try:
                await asyncio.wait_for(channel.drain(), 5)
            except (ChannelClosed, asyncio.TimeoutError):
                pass
            channel.close()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child after the batch it is running (it takes no new one)."""
        if self._sock is not None:
            try:
                send_frame(self._sock, None)
            except (ChannelClosed, OSError):
                pass
        self._reap(timeout)

    def _reap(self, timeout: float = 5.0) -> Optional[int]:
        if self._loading is not None:  # start_models stopping the others after one failed
            self._process, self._sock = self._loading
            self._loading = None
        process, sock, channel = self._process, self._sock, self._channel
        self._process = self._sock = self._channel = None
        if sock is not None:
            sock.close()
        if channel is not None:
            try:
                channel.close()
            except RuntimeError:  # its event loop has ended: the socket closes with the transport
                pass
        if process is None:
            return None
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        return process.exitcode

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid


def start_models(load: dict, workers: int, threads: Optional[int]) -> list[ModelProcess]:
    """``workers`` model processes, loading in parallel; all are stopped if one fails."""
    models = [ModelProcess(load, threads).launch() for _ in range(workers)]
    try:
        for model in models:
            model.wait_ready()
    except BaseException:
        for model in models:
            model._reap()
        raise
    return models


def default_threads(workers: int = 1) -> int:
    """Torch threads for each of ``workers`` model processes: the cores not busy with other processes
    (:func:`ner_toolkit.threads.free_cores`) shared out, at least one each."""
    return max(1, free_cores() // workers)
