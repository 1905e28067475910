"""Frames between ``ner-serve`` and its model processes (``serve.pipe``) on the event loop the server uses
(uvloop when installed, as uvicorn picks it): a frame in any number of parts, or larger than any socket
buffer, is one message; only the end of the stream is a closed channel. And a real model process takes
such batches without being taken for dead."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Callable, Coroutine

import pytest

from test_serve import sentences


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def test_a_model_process_takes_batches_larger_than_the_socket_buffers(trained) -> None:
    """Under uvloop the socket is non-blocking once the loop watches it: a 1 MB batch is written in parts
    and a reply of many tags read in parts, and neither is a death (restart) or an error."""
    from ner_toolkit.data.text import Document
    from ner_toolkit.serve.worker import ModelProcess

    model = ModelProcess(dict(directory=str(trained.model_dir)), threads=1).start()
    try:
        large = [Document.from_tokens(["x" * 199] * 100) for _ in range(50)]  # 1 MB pickled
        many = [Document.from_tokens(s) for s in sentences(64)] * 8

        async def main() -> list:
            return [len(await model.submit(batch)) for batch in (large, many, large, many)]

        assert run(main) == [50, 512, 50, 512]
        assert model.restarts == 0
    finally:
        model.close()


def test_a_frame_in_small_pieces_with_pauses_is_read_whole() -> None:
    from ner_toolkit.serve.pipe import _HEADER, Channel, _dumps

    parent, child = socket.socketpair()
    payload = {"tags": [["B-PER", "I-PER", "O"]] * 2000}
    data = _dumps(payload)
    frame = _HEADER.pack(len(data)) + data

    def trickle() -> None:  # the header split too: a reply written in parts
        for i in range(0, len(frame), 997):
            child.sendall(frame[i:i + 997])
            if i % (997 * 8) == 0:
                time.sleep(0.002)

    async def main() -> Any:
        channel = await Channel.open(parent)
        writer = threading.Thread(target=trickle)
        writer.start()
        got = await channel.read()
        writer.join()
        channel.close()
        return got

    assert run(main) == payload
    child.close()


def test_a_batch_larger_than_the_socket_buffers_goes_and_comes_back_whole() -> None:
    from ner_toolkit.serve.pipe import Channel, recv_frame, send_frame

    parent, child = socket.socketpair()
    batch = ["x" * 1000] * 8000  # 8 MB: many times what the kernel buffers hold

    def echo() -> None:  # a slow reader: the server's writes are partial, and must wait
        time.sleep(0.2)
        got = recv_frame(child)
        send_frame(child, ("ok", len(got), got[:2]))

    async def main() -> Any:
        channel = await Channel.open(parent)
        peer = threading.Thread(target=echo)
        peer.start()
        channel.write(batch)
        await channel.drain()
        reply = await channel.read()
        peer.join()
        channel.close()
        return reply

    assert run(main) == ("ok", 8000, batch[:2])
    child.close()


def test_only_the_end_of_the_stream_closes_the_channel() -> None:
    from ner_toolkit.serve.pipe import _HEADER, Channel, ChannelClosed, _dumps

    parent, child = socket.socketpair()

    async def main() -> None:
        channel = await Channel.open(parent)
        data = _dumps("half")
        child.sendall(_HEADER.pack(len(data)) + data[:2])  # then the peer exits mid-frame
        await asyncio.sleep(0.05)
        child.close()
        with pytest.raises(ChannelClosed):
            await channel.read()
        channel.close()

    run(main)
