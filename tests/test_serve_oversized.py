"""``ner-serve`` answers before the request body is read (413, 404) and still reaches the client.

The server reads and drops the rest of the body after such an answer, up to ``LINGER_FACTOR`` times the body
limit or ``LINGER_SECONDS``, then closes (``serve.linger``). The bodies here are megabytes: on loopback the
kernel's socket buffers hold about 4 MB, so a smaller body reaches them in full even from a server that
never reads it, and its 413 gets through by luck.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from test_serve import Server, request, sentences

from ner_toolkit.serve.linger import LINGER_FACTOR, LINGER_SECONDS

LIMIT = 1 << 20  # --max-body-bytes (the default, set here so that a new default does not change these tests)
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(trained) -> Iterator[Server]:
    s = Server(trained.model_dir, "--max-body-bytes", str(LIMIT)).wait_ready()
    yield s
    s.stop()


def body_of(size: int) -> bytes:
    """A JSON request of ``size`` bytes: one text of ``size // 2`` words (as the issue's client sent)."""
    head, tail = b'{"texts": ["', b'"]}'
    words = b"x " * ((size - len(head) - len(tail)) // 2)
    return head + words + b"x" * (size - len(head) - len(tail) - len(words)) + tail


def post_urllib(port: int, path: str, body: bytes) -> tuple[int, dict, dict]:
    """(status, JSON answer, headers) through ``urllib.request`` (which sends ``Connection: close``)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def post_http_client(port: int, path: str, body: bytes, chunked: bool, close: bool = False) -> tuple[int, dict, dict]:
    """The same through ``http.client``, with ``Content-Length`` or chunked encoding; keep-alive unless
    ``close``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = iter([body[i:i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]) if chunked else body
        headers = {"Content-Type": "application/json", **({"Connection": "close"} if close else {})}
        conn.request("POST", path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), dict(response.headers)
    finally:
        conn.close()


CLIENTS = {
    "urllib": lambda port, path, body: post_urllib(port, path, body),
    "http.client": lambda port, path, body: post_http_client(port, path, body, chunked=False),
    "http.client-chunked": lambda port, path, body: post_http_client(port, path, body, chunked=True),
    "http.client-close": lambda port, path, body: post_http_client(port, path, body, chunked=False, close=True),
}


@pytest.mark.parametrize("factor", [2, 4, 16])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_an_oversized_body_gets_its_413(server: Server, client: str, factor: int) -> None:
    status, answer, headers = CLIENTS[client](server.port, "/predict", body_of(factor * LIMIT))
    assert status == 413, answer
    assert set(answer) == {"error"} and "--max-body-bytes" in answer["error"]
    assert headers.get("content-type") == "application/json"
    assert headers.get("connection") == "close"  # the rest of a body may have been cut off: no reuse


def test_any_early_answer_drains_the_body(server: Server) -> None:
    """Not a special case of /predict's 413: a 404 sent without reading the body reaches the client too."""
    status, answer, _ = post_urllib(server.port, "/nowhere", body_of(4 * LIMIT))
    assert status == 404 and "/nowhere" in answer["error"]


def _headers(chunked: bool) -> bytes:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (1 << 40)
    return b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_that_never_stops_sending_is_cut_off(server: Server, chunked: bool) -> None:
    """A keep-alive client sending as fast as it can, far past the bound: the server closes the
    connection after about ``LINGER_FACTOR`` times the limit (plus what the socket buffers hold)."""
    piece = b"x " * (MiB // 2)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    cap = LINGER_FACTOR * LIMIT + 256 * MiB  # how far this client goes before it calls the server unbounded
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_headers(chunked))
        with pytest.raises(ConnectionError):
            while sent < cap:
                sock.sendall(frame)
                sent += len(frame)
    elapsed = time.monotonic() - started
    assert sent <= LINGER_FACTOR * LIMIT + 32 * MiB, f"cut off only after {sent / MiB:.0f} MiB"
    assert elapsed < LINGER_SECONDS + 10, f"cut off only after {elapsed:.1f} s"
    assert request(server.port, "GET", "/health") == (200, {"status": "ok"})


def test_a_client_that_trickles_is_cut_off_at_the_deadline(server: Server) -> None:
    """A keep-alive client sending a little at a time, never finishing: it reads the 413 while it sends,
    and the server closes once ``LINGER_SECONDS`` have passed."""
    answer, closed_after = b"", None
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_headers(chunked=False))
        sock.settimeout(0.05)
        started = time.monotonic()
        while closed_after is None and time.monotonic() - started < LINGER_SECONDS + 15:
            try:
                sock.sendall(b"x" * 1024)
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionError:
                data = b""
            if not data:
                closed_after = time.monotonic() - started
            answer += data
    assert closed_after is not None, "the server never closed the connection"
    assert closed_after < LINGER_SECONDS + 5
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower(), answer
    assert "--max-body-bytes" in json.loads(payload)["error"]


def test_the_server_serves_on_afterwards(server: Server) -> None:
    """After the refusals above, a normal request on a fresh connection is answered and kept alive."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(2):  # twice on one connection: a body read in full leaves it open
            conn.request("POST", "/predict", body=json.dumps({"tokens": sentences(2)}).encode(),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            out = json.loads(response.read())
            assert response.status == 200 and len(out["tags"]) == 2, out
            assert response.getheader("connection") is None
    finally:
        conn.close()
