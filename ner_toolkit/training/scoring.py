"""Scoring the model in training: ``score`` (span P/R/F1 on a labelled file; dev after every epoch) and
``finish``, the end of a run on rank 0: curves, the best epoch's weights reloaded, the temperature fitted
on dev, dev and test scored, metrics.json and the summary line.

The model runs through ``model.inference.Inference``, the tagging a ``Predictor`` does, without
importing prediction.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..evaluate import evaluate_spans, format_report
from ..model.compiled import compile_seconds
from ..model.directory import WEIGHTS, LabelInfo, write_metrics
from ..model.inference import Inference
from .calibration import calibrate_model
from .checkpoint import RunState
from .dataset import LabelledFile
from .phases import PHASES
from .reporting import plot_curves

if TYPE_CHECKING:
    from .trainer import Setup

log = logging.getLogger(__name__)


def score(model: Inference, data: LabelledFile, labels: LabelInfo) -> dict:
    """Span P/R/F1 of the model on a labelled file (gold in the training files' scheme)."""
    pred = model.predict(data.tokens, data.documents)
    return evaluate_spans(data.gold, pred, scheme=labels.output_scheme)


def short_scores(result: dict) -> dict:
    """Micro P/R/F1 of an ``evaluate_spans`` result, rounded: what a metrics.jsonl line holds."""
    return {k: round(result["micro"][k], 6) for k in ("precision", "recall", "f1")}


def finish(setup: Setup, state: RunState, out_dir: Path, started: float,
           announce: Callable[[str], None] = print) -> dict:
    """Rank 0 at the end: curves, the saved (best) weights scored on dev and test, the summary line (to
    ``announce``: the command's stdout, a log record for the Python API)."""
    from safetensors.torch import load_file

    with PHASES("training curves (matplotlib)"):
        note = plot_curves(out_dir / "metrics.jsonl", out_dir / "training_curves.png")
    if note:
        log.info(f"note: {note}")
    model_dir = out_dir / "model"
    dev, test = setup.dev, setup.test
    summary: dict[str, Any] = {"best_epoch": state.best_epoch, "dev_f1": state.best_f1 if dev else None,
                               "test_f1": None, "model_dir": str(model_dir), "seconds": None}
    # Score exactly the weights that were saved (the best epoch), without a second copy of the model.
    setup.tagger.load_state_dict(load_file(str(model_dir / WEIGHTS), device=str(setup.device)))
    metrics: dict[str, Any] = {"epoch": state.best_epoch, "dev": None, "test": None}
    if dev is not None and setup.config.training.calibrate and setup.config.model.decoder == "crf":
        with PHASES("temperature fit on dev"):
            metrics["calibration"] = calibrate_model(setup.predictor, dev, test, model_dir)
    for key, data in (("dev", dev), ("test", test)):
        if data is not None:
            with PHASES("final dev and test scoring"):
                result = score(setup.predictor, data, setup.labels)
            metrics[key] = result
            log.info(f"{key} ({data.path}):\n{format_report(result)}")
    if test is not None:
        summary["test_f1"] = metrics["test"]["micro"]["f1"]
    write_metrics(model_dir, metrics, setup.card)
    summary["seconds"] = round(time.time() - started, 1)
    parts = [f"best epoch {state.best_epoch}"]
    if dev:
        parts.append(f"dev F1 {100 * state.best_f1:.2f}")
    if test:
        parts.append(f"test F1 {100 * summary['test_f1']:.2f}")
    compiling = compile_seconds(setup.tagger)
    if setup.config.training.compile:
        summary["compile_seconds"] = round(compiling, 1)
        parts.append(f"compiling took {compiling:.0f} s of the run")
    announce(f"done: {', '.join(parts)}; model in {model_dir} ({summary['seconds']:.0f} s)")
    return summary
