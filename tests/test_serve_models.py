"""What ``ner-serve`` says is what it serves: a model process restarted after its model directory changed
describes the model it loaded (``/metadata``), a directory that no longer loads (gone, or labels.json
reordered against the weights) is a 503 naming why and an unhealthy ``/health``, never a 500 or tags
from scrambled labels, and the restarts behind that are bounded (backoff) and recover once the directory is
back. The batcher sets a model that is down aside and gives its batches to the others."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

from test_model_digest import reorder_labels
from test_serve import Server, request, sentences, stats

from conftest import assert_user_error


def kill_model(port: int) -> int:
    pid = stats(port)["workers"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def swap(live: Path, new: Path) -> None:
    """Replace the directory the server was started on (as a redeploy does), keeping its path."""
    old = live.with_name(live.name + ".old")
    live.rename(old)
    new.rename(live)
    shutil.rmtree(old)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_replaced_directory_is_what_metadata_describes_after_a_restart(trained, tmp_path: Path) -> None:
    live = tmp_path / "model"
    shutil.copytree(trained.model_dir, live)
    s = Server(live, "--threads", "1").wait_ready()
    try:
        status, before = request(s.port, "GET", "/metadata")
        assert status == 200 and before["config_sha256"] == sha256(live / "config.yaml")
        assert before["output_scheme"] == "IOB1"
        # Another model at the same path: its own config.yaml bytes, and tags written in BIO.
        new = tmp_path / "new"
        shutil.copytree(trained.model_dir, new)
        (new / "config.yaml").write_text("# redeployed\n" + (new / "config.yaml").read_text(encoding="utf-8"),
                                         encoding="utf-8")
        labels = json.loads((new / "labels.json").read_text(encoding="utf-8"))
        (new / "labels.json").write_text(json.dumps({**labels, "output_scheme": "BIO"}), encoding="utf-8")
        swap(live, new)
        kill_model(s.port)
        status, out = request(s.port, "POST", "/predict", {"tokens": sentences(8)})
        assert status == 200, out
        status, after = request(s.port, "GET", "/metadata")
        assert after["config_sha256"] == sha256(live / "config.yaml") != before["config_sha256"]
        assert after["output_scheme"] == "BIO"
        assert stats(s.port)["workers"][0]["restarts"] == 1
        assert any("another model" in line for line in s.lines), "\n".join(s.lines)
    finally:
        s.stop()


def test_a_directory_that_no_longer_loads_is_a_503_and_unhealthy_then_recovers(trained, tmp_path: Path) -> None:
    live = tmp_path / "model"
    shutil.copytree(trained.model_dir, live)
    s = Server(live, "--threads", "1").wait_ready()
    try:
        body = {"tokens": sentences(2)}
        # labels.json reordered against the weights: the new model process refuses to load it.
        reorder_labels(live)
        kill_model(s.port)
        status, out = request(s.port, "POST", "/predict", body)
        assert status == 503, out
        assert "labels.json" in out["error"] and str(live / "labels.json") in out["error"]
        until(lambda: request(s.port, "GET", "/health")[0] == 503, what="/health to fail")
        status, health = request(s.port, "GET", "/health")
        assert health["status"] == "unavailable" and "labels.json" in health["error"]

        # The directory gone altogether: still 503s, answered at once, and the tries back off.
        shutil.rmtree(live)
        restarts = stats(s.port)["workers"][0]["restarts"]
        started = time.monotonic()
        answers = []
        while time.monotonic() - started < 4:
            t0 = time.monotonic()
            answers.append((request(s.port, "POST", "/predict", body)[0], time.monotonic() - t0))
        assert {status for status, _ in answers} == {503}
        assert len(answers) >= 10 and sorted(t for _, t in answers)[len(answers) // 2] < 1.0
        assert stats(s.port)["workers"][0]["restarts"] - restarts <= 4, "a restart per request: no backoff"
        assert request(s.port, "GET", "/health")[0] == 503

        # Back: the next try (at most 30 s away) loads it, and the server answers again.
        shutil.copytree(trained.model_dir, live)
        until(lambda: request(s.port, "GET", "/health")[0] == 200, timeout=90, what="/health to recover")
        status, out = request(s.port, "POST", "/predict", body)
        assert status == 200 and len(out["tags"]) == 2, (status, out)
        assert not any("Traceback" in line for line in s.lines), "\n".join(s.lines)
    finally:
        s.stop()


def test_the_server_refuses_reordered_labels_before_listening(trained, tmp_path: Path) -> None:
    live = tmp_path / "model"
    shutil.copytree(trained.model_dir, live)
    reorder_labels(live)
    s = Server(live)
    rc = s.proc.wait(120)
    s.reader.join(10)
    assert_user_error(rc, "\n".join(s.lines), str(live / "labels.json"))
    assert not s.ready.is_set()


class _Model:
    """An AsyncModel for the batcher: answers "p-" + each document, or refuses as a model that is down."""

    def __init__(self, down: bool) -> None:
        self.down, self.calls = down, 0

    def submit(self, documents: list) -> "asyncio.Future[list]":
        from ner_toolkit.serve.batching import ModelUnavailable

        self.calls += 1
        future = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(ModelUnavailable("down for the test", 30.0))
        else:
            future.set_result([f"p-{d}" for d in documents])
        return future


def test_a_model_that_is_down_is_set_aside_and_its_batch_goes_to_another() -> None:
    from ner_toolkit.serve.batching import Batcher, ModelUnavailable

    async def main() -> None:
        down, up = _Model(down=True), _Model(down=False)
        batcher = Batcher([down, up], max_batch=4, max_wait=0)
        await batcher.start()
        got = await asyncio.gather(*(batcher.submit([f"d{i}"]) for i in range(12)))
        assert got == [[f"p-d{i}"] for i in range(12)]
        assert down.calls == 1 and batcher.unavailable() is None  # tried once, then left alone
        await batcher.close()

        alone = _Model(down=True)
        batcher = Batcher([alone], max_batch=4, max_wait=0)
        await batcher.start()
        for _ in range(3):  # the first finds it down; the others are refused without trying it
            with pytest.raises(ModelUnavailable) as info:
                await batcher.submit(["d"])
            assert info.value.reason == "down for the test" and 29 < info.value.retry_after <= 30
        assert alone.calls == 1
        await asyncio.wait_for(batcher.close(), 5)  # a drain does not wait for a model set aside

    asyncio.run(main())
