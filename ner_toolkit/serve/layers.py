"""ASGI layers around the ``ner-serve`` app (``cli/serve.py`` stacks them with ``stack``).

- ``RequestIds`` (outermost): every answer carries an ``X-Request-Id`` (the client's, when it sent a sane
  one, else a new one), and every 5xx is logged with it: one line, or for an internal error its traceback
  (logged once, here, rather than again by uvicorn). A request still running when the graceful-shutdown
  deadline cancels it gets a 503, not a traceback.
- ``LingeringClose`` (``serve.linger``): an answer sent before the body was read drains the body first.
- ``ConcurrencyLimit`` (innermost): at most ``limit`` requests that may carry a body (anything but GET and
  HEAD) at once; beyond that a 503 at once, inside the lingering close so that the client reads it. (Not
  uvicorn's ``limit_concurrency``: its 503 is plain text, counts connections, and closes without draining.)
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Optional

from .linger import ASGIApp, Message, Receive, Scope, Send, lingering_close

log = logging.getLogger("ner_toolkit.serve")

_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # visible ASCII: never a header or log line injected


def _json_answer(status: int, message: str, headers: Optional[list[tuple[bytes, bytes]]] = None
                 ) -> tuple[Message, Message]:
    body = json.dumps({"error": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *(headers or [])]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode("ascii") if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        status, error = 0, ""
        logged = False  # the request's fate is in the log already (a traceback, the shutdown deadline)

        async def send_with_id(message: Message) -> None:
            nonlocal status, error
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", rid.encode("ascii"))]}
            elif message["type"] == "http.response.body" and status >= 500 and not error:
                error = _error_of(message)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn's graceful-shutdown deadline has passed (``--graceful-timeout``): answer if nothing was
            # sent yet, and end the request rather than leave a traceback.
            logged = True
            log.info("%s cut off by the shutdown deadline [request id %s]", where, rid)
            if status == 0:
                start, body = _json_answer(503, "the server is shutting down; retry on another instance",
                                           [(b"connection", b"close")])
                await send_with_id(start)
                await send_with_id(body)
        except Exception:
            logged = True
            log.exception("internal error in %s [request id %s]", where, rid)
            if status == 0:
                start, body = _json_answer(500, f"internal server error; the server log has the details "
                                                f"(request id {rid})")
                await send_with_id(start)
                await send_with_id(body)
        if status >= 500 and not logged:
            log.warning("%s answered %d: %s [request id %s]", where, status, error, rid)


def _error_of(message: Message) -> str:
    try:
        return str(json.loads(message.get("body", b""))["error"])
    except (ValueError, KeyError, TypeError):
        return "(no JSON error)"


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            start, body = _json_answer(503, f"the server is at its limit of {self.limit} requests at once "
                                            f"(--max-concurrency); retry shortly", [(b"retry-after", b"1")])
            await send(start)
            await send(body)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def stack(app: ASGIApp, max_body_bytes: int, max_concurrency: int) -> ASGIApp:
    """``app`` inside the layers above, in their order."""
    return RequestIds(lingering_close(ConcurrencyLimit(app, max_concurrency), max_body_bytes))
