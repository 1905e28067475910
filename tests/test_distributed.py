"""Data parallelism under torchrun: 2 gloo processes on the CPU match one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli, tiny_config_text

# No dropout: the two runs then compute the same function and differ only in float rounding.
SETTINGS = ["--set", "model.dropout=0.0", "--set", "training.checkpoint_every=0"]


def torchrun(script: str, args: list, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / script), *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(sample_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    config = d / "c.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=2), encoding="utf-8")
    single = run_cli("train.py", ["--config", config, "--output-dir", d / "single", *SETTINGS])
    assert single.returncode == 0, single.stderr
    multi = torchrun("train.py", ["--config", config, "--output-dir", d / "multi", *SETTINGS])
    assert multi.returncode == 0, multi.stderr
    return d


def test_two_gloo_processes_match_one_process(runs):
    lines = {name: [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("single", "multi")}
    assert len(lines["multi"]) == 2  # rank 0 alone logs
    for a, b in zip(lines["single"], lines["multi"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == b["lr"]
    single = load_file(runs / "single" / "model" / "model.safetensors")
    multi = load_file(runs / "multi" / "model" / "model.safetensors")
    assert single.keys() == multi.keys()
    for name in single:
        assert torch.allclose(single[name], multi[name], atol=1e-4), name


def test_sharded_prediction_is_merged_in_input_order(runs, sample_data, tmp_path):
    alone = run_cli("predict.py", ["--model", runs / "single", sample_data.dev, "--output", tmp_path / "one.txt",
                                   "--scores"])
    assert alone.returncode == 0, alone.stderr
    sharded = torchrun("predict.py", ["--model", runs / "single", sample_data.dev, "--output", tmp_path / "two.txt",
                                      "--scores"])
    assert sharded.returncode == 0, sharded.stderr
    assert (tmp_path / "two.txt").read_text(encoding="utf-8") == (tmp_path / "one.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "two.txt"]  # no stray temp files


def test_without_torchrun_nothing_is_initialised():
    from ner_toolkit import distributed

    assert not distributed.current().enabled
    assert "WORLD_SIZE" not in os.environ or os.environ["WORLD_SIZE"] == "1"
