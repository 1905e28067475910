"""How far span confidences are from probabilities, and the file that holds their temperature (torch-free).

A predicted span's confidence is its probability under the CRF (``CRF.span_log_probs``: that exact span,
from forward-backward). It is calibrated when, of the spans given confidence ~p, a fraction ~p is right.

* ``span_outcomes``: (confidence, correct) per predicted span, correct = the same type and boundaries as a
  gold span (the conlleval reading of both sides).
* ``calibration_error``: expected calibration error (ECE) over equal-width confidence bins, with the
  table a reliability diagram draws; ``reliability_diagram`` draws it (matplotlib).
* ``calibration.json`` in a model directory holds the fitted temperature; ``read_temperature`` checks it
  like every other file of a received directory (a bad value is a user error naming the file).
  ``MAX_TEMPERATURE`` bounds it here, in the fit (``training.calibration``) and in the CRF.

Prediction, the ONNX runtime and ``ner-evaluate`` read this module; the fit itself is training's
(``training/calibration.py``), which writes the file through ``write_calibration``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from .data.schemes import to_spans
from .errors import UserError

CALIBRATION = "calibration.json"
# Scores over T: a disallowed CRF step (a -1e4 penalty) still costs 100 nats at the largest T.
MAX_TEMPERATURE = 100.0
BINS = 10

__all__ = ["CALIBRATION", "MAX_TEMPERATURE", "span_outcomes", "calibration_error", "format_calibration",
           "reliability_diagram", "read_temperature", "write_calibration"]


def span_outcomes(gold: Sequence[Sequence[str]], spans: Sequence[Sequence[tuple[str, int, int, float]]],
                  scheme: str, unknown_tag: Optional[str] = None) -> tuple[list[float], list[bool]]:
    """``(confidences, correct)``, one entry per predicted span ``(label, start, end, confidence)`` of each
    sentence; ``gold``: that sentence's gold tags in ``scheme``. With ``unknown_tag`` a span that covers
    an unknown gold position is left out (as ``evaluate_spans`` leaves it out)."""
    from .data.schemes import tag_runs

    if len(gold) != len(spans):
        raise ValueError(f"gold has {len(gold)} sentences but there are spans for {len(spans)}")
    confidences, correct = [], []
    for tags, predicted in zip(gold, spans):
        if unknown_tag is None:
            truth = set(to_spans(tags, scheme))
            unknown: set[int] = set()
        else:
            truth = {(t, o + s, o + e) for o, run in tag_runs(tags, unknown_tag) for t, s, e in to_spans(run, scheme)}
            unknown = {i for i, t in enumerate(tags) if t == unknown_tag}
        for label, start, end, confidence in predicted:
            if unknown and any(start <= i < end for i in unknown):
                continue
            confidences.append(float(confidence))
            correct.append((label, start, end) in truth)
    return confidences, correct


def calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> dict:
    """Expected calibration error ``sum_b n_b / N * |accuracy_b - confidence_b|`` over ``bins`` equal-width
    bins of [0, 1] (a confidence of exactly 1 falls in the last), and the per-bin table: ``lo``, ``hi``,
    ``count``, mean ``confidence``, ``accuracy`` (None for an empty bin). Also the maximum calibration
    error over non-empty bins and the mean confidence against the accuracy overall."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")
    n = len(confidences)
    sums = [[0, 0.0, 0] for _ in range(bins)]  # count, confidence sum, correct count
    for p, ok in zip(confidences, correct):
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"a confidence must be a probability in [0, 1], got {p}")
        b = min(int(p * bins), bins - 1)
        sums[b][0] += 1
        sums[b][1] += p
        sums[b][2] += bool(ok)
    table, ece, mce = [], 0.0, 0.0
    for b, (count, conf, hits) in enumerate(sums):
        row = {"lo": b / bins, "hi": (b + 1) / bins, "count": count,
               "confidence": conf / count if count else None, "accuracy": hits / count if count else None}
        if count:
            gap = abs(row["accuracy"] - row["confidence"])
            ece += count / n * gap
            mce = max(mce, gap)
        table.append(row)
    return {"ece": ece, "mce": mce, "spans": n, "bins": table,
            "mean_confidence": sum(confidences) / n if n else 0.0,
            "accuracy": sum(map(bool, correct)) / n if n else 0.0}


def format_calibration(result: dict, temperature: Optional[float] = None) -> str:
    """The ECE line and the reliability table as text. ``temperature``: the one the confidences were computed
    at, when known; a scored file does not say it (predict.py applies the model's calibration.json), so
    without it none is claimed."""
    at = "" if temperature is None else f" (temperature {temperature:.3g})"
    lines = [f"calibration of span confidences{at}: ECE {100 * result['ece']:.2f}%, "
             f"MCE {100 * result['mce']:.2f}% over {result['spans']} predicted spans; mean confidence "
             f"{100 * result['mean_confidence']:.2f}%, correct {100 * result['accuracy']:.2f}%",
             f"{'confidence':>12}  {'spans':>7}  {'mean conf':>9}  {'correct':>8}"]
    for row in result["bins"]:
        if row["count"]:
            lines.append(f"{row['lo']:5.2f}-{row['hi']:4.2f}  {row['count']:7d}  {100 * row['confidence']:8.2f}%  "
                         f"{100 * row['accuracy']:7.2f}%")
    return "\n".join(lines)


def reliability_diagram(results: Sequence[tuple[str, dict]], path: Union[str, os.PathLike],
                        title: str = "span confidence") -> Optional[str]:
    """Draw each ``(name, calibration_error result)``: accuracy per confidence bin against the diagonal,
    and below it how many spans each bin holds. Returns a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no reliability diagram (pip install 'ner_toolkit[plot]')"
    from .atomic import atomic_write

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    width = 1.0 / max(len(results), 1)
    for i, (name, result) in enumerate(results):
        rows = [r for r in result["bins"] if r["count"]]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-",
                label=f"{name} (ECE {100 * result['ece']:.1f}%)")
        bin_width = rows[0]["hi"] - rows[0]["lo"] if rows else 0.1
        hist.bar([r["lo"] + bin_width * width * (i + 0.5) for r in rows], [r["count"] for r in rows],
                 width=bin_width * width, label=name)
    ax.set_ylabel("fraction of spans correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    hist.set_xlabel("span confidence (CRF probability of the exact span)")
    hist.set_ylabel("spans")
    if any(r["count"] for _, result in results for r in result["bins"]):
        hist.set_yscale("log")  # a model that predicted no span has no bar: a log axis of nothing raises
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return None


def read_temperature(directory: Union[str, os.PathLike]) -> float:
    """The temperature in ``directory``'s calibration.json; 1.0 when there is none (a model trained
    without dev, or before calibration existed)."""
    from .model.directory_checks import read_json_object

    path = Path(directory) / CALIBRATION
    if not path.exists():
        return 1.0
    raw = read_json_object(path)
    t = raw.get("temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 < t <= MAX_TEMPERATURE):
        raise UserError(f"damaged: `temperature` must be a number in (0, {MAX_TEMPERATURE:g}], got {t!r}; "
                        f"delete the file to use uncalibrated confidences, or re-train", path)
    return float(t)


def write_calibration(directory: Union[str, os.PathLike], record: dict) -> None:
    """Write ``record`` (``temperature`` and how it was fitted) as ``directory``/calibration.json, atomically."""
    from .atomic import atomic_write

    with atomic_write(Path(directory) / CALIBRATION) as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
