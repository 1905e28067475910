"""Training curves, TensorBoard scalars and multi-seed summaries."""
from __future__ import annotations

import builtins
import json
import statistics

import pytest

from ner_toolkit.cli import train_main
from ner_toolkit.training.reporting import plot_curves, seed_summary

from conftest import tiny_config_text


def test_training_writes_curves(trained):
    png = trained.output_dir / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_without_matplotlib_is_a_note(trained, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    note = plot_curves(trained.output_dir / "metrics.jsonl", tmp_path / "curves.png")
    assert "matplotlib is not installed" in note
    assert not (tmp_path / "curves.png").exists()


def test_seed_summary_mean_and_std():
    runs = {1: {"dev_f1": 0.5, "test_f1": 0.4}, 2: {"dev_f1": 0.7, "test_f1": 0.6}, 3: {"dev_f1": 0.6, "test_f1": None}}
    summary = seed_summary(runs)
    assert summary["seeds"] == [1, 2, 3]
    assert summary["dev_f1"]["mean"] == pytest.approx(0.6)
    assert summary["dev_f1"]["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.6]))
    assert summary["test_f1"]["values"] == [0.4, 0.6]


def test_multi_seed_run_and_tensorboard(sample_data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, sample_data.test, epochs=1), encoding="utf-8")
    out = tmp_path / "seeds"
    assert train_main(["--config", str(config), "--output-dir", str(out), "--seeds", "3,4",
                       "--set", "training.tensorboard=true"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["seeds"] == [3, 4]
    per_seed = [json.loads((out / f"seed-{s}" / "model" / "metrics.json").read_text())["test"]["micro"]["f1"]
                for s in (3, 4)]
    assert summary["test_f1"]["values"] == per_seed
    assert summary["test_f1"]["mean"] == pytest.approx(statistics.fmean(per_seed))
    for seed in (3, 4):
        saved = (out / f"seed-{seed}" / "model" / "config.yaml").read_text(encoding="utf-8")
        assert f"seed: {seed}" in saved
        assert any((out / f"seed-{seed}" / "tensorboard").glob("events.out.tfevents.*"))
    assert "± " in capsys.readouterr().out


def test_bad_seeds_argument(tiny_config, tmp_path, capsys):
    assert train_main(["--config", str(tiny_config), "--output-dir", str(tmp_path / "x"), "--seeds", "1,a"]) == 2
    assert capsys.readouterr().err.startswith("error: --seeds")


def test_profile_startup_accounts_for_the_wall_time(sample_data, tmp_path):
    """--profile-startup: a table at the first training step (before epoch 1 ends) and one at the end,
    whose phases add up to the wall time; the run's files are all there (train.py ends with os._exit)."""
    import re

    from conftest import run_cli

    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=2), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--output-dir", tmp_path / "out", "--profile-startup"])
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    first = err.index("profile: first training step at ")
    assert first < err.index("epoch 1: loss")
    final = err[err.index("wall time by phase:"):]
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (.+?) \| (-?[\d.]+) \|", final, re.M)}
    phases = {k: v for k, v in rows.items() if not k.startswith("**") and not k.endswith("(at)")}
    for name in ("start-up (interpreter, imports)", "read and check the data",
                 "encoder and tokenizer (from_pretrained)", "subword encoding of the training set",
                 "training epochs", "dev scoring after each epoch", "saving the best model", "checkpoints",
                 "training curves (matplotlib)", "final dev and test scoring", "other"):
        assert name in phases, name
    assert phases["training epochs"] > 0 and phases["start-up (interpreter, imports)"] > 0
    assert sum(phases.values()) == pytest.approx(rows["**wall so far**"], abs=0.02 * len(phases))
    assert rows["**wall outside the epochs**"] == pytest.approx(
        rows["**wall so far**"] - phases["training epochs"], abs=0.02)
    assert 0 < rows["first training step (at)"] < rows["**wall so far**"]
    for name in ("model/model.safetensors", "model/README.md", "metrics.jsonl", "training_curves.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_exit_process_joins_threads_runs_atexit_and_flushes(tmp_path):
    """What train.py / predict.py end with: the exit code kept, other threads finished, atexit handlers
    run, buffered output written, in that order, without the interpreter's teardown."""
    import subprocess
    import sys

    from conftest import REPO

    code = ("import atexit, sys, threading, time\n"
            "from ner_toolkit.cli import exit_process\n"
            "atexit.register(lambda: print('atexit ran'))\n"
            "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
            "sys.stdout.write('buffered ')\n"
            "exit_process(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == ["buffered", "thread", "done", "atexit", "ran"]
