"""The thread knob: ``--threads`` on every command that runs a model (0 = the free cores), one range check,
``training.num_threads`` null = the same automatic default, and the policy's arithmetic on fixed samples of
``/proc/stat`` (the real counters are shared with the rest of the suite, so the arithmetic is tested on
fixed numbers; benchmarks/bench_threads.py measures the policy on real contention)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ner_toolkit import threads
from ner_toolkit.cli import COMMANDS, command_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def keep_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _fake_clock(monkeypatch, cores: int, wall: float, all_busy: float, own: float) -> None:
    """``free_cores`` reads a window of ``wall`` seconds in which all processes used ``all_busy`` CPU
    seconds, this one ``own`` of them."""
    monkeypatch.setattr(threads, "cpu_cores", lambda: cores)
    start = (100.0, 5000.0, 2.0)
    samples = iter([(100.0 + wall, 5000.0 + all_busy, 2.0 + own)])
    monkeypatch.setattr(threads, "_sample", lambda: next(samples))
    monkeypatch.setattr(threads.time, "monotonic", lambda: 100.0 + wall)
    monkeypatch.setattr(threads, "_START", start)


@pytest.mark.parametrize("cores, wall, all_busy, own, free", [
    (2, 1.0, 1.0, 1.0, 2),   # only this process was busy: both cores are free
    (2, 1.0, 2.0, 1.0, 1),   # one other process kept a core busy
    (2, 1.0, 3.0, 1.0, 1),   # two others: never fewer than one thread
    (2, 2.0, 0.5, 0.4, 2),   # a sliver of other work rounds away
    (8, 2.0, 9.0, 1.0, 4),   # four busy others on eight cores
    (8, 1.0, 1.0, 1.0, 8),
    (4, 1.0, 30.0, 0.0, 1),  # more busy than cores (a VM's steal time): still one
])
def test_free_cores_is_the_cores_other_processes_leave(monkeypatch, cores, wall, all_busy, own, free):
    _fake_clock(monkeypatch, cores, wall, all_busy, own)
    assert threads.free_cores() == free


def test_free_cores_without_proc_stat_is_all_cores(monkeypatch):
    monkeypatch.setattr(threads, "cpu_cores", lambda: 3)
    monkeypatch.setattr(threads, "_busy_seconds", lambda: None)
    monkeypatch.setattr(threads, "_START", (threads.time.monotonic() - 1.0, None, 0.0))
    assert threads.free_cores() == 3


def test_a_short_window_is_topped_up(monkeypatch):
    """Called right after import, the window is too short to mean anything: it sleeps to MIN_WINDOW_S."""
    slept = []
    monkeypatch.setattr(threads.time, "sleep", slept.append)
    monkeypatch.setattr(threads, "_START", (threads.time.monotonic(), threads._busy_seconds(), 0.0))
    threads.free_cores()
    assert slept and 0 < slept[0] <= threads.MIN_WINDOW_S


def test_resolve_order_explicit_then_omp_num_threads_then_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve(3) == 3
    assert threads.resolve(None) == 5 and threads.resolve(0) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.resolve(None) == 2 and threads.resolve(7) == 7
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored
    assert threads.resolve(None) == 5


def test_apply_sets_torch_threads(monkeypatch, keep_threads):
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.apply(2) == 2 and torch.get_num_threads() == 2
    assert threads.apply(None) == 1 and torch.get_num_threads() == 1


# Every command that runs a model has the knob; evaluate runs none (it reads files).
MODEL_COMMANDS = ["train", "predict", "serve", "export", "select", "pretrain"]


def test_every_model_command_documents_threads():
    assert set(MODEL_COMMANDS) | {"evaluate"} == set(COMMANDS), "a new command: decide whether it runs a model"
    for name in MODEL_COMMANDS:
        argv = ["train", "--help"] if name == "pretrain" else ["--help"]
        proc = subprocess.run([sys.executable, "-m", "ner_toolkit", name, *argv], cwd=REPO, capture_output=True,
                              text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=120)
        assert proc.returncode == 0 and "--threads N" in proc.stdout, (name, proc.stderr[-500:])


@pytest.mark.parametrize("name, argv", [
    ("predict", ["--model", "m", "x.txt"]),
    ("select", ["--model", "m", "pool.txt", "--budget", "3", "--output", "o.txt"]),
    ("export", ["--model", "m", "--output", "o"]),
    ("serve", ["--model", "m"]),
    ("train", ["--config", "c.yaml"]),
])
@pytest.mark.parametrize("bad", ["-1", "5000"])
def test_bad_threads_is_one_line_before_anything_loads(name, argv, bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing named in argv exists: the check runs first
    if name in ("serve", "export"):
        pytest.importorskip("uvicorn" if name == "serve" else "onnx")
    rc = command_main(name)([*argv, "--threads", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --threads: --threads must be from 0"), err


def test_train_threads_is_training_num_threads(tmp_path):
    """``ner train --threads N`` is ``--set training.num_threads=N``; 0 is null (automatic)."""
    import argparse

    from ner_toolkit.cli.common import config_options, config_overrides

    p = argparse.ArgumentParser(parents=[config_options("x", "y", "z")])
    assert config_overrides(p.parse_args(["--config", "c", "--threads", "3"])) == ("training.num_threads=3",)
    assert config_overrides(p.parse_args(["--config", "c", "--threads", "0", "--output-dir", "d"])) == (
        "training.num_threads=null", "output_dir=d")
    assert config_overrides(p.parse_args(["--config", "c"])) == ()


def test_predict_runs_with_the_threads_asked_for(trained, sample_data, tmp_path, keep_threads, monkeypatch):
    """The knob reaches torch: predict --threads 2 tags with two threads, --threads 0 with the free cores."""
    from ner_toolkit.cli import predict_main

    seen = []
    real = threads.apply
    monkeypatch.setattr(threads, "apply", lambda n: seen.append(real(n)) or seen[-1])
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for flag, want in (("2", 2), ("0", 1)):
        out = tmp_path / f"out{flag}.txt"
        assert predict_main(["--model", str(trained.model_dir), "--threads", flag, "--output", str(out),
                             str(sample_data.test)]) == 0
        assert seen[-1] == want and torch.get_num_threads() == want and out.stat().st_size > 0


def test_serve_default_divides_the_free_cores(monkeypatch):
    from ner_toolkit.serve import worker

    monkeypatch.setattr(worker, "free_cores", lambda: 4)
    assert [worker.default_threads(w) for w in (1, 2, 3, 8)] == [4, 2, 1, 1]
