"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends exactly like the uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ner_toolkit.cli import train_main
from ner_toolkit.training.checkpoint import checkpoints

from conftest import REPO, assert_user_error, run_cli, tiny_config_text

SETTINGS = ["--set", "training.checkpoint_every=1", "--set", "training.keep_checkpoints=3",
            "--set", "training.epochs=4"]


@pytest.fixture(scope="module")
def resume_config(sample_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "c.yaml"
    path.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=4), encoding="utf-8")
    return path


def _epochs(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: r[k] for k in ("epoch", "loss", "dev", "lr", "best")} for r in records]


@pytest.mark.parametrize("options", [[], ["--set", "training.ema=0.9"]], ids=["plain", "weight-average"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(resume_config, tmp_path, options):
    settings = [*SETTINGS, *options]
    straight = tmp_path / "straight"
    proc = run_cli("train.py", ["--config", resume_config, "--output-dir", straight, *settings])
    assert proc.returncode == 0, proc.stderr

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--config", str(resume_config),
                              "--output-dir", str(killed), *settings], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Kill inside the second epoch (the sample slice has 8 batches an epoch): mid-epoch, after a checkpoint.
    while time.time() < deadline and child.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in checkpoints(killed / "checkpoints")]
        if steps and max(steps) >= 10:
            break
        time.sleep(0.01)
    assert child.poll() is None, "training finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(_epochs(killed)) < 4

    proc = run_cli("train.py", ["--config", resume_config, "--output-dir", killed, *settings, "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert "resuming at epoch" in proc.stderr
    assert _epochs(killed) == _epochs(straight)
    assert (killed / "model" / "model.safetensors").read_bytes() == (straight / "model" / "model.safetensors").read_bytes()
    assert json.loads((killed / "model" / "metrics.json").read_text()) == \
        json.loads((straight / "model" / "metrics.json").read_text())
    assert len(checkpoints(killed / "checkpoints")) <= 3  # only the newest are kept


def test_resume_refuses_a_changed_config(resume_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--config", str(resume_config), "--output-dir", str(out), *SETTINGS[:2],
                       "--set", "training.epochs=1"]) == 0
    capsys.readouterr()
    rc = train_main(["--config", str(resume_config), "--output-dir", str(out), *SETTINGS[:2], "--set", "training.epochs=1",
                     "--set", "training.lr.crf=0.5", "--set", "model.dropout=0.1", "--resume"])
    line = assert_user_error(rc, capsys.readouterr().err, "cannot resume")
    assert "training.lr.crf: 0.05 -> 0.5" in line and "model.dropout: 0.2 -> 0.1" in line


def test_resume_without_checkpoints(resume_config, tmp_path, capsys):
    rc = train_main(["--config", str(resume_config), "--output-dir", str(tmp_path / "new"), "--resume"])
    assert_user_error(rc, capsys.readouterr().err, "nothing to resume")


def test_a_checkpoint_from_before_an_option_existed_resumes_at_its_default():
    from ner_toolkit.config import Config, to_dict
    from ner_toolkit.training.checkpoint import config_differences

    current = to_dict(Config())
    older = to_dict(Config())
    del older["training"]["ema"]
    assert config_differences(older, current) == []
    current["training"]["ema"] = 0.999
    assert config_differences(older, current) == ["training.ema: None -> 0.999"]
