"""The HTTP API of ``ner-serve`` (a Starlette app; ``cli/serve.py`` runs it under uvicorn).

Endpoints (all JSON; every error is ``{"error": "..."}``, never a traceback):

- ``POST /predict`` with ``{"texts": ["raw text", ...]}`` (each text split into words by the model's word
  tokeniser, or by ``"tokenizer": "whitespace" | "conll" | "chars"`` given in the body) or
  ``{"tokens": [["Peter", "Blackburn"], ...]}`` (pre-tokenised sentences; each token a non-empty string
  without whitespace). Answers ``{"entities": [[entity, ...], ...]}``, one list per input, each entity
  ``{label, start, end, text, score, token_start, token_end}`` (character offsets into the text, end
  exclusive; for tokens input the text is the tokens joined by single spaces), and for tokens input also
  ``"tags"``: one tag per token, in the training data's scheme.
- ``GET /health``: ``{"status": "ok"}``; 503 while shutting down or while no model can answer (its process
  keeps dying, or its model directory no longer loads). ``GET /metadata``: the model a model process
  loaded (after a restart: the one it loaded then) and the server's settings. ``GET /stats``: requests,
  batches, batch sizes (``batching.BatchStats``), and each model process's pid, restarts and state
  (``workers``).

With ``--label-studio`` (``serve.backend``) the server is also a Label Studio ML backend: ``GET /health``
answers ``{"status": "UP", "model_version", ...}``, a ``POST /predict`` body with ``"tasks"`` is Label
Studio's, and ``POST /setup``, ``/webhook``, ``/train`` and ``GET /`` are added; the models can then be
swapped for a newly trained version while the server runs (``serve.pool``).

Status codes: 400 malformed JSON (or not UTF-8); 408 a body not received within ``body_timeout``; 413 body
over ``max_body_bytes``, more than ``max_texts`` texts/sentences, or more than ``max_tokens`` tokens in one
request (all three are "too large": split the request; raw texts are counted before they are tokenised, and
their characters are capped at ``CHARS_PER_TOKEN`` times ``max_tokens``); 422 a well-formed body of the
wrong shape; 404 unknown route (a trailing slash included: no redirect); 405 wrong method; 503 shutting
down, or no model available (with ``Retry-After``); 500 an internal error (logged to stderr with its
traceback).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..data.text import TOKENIZERS, Document
from ..data.validate import InvalidJSON, InvalidText, load_json
from ..results import Entity, entities
from .batching import ModelUnavailable, ShuttingDown
from .pool import Pool

log = logging.getLogger("ner_toolkit.serve")

_KEYS = ("texts", "tokens", "tokenizer")
_ENTITY_FIELDS = tuple(f.name for f in fields(Entity))
_SPACE = re.compile(r"[ \t\n\r\f\v]")  # as the JSONL reader: what a CoNLL token column cannot hold


# Raw text is word-tokenised in Python, and the conll tokeniser's cost follows the tokens it makes: text of
# short pieces ("a;a;...") makes one per character (~13 us each on a busy 2-core machine). So a request's
# characters are capped before that work, at this many per allowed token (natural text has 4-7): at the
# default limits at most ~2 s of CPU, against 0.25 s for 20,000 tokens of news text.
CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_tokens: int = 20_000

    @property
    def max_chars(self) -> int:
        return CHARS_PER_TOKEN * self.max_tokens


class RequestError(Exception):
    """A request the client must fix: its status code and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, timeout: Optional[float] = None) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit``: before reading when the
    Content-Length says so, else while streaming (a chunked body has none); 408 when it has not all come
    within ``timeout`` seconds (a client that sends slowly or stops holds a connection and a request slot)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared)} bytes; the limit is {limit} (--max-body-bytes)")
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            left = None if deadline is None else deadline - loop.time()
            chunk = await asyncio.wait_for(stream.__anext__(), left)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(408, f"the body did not arrive within {timeout:g} s (--body-timeout)") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body exceeds the limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The body's JSON value through the toolkit's one text check (``data.validate``): undecodable JSON (syntax,
    integers past Python's digit limit, nesting) is 400; a string no text can be (an unpaired surrogate from a
    ``\\ud800`` escape) is 422 naming where it is."""
    if not body.strip():
        raise RequestError(400, 'empty body; send a JSON object such as {"texts": ["..."]}')
    try:
        return load_json(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 text; send JSON") from None
    except InvalidJSON as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except InvalidText as exc:
        raise RequestError(422, str(exc)) from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def parse_predict(obj: Any, limits: Limits) -> tuple[str, list, Optional[str]]:
    """``("texts", [str, ...], tokenizer)`` or ``("tokens", [[str, ...], ...], None)``, checked (422/413)."""
    if not isinstance(obj, dict):
        raise RequestError(422, f'the body is {_kind(obj)}; send an object with "texts" or "tokens"')
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise RequestError(422, f"unknown key(s) {', '.join(map(repr, unknown))}; expected "
                                f'"texts" (with an optional "tokenizer") or "tokens"')
    if ("texts" in obj) == ("tokens" in obj):
        raise RequestError(422, 'give exactly one of "texts" (raw strings) or "tokens" (lists of words)')
    kind = "texts" if "texts" in obj else "tokens"
    items = obj[kind]
    if not isinstance(items, list):
        raise RequestError(422, f'"{kind}" is {_kind(items)}, not a list')
    if len(items) > limits.max_texts:
        raise RequestError(413, f'{len(items)} {kind} in one request; the limit is {limits.max_texts} '
                                f'(--max-texts): split the request')
    tokenizer = obj.get("tokenizer")
    if kind == "texts":
        bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
        if bad is not None:
            raise RequestError(422, f'"texts"[{bad}] is {_kind(items[bad])}, not a string (pre-tokenised '
                                    f'input goes in "tokens")')
        if tokenizer is not None and tokenizer not in TOKENIZERS:
            raise RequestError(422, f'"tokenizer" must be one of {", ".join(TOKENIZERS)}, got {tokenizer!r}')
        return kind, items, tokenizer
    if tokenizer is not None:
        raise RequestError(422, '"tokenizer" applies to "texts" only; "tokens" are already words')
    total = 0
    for i, sentence in enumerate(items):
        if not isinstance(sentence, list) or not all(isinstance(t, str) for t in sentence):
            raise RequestError(422, f'"tokens"[{i}] must be a list of strings (one sentence\'s words)')
        bad = next((j for j, t in enumerate(sentence) if not t or _SPACE.search(t)), None)
        if bad is not None:
            raise RequestError(422, f'"tokens"[{i}][{bad}] {sentence[bad]!r} is empty or holds whitespace; '
                                    f'give each token as one non-empty word')
        total += len(sentence)
    check_tokens(total, limits)
    return kind, items, None


def check_tokens(total: int, limits: Limits) -> None:
    if total > limits.max_tokens:
        raise RequestError(413, f"{total} tokens in one request; the limit is {limits.max_tokens} "
                                f"(--max-tokens): split the request")


def _entity(e: Entity) -> dict:
    # Entity.to_dict's asdict deep-copies; the fields are flat, and this runs on the event loop per entity.
    return {name: getattr(e, name) for name in _ENTITY_FIELDS}


def check_texts(texts: list[str], tokenizer: str, limits: Limits) -> None:
    """Refuse (413) raw texts over ``max_tokens`` before any is tokenised, from counts taken at C speed:
    no word tokeniser joins words across whitespace, so the whitespace-separated words are at most as many
    as the tokens (exactly as many for ``whitespace``; ``chars`` gives one token per other character). The
    characters are capped too: the conll tokeniser's cost follows them, not the words."""
    if tokenizer == "chars":
        check_tokens(sum(len("".join(t.split())) for t in texts), limits)
        return
    check_tokens(sum(len(t.split()) for t in texts), limits)
    chars = sum(len(t) for t in texts)
    if tokenizer != "whitespace" and chars > limits.max_chars:
        raise RequestError(413, f"{chars} characters of text in one request; the limit is {limits.max_chars} "
                                f"({CHARS_PER_TOKEN} per token of --max-tokens): split the request")


def _documents_of_texts(texts: list[str], tokenizer: str, limits: Limits) -> list[Document]:
    """The texts tokenised one by one, stopping (413) once the tokens pass ``max_tokens``."""
    documents, total = [], 0
    for text in texts:
        documents.append(Document.from_text(text, tokenizer))
        total += len(documents[-1])
        check_tokens(total, limits)
    return documents


def create_app(predictor: Any, *, max_batch: int, max_wait_ms: float, limits: Limits,
               metadata: Optional[dict] = None, body_timeout: Optional[float] = None,
               label_studio: Optional[Any] = None) -> Starlette:
    """The API around ``predictor`` (a ``Predictor``, or anything with its ``labels``, ``word_tokenizer``,
    ``batch_size``, ``device``, ``precision`` and ``predict_documents``, or ``batching.AsyncModel``'s
    ``submit`` in its place: ``worker.ModelProcess``), or around a list of copies of one model, which
    then tag batches side by side; ``metadata``: extra fields for ``GET /metadata`` (model directory,
    version, ...; a model's own ``identity`` takes precedence); ``body_timeout``: seconds a request body may
    take to arrive (None: no limit); ``label_studio``: a ``backend.LabelStudioBackend``, whose protocol then
    answers ``GET /health`` and ``POST /predict`` bodies with ``"tasks"``, and adds its own routes."""
    pool = Pool(list(predictor) if isinstance(predictor, (list, tuple)) else [predictor], max_batch,
                max_wait_ms / 1000.0)
    if label_studio is not None:
        label_studio.attach(pool, limits)

    def live() -> Any:
        """The model that answers: the first one ready (a model process describes what it loaded last)."""
        return next((c for c in pool.copies if getattr(c, "state", "ready") == "ready"), pool.copies[0])

    def described() -> dict:
        model = live()
        info = model.labels
        return {
            **(metadata or {}),
            **getattr(model, "identity", {}),
            "labels": list(info.labels),
            "types": sorted(info.types),
            "tag_scheme": info.tag_scheme.name,
            "output_scheme": info.output_scheme.name,
            "word_tokenizer": model.word_tokenizer,
            "tokenizers": list(TOKENIZERS),
            "limits": asdict(limits),
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "batch_size": model.batch_size,
                         "workers": len(pool.copies)},
            "device": str(model.device),
            "precision": model.precision,
        }

    def unavailable() -> Optional[ModelUnavailable]:
        """Why no model can answer now, or None (``health``: a dead model process is found and replaced)."""
        down = pool.batcher.unavailable()
        problems = [c.health() for c in pool.copies if hasattr(c, "health")]
        if down is None and problems and all(problems):
            down = ModelUnavailable(str(problems[0]), 1.0)
        return down

    def retry_after(exc: ModelUnavailable) -> dict:
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}

    def refused(exc: ModelUnavailable) -> JSONResponse:
        return _error(503, f"no model can answer: {exc.reason}", retry_after(exc))

    async def predict(request: Request) -> Response:
        try:
            body = parse_json(await read_body(request, limits.max_body_bytes, body_timeout))
            if label_studio is not None and isinstance(body, dict) and "tasks" in body:
                return await label_studio.predict(body)
            kind, items, tokenizer = parse_predict(body, limits)
            if kind == "texts":
                name = tokenizer or live().word_tokenizer
                check_texts(items, name, limits)  # before the tokenising, which costs in proportion
                # The conll tokeniser is Python work in proportion to the body: off the event loop.
                documents = (await asyncio.to_thread(_documents_of_texts, items, name, limits) if items else [])
            else:
                documents = [Document.from_tokens(sentence) for sentence in items]
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except ShuttingDown:  # from Label Studio's predict: it tags within the try
            return _error(503, "the server is shutting down; retry on another instance")
        except ModelUnavailable as exc:
            return refused(exc)
        except ClientDisconnect:
            log.info("%s:%s left before sending the whole body", *(request.client or ("?", "?")))
            return Response(status_code=400)  # nobody reads it
        if not documents:
            return JSONResponse({"entities": []} if kind == "texts" else {"entities": [], "tags": []})
        try:
            predictions = await pool.batcher.submit(documents)
        except ShuttingDown:
            return _error(503, "the server is shutting down; retry on another instance")
        except ModelUnavailable as exc:
            return refused(exc)
        found = [[_entity(e) for e in entities(d, p)] for d, p in zip(documents, predictions)]
        if kind == "texts":
            return JSONResponse({"entities": found})
        return JSONResponse({"entities": found, "tags": [p.tags for p in predictions]})

    async def health(request: Request) -> JSONResponse:
        if pool.batcher.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        down = unavailable()
        if down is not None:
            return JSONResponse({"status": "unavailable", "error": f"no model can answer: {down.reason}"},
                                status_code=503, headers=retry_after(down))
        # Label Studio's protocol: "UP", with the model version and the training rounds' state.
        return JSONResponse(label_studio.health() if label_studio is not None else {"status": "ok"})

    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(described())

    async def stats(request: Request) -> JSONResponse:
        workers = [{"pid": c.pid, "restarts": c.restarts, "state": c.state}
                   for c in pool.copies if hasattr(c, "restarts")]
        return JSONResponse({**pool.batcher.stats.to_dict(), "queued": pool.batcher.queued, "workers": workers})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        messages = {404: f"no such endpoint: {request.method} {request.url.path}; the endpoints are "
                         "POST /predict, GET /health, GET /metadata, GET /stats",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response: layers.RequestIds (or bare uvicorn) logs the traceback.
        rid = getattr(request.state, "request_id", None)
        return _error(500, "internal server error; the server log has the details"
                           + (f" (request id {rid})" if rid else ""))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.start()
        try:
            yield
        finally:
            if label_studio is not None:
                await label_studio.close()  # a training run stops; no swap starts now
            # uvicorn runs this after the connections in flight have closed (or its deadline has cut them
            # off); anything still queued is tagged before the worker stops, then the model processes go.
            await pool.close()

    extra = label_studio.routes() if label_studio is not None else []
    app = Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/metadata", describe, methods=["GET"]), Route("/stats", stats, methods=["GET"]), *extra],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan)
    # "/health/" is a 404, never a redirect to whatever host the client's Host header names.
    app.router.redirect_slashes = False
    app.state.batcher = pool.batcher  # the first one; pool.batcher after a swap
    app.state.pool = pool
    return app
