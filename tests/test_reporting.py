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
