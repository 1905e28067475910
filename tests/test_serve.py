"""``ner-serve``: the real server in a subprocess on loopback, spoken to with the standard library.

One server process (module fixture) serves most tests; SIGTERM and start-up failures get their own.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytest

from conftest import REPO, SAMPLE, assert_user_error

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

READY = re.compile(r"^serving (.+) on http://127\.0\.0\.1:(\d+) \(max batch (\d+), max wait ([\d.]+) ms\)$")
LIMITS = {"max_body_bytes": 20_000, "max_texts": 8, "max_tokens": 300}


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Server:
    """``ner-serve`` in a subprocess; ``port`` is the one its ready line names."""

    def __init__(self, model: Path, *args: str) -> None:
        cmd = [sys.executable, "-c", "from ner_toolkit.cli import serve_console; serve_console()",
               "--model", str(model), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = READY.match(self.lines[-1])
            if match and not self.ready.is_set():
                self.port = int(match.group(2))
                self.ready.set()

    def wait_ready(self, timeout: float = 60) -> "Server":
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("server did not start:\n" + "\n".join(self.lines))
        assert request(self.port, "GET", "/health") == (200, {"status": "ok"})
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def request(port: int, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, parsed JSON body); ``body``: bytes as they are, anything else as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        raw = response.read()
        assert response.getheader("content-type") == "application/json", raw
        return response.status, json.loads(raw)
    finally:
        conn.close()


def predict(port: int, body: Any) -> dict:
    status, out = request(port, "POST", "/predict", body)
    assert status == 200, out
    return out


def concurrently(port: int, bodies: Sequence[Any]) -> list[tuple[int, Any]]:
    """POST every body at once (one thread each, released together); results in order."""
    results: list[Optional[tuple[int, Any]]] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        barrier.wait(10)
        results[i] = request(port, "POST", "/predict", bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results), "a request did not finish"
    return results  # type: ignore[return-value]


def sentences(n: int, skip: int = 0) -> list[list[str]]:
    """Token lists of the shipped sample test set (-DOCSTART- dropped)."""
    blocks = (SAMPLE / "test.txt").read_text(encoding="utf-8").split("\n\n")
    out = [[line.split()[0] for line in b.strip().splitlines()] for b in blocks
           if b.strip() and not b.startswith("-DOCSTART-")]
    return out[skip:skip + n]


def assert_same_entities(served: list[list[dict]], expected: list[list[Any]]) -> None:
    """Labels and offsets exactly; scores within 1e-5 (batch-mates change padding, not results)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        want = [e if isinstance(e, dict) else e.to_dict() for e in want]
        strip = [{k: v for k, v in e.items() if k != "score"} for e in got]
        assert strip == [{k: v for k, v in e.items() if k != "score"} for e in want]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want], abs=1e-5)


@pytest.fixture(scope="module")
def server(trained) -> Iterator[Server]:
    limits = [f"--{k.replace('_', '-')}={v}" for k, v in LIMITS.items()]
    s = Server(trained.model_dir, "--max-wait-ms", "20", "--max-batch", "64", *limits).wait_ready()
    yield s
    s.stop()


def stats(port: int) -> dict:
    status, out = request(port, "GET", "/stats")
    assert status == 200
    return out


# --- answers ------------------------------------------------------------------------------------------------

def test_texts_match_the_in_process_predictor(server: Server, predictor) -> None:
    texts = [" ".join(s) for s in sentences(14)] + [
        "Peter Blackburn (of the European Union) met U.S. officials in Bonn on Friday.", "", "   "]
    served: list = []
    for i in range(0, len(texts), LIMITS["max_texts"]):
        served += predict(server.port, {"texts": texts[i:i + LIMITS["max_texts"]]})["entities"]
    expected = predictor.predict_text(texts)
    assert any(expected), "the tiny model found no entity: the comparison would prove nothing"
    assert_same_entities(served, expected)
    for text, found in zip(texts, served):
        assert all(text[e["start"]:e["end"]] == e["text"] for e in found)


def test_the_body_can_choose_the_word_tokenizer(server: Server, predictor) -> None:
    text = "Peter Blackburn's visit (to Germany), said U.S. officials."
    conll = predict(server.port, {"texts": [text]})["entities"]
    spaced = predict(server.port, {"texts": [text], "tokenizer": "whitespace"})["entities"]
    assert_same_entities(conll, [predictor.predict_text(text)])
    assert_same_entities(spaced, [predictor.predict_text(text, tokenizer="whitespace")])
    # The two tokenisers split this text differently, so a server ignoring "tokenizer" would fail one.
    assert predictor.word_tokenizer == "conll"
    assert predictor.predict_text(text) != predictor.predict_text(text, tokenizer="whitespace")
    chars = predict(server.port, {"texts": ["Germany"], "tokenizer": "chars"})["entities"]
    assert_same_entities(chars, [predictor.predict_text("Germany", tokenizer="chars")])


def test_tokens_input_gives_tags_and_entities_in_the_joined_text(server: Server, predictor) -> None:
    from ner_toolkit.data.text import Document
    from ner_toolkit.predict import entities

    batch = sentences(6, skip=3) + [[]]
    out = predict(server.port, {"tokens": batch})
    assert out["tags"] == predictor.predict(batch)
    documents = [Document.from_tokens(s) for s in batch]
    expected = [entities(d, p) for d, p in zip(documents, predictor.predict_documents(documents))]
    assert any(expected)
    assert_same_entities(out["entities"], expected)
    for tokens, found in zip(batch, out["entities"]):
        for e in found:
            assert e["text"] == " ".join(tokens[e["token_start"]:e["token_end"]]) == " ".join(tokens)[e["start"]:e["end"]]
    assert predict(server.port, {"tokens": []}) == {"entities": [], "tags": []}


def test_concurrent_requests_share_batches_with_the_same_results(server: Server) -> None:
    batch = sentences(24, skip=20)
    alone = [predict(server.port, {"tokens": [s]}) for s in batch]  # one at a time: batches of one
    before = stats(server.port)
    together = concurrently(server.port, [{"tokens": [s]} for s in batch])
    after = stats(server.port)
    assert [status for status, _ in together] == [200] * len(batch)
    assert after["requests"] - before["requests"] == len(batch)
    assert after["batches"] - before["batches"] < len(batch)
    assert after["max_batch_requests"] > 1 and after["merged_requests"] > before["merged_requests"]
    for (_, got), want in zip(together, alone):
        assert got["tags"] == want["tags"]
        assert_same_entities(got["entities"], want["entities"])


def test_health_and_metadata(server: Server, trained, predictor) -> None:
    import hashlib

    status, meta = request(server.port, "GET", "/metadata")
    assert status == 200
    assert meta["model_dir"] == str(trained.model_dir.resolve())
    assert meta["config_sha256"] == hashlib.sha256((trained.model_dir / "config.yaml").read_bytes()).hexdigest()
    info = predictor.labels
    assert (meta["labels"], meta["types"]) == (list(info.labels), sorted(info.types))
    assert (meta["tag_scheme"], meta["output_scheme"]) == (info.tag_scheme.name, info.output_scheme.name)
    assert meta["word_tokenizer"] == predictor.word_tokenizer
    assert meta["limits"] == LIMITS
    assert meta["batching"] == {"max_batch": 64, "max_wait_ms": 20.0, "batch_size": 64, "workers": 1}


# --- refusals -----------------------------------------------------------------------------------------------

BAD = [
    (b'{"texts": ["unterminated', 400, "malformed JSON"),
    (b"\xff\xfe{", 400, ""),
    (b"", 400, "empty body"),
    (b"[" * 5000 + b"]" * 5000, 400, "JSON"),
    (b"x" * (LIMITS["max_body_bytes"] + 1), 413, "--max-body-bytes"),
    ({"texts": ["a"] * (LIMITS["max_texts"] + 1)}, 413, "--max-texts"),
    ({"tokens": [["w"] * 200, ["w"] * 101]}, 413, "--max-tokens"),
    ({"texts": [" ".join(["w"] * (LIMITS["max_tokens"] + 1))]}, 413, "--max-tokens"),
    ([["Peter"]], 422, "object"),
    ({"text": ["Peter"]}, 422, "'text'"),
    ({}, 422, "exactly one"),
    ({"texts": ["a"], "tokens": [["a"]]}, 422, "exactly one"),
    ({"texts": "Peter Blackburn"}, 422, "not a list"),
    ({"texts": [["Peter"]]}, 422, '"tokens"'),
    ({"texts": ["a"], "tokenizer": "spacy"}, 422, "tokenizer"),
    ({"tokens": [["a"]], "tokenizer": "conll"}, 422, "tokenizer"),
    ({"tokens": ["Peter Blackburn"]}, 422, "list of strings"),
    ({"tokens": [["Peter", 3]]}, 422, "list of strings"),
    ({"tokens": [["Peter Blackburn"]]}, 422, "whitespace"),
    ({"tokens": [["Peter", ""]]}, 422, "empty"),
    # Valid JSON that no text can be, and JSON Python will not decode (issue 28): one check for all input.
    (b'{"texts": ["Peter \\ud800 Blackburn"]}', 422, "surrogate"),
    (b'{"tokens": [["Peter", "\\udfff"]]}', 422, "surrogate"),
    (b'{"texts": ["a"], "n": ' + b"9" * 5000 + b"}", 400, "digits"),
]


@pytest.mark.parametrize("body,status,needle", BAD, ids=[f"{s}-{i}" for i, (_, s, _) in enumerate(BAD)])
def test_bad_requests_get_a_json_error(server: Server, body: Any, status: int, needle: str) -> None:
    got, out = request(server.port, "POST", "/predict", body)
    assert got == status, out
    assert set(out) == {"error"} and needle in out["error"] and "Traceback" not in out["error"]


def test_unknown_routes_and_methods_get_json_errors(server: Server) -> None:
    status, out = request(server.port, "GET", "/nowhere")
    assert status == 404 and "/nowhere" in out["error"]
    status, out = request(server.port, "GET", "/predict")
    assert status == 405 and "error" in out
    assert request(server.port, "GET", "/health") == (200, {"status": "ok"})  # still serving


@contextlib.contextmanager
def in_thread(app: Any) -> Iterator[int]:
    """``app`` served by uvicorn in a thread of this process on a loopback port (yielded), stopped after."""
    import uvicorn

    from ner_toolkit.cli.serve import bind

    sock = bind("127.0.0.1", 0)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not uv.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        uv.should_exit = True
        thread.join(20)
        sock.close()


def test_internal_errors_are_json_500_and_spare_their_batch_mates(predictor, capfd) -> None:
    """A model call that raises: 500 with a JSON body (the traceback goes to the log), and the requests
    batched with it are retried alone and answered."""
    from ner_toolkit.serve.app import Limits, create_app

    def predict_documents(documents):
        if any("boom" in d.text for d in documents):
            raise RuntimeError("boom in the model")
        return predictor.predict_documents(documents)

    stub = types.SimpleNamespace(labels=predictor.labels, word_tokenizer=predictor.word_tokenizer,
                                 batch_size=predictor.batch_size, device=predictor.device,
                                 precision=predictor.precision, predict_documents=predict_documents)
    # max batch 2, a long wait: the two requests below share one model call.
    app = create_app(stub, max_batch=2, max_wait_ms=2000, limits=Limits())
    with in_thread(app) as port:
        (bad_status, bad), (good_status, good) = concurrently(port, [{"texts": ["boom"]},
                                                                      {"texts": ["Peter Blackburn"]}])
        assert bad_status == 500 and set(bad) == {"error"} and "Traceback" not in bad["error"]
        assert good_status == 200
        assert_same_entities(good["entities"], [predictor.predict_text("Peter Blackburn")])
        assert app.state.batcher.stats.failed_batches >= 1
    assert "RuntimeError: boom in the model" in capfd.readouterr().err  # logged with its traceback


# --- process life -------------------------------------------------------------------------------------------

def test_sigterm_finishes_requests_in_flight_then_exits_0(trained) -> None:
    # A long wait keeps the requests queued in the batcher when the signal arrives.
    s = Server(trained.model_dir, "--max-wait-ms", "1000").wait_ready()
    try:
        batch = sentences(6)
        results: list = []
        threads = [threading.Thread(target=lambda b=b: results.append(request(s.port, "POST", "/predict",
                                                                              {"tokens": [b]})))
                   for b in batch]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while stats(s.port)["queued"] < len(batch):
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert s.proc.wait(30) == 0, "\n".join(s.lines)
        assert sorted(status for status, _ in results) == [200] * len(batch)
        assert all(len(out["tags"][0]) == len(b) for (_, out), b in zip(sorted(results, key=lambda r: len(
            r[1]["tags"][0])), sorted(batch, key=len)))
        assert not any("Traceback" in line for line in s.lines), "\n".join(s.lines)
    finally:
        s.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_workers_tag_side_by_side_survive_a_killed_model_and_exit_with_the_server(trained, predictor) -> None:
    """--workers 2: two model processes, each batch on either, with the in-process results; a model
    process killed under load is replaced and its batch tagged again (no request fails); SIGTERM leaves
    no model process behind."""
    s = Server(trained.model_dir, "--workers", "2", "--max-wait-ms", "5").wait_ready()
    try:
        workers = stats(s.port)["workers"]
        assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
        assert all(w["restarts"] == 0 and _alive(w["pid"]) for w in workers)
        batch = sentences(24)
        want = [predict(s.port, {"tokens": [b]}) for b in batch[:4]]  # one by one
        results = concurrently(s.port, [{"tokens": [b]} for b in batch])
        assert [status for status, _ in results] == [200] * len(batch)
        for (_, got), expected in zip(results, want):
            assert got["tags"] == expected["tags"]
        for (_, got), b in zip(results, batch):
            assert got["tags"] == [predictor.predict([b])[0]]

        victim = workers[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        results = concurrently(s.port, [{"tokens": [b]} for b in batch])
        assert [status for status, _ in results] == [200] * len(batch), results
        assert all(got["tags"] == [predictor.predict([b])[0]] for (_, got), b in zip(results, batch))
        for _ in range(4):  # both models get work: the dead one is found and replaced
            concurrently(s.port, [{"tokens": [b]} for b in batch])
        after = stats(s.port)["workers"]
        assert after[1]["pid"] == workers[1]["pid"] and after[1]["restarts"] == 0
        assert after[0]["restarts"] == 1 and after[0]["pid"] not in (victim, None) and _alive(after[0]["pid"])
        assert any("died" in line for line in s.lines), "\n".join(s.lines)

        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0, "\n".join(s.lines)
        deadline = time.monotonic() + 10
        while any(_alive(w["pid"]) for w in after) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w["pid"]) for w in after), "a model process outlived the server"
    finally:
        s.stop()


def test_a_bad_model_directory_exits_2_before_listening(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("{}", encoding="utf-8")
    s = Server(tmp_path)
    rc = s.proc.wait(60)
    s.reader.join(10)  # every line read
    assert_user_error(rc, "\n".join(s.lines))
    assert not s.ready.is_set()


def test_a_port_in_use_exits_2(trained) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-c", "from ner_toolkit.cli import serve_console; serve_console()",
               "--model", str(trained.model_dir), "--port", str(port)]
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, "--port", "in use")


@pytest.mark.parametrize("flags, flag", [
    (["--workers", "0"], "--workers"),
    (["--threads", "-1"], "--threads"),
    (["--max-batch", "0"], "--max-batch"),
    (["--max-wait-ms", "-1"], "--max-wait-ms"),
    (["--port", "70000"], "--port"),
    (["--max-header-bytes", "0"], "--max-header-bytes"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--header-timeout", "0"], "--header-timeout"),
    (["--body-timeout", "nan"], "--body-timeout"),
    (["--graceful-timeout", "100000"], "--graceful-timeout"),
])
def test_bad_settings_are_refused_before_the_model_loads(tmp_path: Path, flags: list, flag: str) -> None:
    from ner_toolkit.cli.serve import run
    from ner_toolkit.errors import UserError

    with pytest.raises(UserError) as info:
        run(["--model", str(tmp_path / "no-such-model"), *flags])  # the model is never looked at
    assert info.value.path == flag and str(info.value).startswith(f"error: {flag}: ")
