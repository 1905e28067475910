"""Lingering close for answers sent before the request body was read (as nginx and Go's net/http do).

A server that answers early (a 413 on the ``Content-Length``, a 404 to a POST, ...) and closes while the
client is still sending closes a socket with unread bytes in its receive buffer: the kernel then sends an
RST instead of a FIN, and the client (urllib, http.client, curl), still writing its body, gets
``ConnectionResetError`` and never reads the answer. uvicorn closes so after answering a request that said
``Connection: close`` (urllib always does); on a keep-alive connection it discards the rest of the body
instead, without a bound, so a client sending forever was never cut off.

``LingeringClose`` wraps the whole ASGI app, so every early answer takes one path: the answer goes out
with ``Connection: close``; before its last (empty) body message, the rest of the request body is read and
dropped, up to ``max_bytes`` or ``seconds``, whichever comes first; then the server closes. A client past
either bound is cut off (reset), as before.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LINGER_FACTOR = 32  # bytes dropped after an early answer: at most this many times the body limit
LINGER_SECONDS = 5.0  # ... and for at most this long in all (nginx: 5 s for each read, 30 s in all)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request announces a body (the server has already refused a malformed framing)."""
    return any(name == b"transfer-encoding" or (name == b"content-length" and value.strip().lstrip(b"0") != b"")
               for name, value in headers)


class LingeringClose:
    """``app`` whose answers sent before the end of the request body drain that body before closing."""

    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float = LINGER_SECONDS) -> None:
        self.app, self.max_bytes, self.seconds = app, max_bytes, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        done = False  # the whole body has been received (or the client has gone)
        early = False  # the answer started before that

        async def tracked() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def drain() -> None:
            loop = asyncio.get_running_loop()
            deadline, dropped = loop.time() + self.seconds, 0
            while not done and dropped < self.max_bytes:
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    message = await asyncio.wait_for(tracked(), left)
                except asyncio.TimeoutError:
                    return
                dropped += len(message.get("body", b""))

        async def lingering(message: Message) -> None:
            nonlocal early
            if message["type"] == "http.response.start" and not done:
                early = True
                # Any server closes after an answer that says so: the connection is not reused
                # after a body that may have been cut off.
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": headers + [(b"connection", b"close")]}
            elif early and message["type"] == "http.response.body" and not message.get("more_body", False):
                # The answer goes out in full now; the server closes after the empty last message.
                await send({**message, "more_body": True})
                await drain()
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, tracked, lingering)


def lingering_close(app: ASGIApp, max_body_bytes: int, seconds: float = LINGER_SECONDS) -> LingeringClose:
    """``app`` wrapped for a server whose request bodies are limited to ``max_body_bytes``."""
    return LingeringClose(app, LINGER_FACTOR * max_body_bytes, seconds)
