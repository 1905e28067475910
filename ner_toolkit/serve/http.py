"""uvicorn's httptools protocol with bounds on a request's head: its size and how long it may take.

httptools buffers a request line and headers without a limit, and uvicorn starts no timer before the first
request of a connection (its keep-alive timeout runs only between requests), so slow or endless heads held
memory and file descriptors for ever. ``bounded_protocol`` gives each connection:

- ``max_head_bytes``: the request line and headers together; more is a 431 and the connection closes.
- ``head_timeout``: from the connection's start, or a request's first byte, to the end of its headers; a
  head not complete by then is a 408 (or, if not a byte came, a plain close) and the connection closes.

The body has its own deadline, in the app (``serve.read_body``). After a 431 the rest of what the client is
sending is read and dropped for a moment before the close, so that it reads the answer instead of a reset.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

_DRAIN_BYTES = 1 << 20  # after a refused head: dropped at most this much ...
_DRAIN_SECONDS = 2.0  # ... for at most this long, before the close


def bounded_protocol(max_head_bytes: int, head_timeout: float) -> type:
    """An ``asyncio.Protocol`` class for ``uvicorn.Config(http=...)``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_bytes = 0
            self._in_head = True  # between a request's start (or the connection's) and the end of its headers
            self._refused = False
            self._dropped = 0
            self._head_timer: Optional[asyncio.TimerHandle] = None
            self._arm()

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._dropped += len(data)
                if self._dropped > _DRAIN_BYTES:
                    self.transport.close()
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_head_bytes and not self.transport.is_closing():
                self._refuse(431, f"the request line and headers exceed {max_head_bytes} bytes "
                                  f"(--max-header-bytes)")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._arm()

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._in_head, self._head_bytes = False, 0
            self._disarm()
            # A head that arrived in one read is complete before data_received can count it: its parts.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > max_head_bytes:
                self._refuse(431, f"the request line and headers exceed {max_head_bytes} bytes "
                                  f"(--max-header-bytes)")
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0  # what follows is the next request's head

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._in_head:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a pipelined head waits unread behind a request in flight: not the client's delay
                return
            if self._head_bytes == 0:
                self.transport.close()  # nothing came: nothing to answer
                return
            self._refuse(408, f"the request line and headers did not arrive within {head_timeout:g} s "
                              f"(--header-timeout)")

        def _refuse(self, status: int, message: str) -> None:
            self._refused = True
            self._disarm()
            body = json.dumps({"error": message}).encode()
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
            for name, value in self.server_state.default_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                        % len(body))
            self.transport.write(b"".join(head) + body)
            if self.transport.can_write_eof():
                self.transport.write_eof()  # the answer is complete: the client may read it while still sending
            self.loop.call_later(_DRAIN_SECONDS, self.transport.close)

    return BoundedHttpToolsProtocol
