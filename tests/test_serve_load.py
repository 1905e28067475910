"""``ner-serve`` under load: concurrent clients with mixed request sizes up to the body limit, CPU hogs beside
the server, and no answer may be a 5xx or come from a restarted model process; SIGTERM drains what is in flight, and
the process exits by the ``--graceful-timeout`` deadline even while a client keeps its body unfinished.

A slow pipe is not a dead model: a batch larger than the socket buffer, or a reply that arrives in parts, must
be read and written whole, never taken for a death (restart, retry, 500). Loopback only, bounded in requests
and time.
"""
from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from test_serve import Server, request, sentences, stats
from test_serve_limits import post_head, read_answer

CLIENTS = 16
REQUESTS = 300  # in all, shared by the clients
LIMIT = 1 << 20  # --max-body-bytes (the default)
HOGS = 2  # busy processes beside the server: the server and its model process get time slices, not cores


def body(rng: random.Random, pool: list[list[str]]) -> bytes:
    """A request of one of three sizes: a few short texts (most), a batch of sentences whose answer spans
    many socket buffers, or sentences of long words just under the body limit (a batch larger than any
    socket buffer on its way to the model process)."""
    kind = rng.random()
    if kind < 0.75:
        picked = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
        return json.dumps({"texts": [" ".join(s) for s in picked]}).encode()
    if kind < 0.93:
        return json.dumps({"tokens": [rng.choice(pool) for _ in range(rng.randint(32, 128))]}).encode()
    sentence = ["x" * 199] * 100  # 20,302 bytes of JSON
    out = json.dumps({"tokens": [sentence] * rng.randint(LIMIT // 4 // 20_302, LIMIT // 20_302)}).encode()
    assert len(out) <= LIMIT
    return out


@pytest.fixture
def hogs() -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def test_mixed_load_beside_cpu_hogs_no_5xx_no_restart(trained, hogs) -> None:
    # One torch thread: on a machine this busy, OpenMP threads spinning at their barriers cost the model
    # process ten times the CPU (and the test ten times the time).
    s = Server(trained.model_dir, "--max-body-bytes", str(LIMIT), "--max-wait-ms", "2", "--threads", "1").wait_ready()
    try:
        pool = sentences(200)
        rng = random.Random(28)
        bodies = [body(rng, pool) for _ in range(REQUESTS)]
        results: list[tuple[int, float, str]] = []  # (status or -1, seconds, error)
        lock = threading.Lock()
        queue = iter(range(REQUESTS))
        started = time.monotonic()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            while True:
                with lock:
                    i = next(queue, None)
                if i is None or time.monotonic() - started > 120:
                    break
                t0 = time.monotonic()
                try:
                    conn.request("POST", "/predict", body=bodies[i], headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    status, error = response.status, ""
                    if response.getheader("connection") == "close":
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
                except (OSError, http.client.HTTPException) as exc:
                    status, error = -1, f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
                with lock:
                    results.append((status, time.monotonic() - t0, error))
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        elapsed = time.monotonic() - started
        workers = stats(s.port)["workers"]
        restarts = sum(w["restarts"] for w in workers)
        latencies = sorted(seconds for _, seconds, _ in results)
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
        server_errors = sum(1 for status, _, _ in results if status >= 500)
        failures = [error for status, _, error in results if status < 0]
        summary = (f"load: {len(results)} requests in {elapsed:.1f} s, {server_errors} 5xx, {len(failures)} "
                   f"client errors, {restarts} restarts, p99 {p99:.2f} s, statuses "
                   f"{sorted({status for status, _, _ in results})}")
        print(summary)
        assert len(results) == REQUESTS, summary
        assert server_errors == 0 and not failures and restarts == 0, summary + "\n" + "\n".join(
            failures[:5] + s.lines[-20:])
        assert {status for status, _, _ in results} == {200}, summary
        assert not any("Traceback" in line or "died" in line for line in s.lines), "\n".join(s.lines)
    finally:
        s.stop()


def test_sigterm_drains_then_exits_by_the_deadline_with_a_body_unfinished(trained) -> None:
    grace = 2.0
    # A long batch wait keeps the request below queued in the batcher when the signal comes.
    s = Server(trained.model_dir, "--threads", "1", "--graceful-timeout", str(grace), "--max-wait-ms", "1000"
               ).wait_ready()
    stuck = socket.create_connection(("127.0.0.1", s.port))
    try:
        stuck.sendall(post_head(1000) + b'{"texts": [')  # and never the rest
        results: list = []
        queued = threading.Thread(target=lambda: results.append(
            request(s.port, "POST", "/predict", {"tokens": sentences(4)})))
        queued.start()
        deadline = time.monotonic() + 10
        while stats(s.port)["queued"] < 1:
            assert time.monotonic() < deadline, "the request never queued"
            time.sleep(0.02)
        signalled = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(grace + 30)
        took = time.monotonic() - signalled
        queued.join(10)
        assert rc == 0, "\n".join(s.lines)
        assert took < grace + 8, f"exited {took:.1f} s after SIGTERM"
        assert len(results) == 1 and results[0][0] == 200 and len(results[0][1]["tags"]) == 4
        status, _, answer = read_answer(stuck, 5)  # cut off by the deadline: told so, not left hanging
        assert status == 503 and "shutting down" in answer["error"]
        assert not any("Traceback" in line for line in s.lines), "\n".join(s.lines)
    finally:
        stuck.close()
        s.stop()
