"""Framed messages between ``ner-serve`` and its model processes, over one socket pair per model.

A frame is an 8-byte big-endian length and that many bytes of pickle. The model process reads and writes
with blocking calls (``send_frame``, ``recv_frame``). The server reads and writes on its event loop
(``Channel``): the loop makes the socket non-blocking, so a frame may arrive or leave in any number of parts;
asyncio's transport and ``StreamReader.readexactly`` put them together. A partial transfer is never an
error; only the end of the stream (EOF: the model process exited and its end closed) or a reset is, and
that is ``ChannelClosed``.

(``multiprocessing.Connection`` assumes a blocking descriptor: under uvloop, whose ``add_reader`` leaves
the descriptor non-blocking, a reply sent in two writes or a batch larger than the socket buffer raised
``BlockingIOError``, and the server took a healthy model process for a dead one.)
"""
from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!Q")
_READ_LIMIT = 1 << 24  # StreamReader's buffer before it pauses the socket: frames of megabytes read in few steps


class ChannelClosed(ConnectionError):
    """The other end has closed (EOF) or reset the connection: its process has gone."""


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def send_frame(sock: socket.socket, obj: Any) -> None:
    """Write ``obj`` as one frame (blocking; ``sendall`` finishes partial writes)."""
    data = _dumps(obj)
    try:
        sock.sendall(_HEADER.pack(len(data)))
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise ChannelClosed(str(exc)) from None


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        try:
            n = sock.recv_into(view[got:])
        except ConnectionResetError as exc:
            raise ChannelClosed(str(exc)) from None
        if n == 0:
            raise ChannelClosed("end of stream")
        got += n
    return buf  # pickle.loads and struct read it as it is: no copy of a megabyte frame


def recv_frame(sock: socket.socket) -> Any:
    """Read one frame (blocking); ``ChannelClosed`` at the end of the stream."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    return pickle.loads(_recv_exactly(sock, size))


class Channel:
    """The server's end of a model process's socket, on the event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_READ_LIMIT)
        return cls(reader, writer)

    def write(self, obj: Any) -> None:
        """Queue ``obj`` as one frame now: the transport sends what the socket takes at once and the rest
        as it drains (``drain`` waits for that)."""
        data = _dumps(obj)
        self._writer.write(_HEADER.pack(len(data)))
        self._writer.write(data)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:  # EPIPE / ECONNRESET: the other end has closed
            raise ChannelClosed(str(exc)) from None

    async def read(self) -> Any:
        """The next frame, however many parts it comes in; ``ChannelClosed`` at the end of the stream."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            data = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ChannelClosed("end of stream") from None
        except (ConnectionError, OSError) as exc:
            raise ChannelClosed(str(exc)) from None
        return pickle.loads(data)

    def close(self) -> None:
        self._writer.close()
