"""Resume is safe: changed data refuses, damaged checkpoints and torn metrics lines are survived,
and one output directory admits one run at a time (OUTPUT_DIR/.lock)."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ner_toolkit.cli import train_main
from ner_toolkit.config import load_config
from ner_toolkit.training import trainer
from ner_toolkit.training.checkpoint import checkpoints

from conftest import assert_user_error, tiny_config_text

# 60 sentences / batch 8 = 8 batches an epoch: checkpoints at steps 4, 8, 12, 16; the newest 3 kept.
SETTINGS = ["--set", "training.epochs=2", "--set", "training.checkpoint_every=4",
            "--set", "training.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def base(sample_data, tmp_path_factory) -> dict:
    """One finished 2-epoch run; each test resumes a copy of it (the data paths stay the same)."""
    d = tmp_path_factory.mktemp("safety")
    train, dev = d / "train.txt", d / "dev.txt"
    shutil.copy(sample_data.train, train)
    shutil.copy(sample_data.dev, dev)
    config = d / "c.yaml"
    config.write_text(tiny_config_text(train, dev, epochs=2), encoding="utf-8")
    out = d / "run"
    assert train_main(["--config", str(config), "--output-dir", str(out), *SETTINGS]) == 0
    return {"config": config, "out": out, "train": train, "dev": dev}


def _copy(base: dict, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base["out"], out)
    return out


def _resume(base: dict, out: Path) -> int:
    return train_main(["--config", str(base["config"]), "--output-dir", str(out), *SETTINGS, "--resume"])


@pytest.mark.parametrize("key", ["train", "dev"])
def test_resume_refuses_a_changed_data_file(base, tmp_path, capsys, key):
    out = _copy(base, tmp_path)
    path: Path = base[key]
    original = path.read_bytes()
    i = re.search(rb"[a-z]", original).start()  # a letter of a token: same size, different content
    changed = original[:i] + (b"q" if original[i:i + 1] != b"q" else b"z") + original[i + 1:]
    capsys.readouterr()
    try:
        path.write_bytes(changed)
        rc = _resume(base, out)
    finally:
        path.write_bytes(original)
    line = assert_user_error(rc, capsys.readouterr().err, f"data.{key} changed since the checkpoint", "sha256",
                             f"size {len(original)} -> {len(original)}")
    assert "without --resume" in line


@pytest.mark.parametrize("damage", ["zero-byte", "garbage", "truncated"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(base, tmp_path, capsys, damage):
    out = _copy(base, tmp_path)
    newest = checkpoints(out / "checkpoints")[-1]
    data = newest.read_bytes()
    newest.write_bytes({"zero-byte": b"", "garbage": os.urandom(4096), "truncated": data[:len(data) // 2]}[damage])
    capsys.readouterr()
    assert _resume(base, out) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ") and newest.name in line]
    assert len(warnings) == 1 and "skipping checkpoint" in warnings[0], err
    assert "resuming at epoch 2, batch 4" in err  # the checkpoint before it (step 12, mid epoch 2)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(base, tmp_path, capsys):
    out = _copy(base, tmp_path)
    metrics = out / "metrics.jsonl"
    with metrics.open("a", encoding="utf-8") as fh:
        fh.write('{"epoch": 3, "loss": 0.1')  # killed mid-append
    capsys.readouterr()
    assert _resume(base, out) == 0
    assert f"{metrics}:3: " in capsys.readouterr().err
    assert [json.loads(line)["epoch"] for line in metrics.read_text(encoding="utf-8").splitlines()] == [1, 2]


def test_a_torn_line_before_the_last_is_a_user_error(base, tmp_path, capsys):
    out = _copy(base, tmp_path)
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines()
    metrics.write_text(lines[0][:10] + "\n" + lines[1] + "\n", encoding="utf-8")
    capsys.readouterr()
    assert_user_error(_resume(base, out), capsys.readouterr().err, f"{metrics}:1:")


def test_a_live_lock_refuses_a_second_run_and_writes_nothing(base, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n", encoding="utf-8")
        capsys.readouterr()
        rc = train_main(["--config", str(base["config"]), "--output-dir", str(out), *SETTINGS])
    finally:
        holder.kill()
        holder.wait()
    assert_user_error(rc, capsys.readouterr().err, str(out / ".lock"), f"pid {holder.pid}", "--output-dir")
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_a_stale_lock_is_taken_over_and_removed_after_the_run(base, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n", encoding="utf-8")
    capsys.readouterr()
    rc = train_main(["--config", str(base["config"]), "--output-dir", str(out), "--set", "training.epochs=1",
                     "--set", "data.dev=null"])
    assert rc == 0
    assert "stale lock" in capsys.readouterr().err
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("fault", [KeyboardInterrupt, RuntimeError])
def test_the_lock_is_held_during_a_run_and_removed_when_it_fails(base, tmp_path, monkeypatch, fault):
    out = tmp_path / "run"
    seen = []

    def failing_prepare(config):
        lock = out / ".lock"
        seen.append(lock.read_text(encoding="utf-8").split()[0] if lock.exists() else None)
        raise fault("stopped")

    monkeypatch.setattr(trainer, "prepare", failing_prepare)
    with pytest.raises(fault):
        trainer.train(load_config(base["config"], (f"output_dir={out}",)))
    assert seen == [str(os.getpid())]
    assert not (out / ".lock").exists()
