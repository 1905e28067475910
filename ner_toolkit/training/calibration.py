"""Fit the temperature of the CRF's span confidences on labelled data: training's last step, on dev.

Temperature scaling divides every CRF score by one scalar ``T`` before the marginals and span
probabilities are computed (``CRF.span_log_probs(temperature=T)``): ``T > 1`` softens overconfident
probabilities, ``T < 1`` sharpens them, and the best path, so every predicted tag, stays the same. ``T``
minimises the binary cross-entropy of the predicted spans' probabilities against whether each is right
(the quantity a reliability diagram shows), by golden-section search over ``log T``. The network runs
once: emissions and paths are kept, and each trial ``T`` costs one forward-backward pass.

The model runs through ``model.inference.Inference`` (a ``Predictor`` is one, for the benchmark); what
the fit writes, ``calibration.json``, and the metrics it reports are ``ner_toolkit.calibration``'s, which
prediction and evaluation read without importing training.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ..calibration import MAX_TEMPERATURE, calibration_error, write_calibration
from ..data.schemes import to_spans
from ..model.inference import Inference

if TYPE_CHECKING:
    from .dataset import LabelledFile

log = logging.getLogger(__name__)

MIN_TEMPERATURE = 0.05  # the fit searches [MIN_TEMPERATURE, MAX_TEMPERATURE] over log T
MIN_SPANS = 20  # below this a fitted temperature would follow noise


@dataclass
class _Scored:
    """One batch, decoded once: what each trial temperature needs."""

    emissions: Tensor   # (B, T, K) float32
    mask: Tensor        # (B, T) bool
    paths: Tensor       # (B, T) best paths
    rows: Tensor        # (S,) batch row of each predicted span
    ends: Tensor        # (S,) its last position
    correct: Tensor     # (S,) bool: the same type and boundaries as a gold span


@dataclass
class Fit:
    temperature: float
    spans: int
    nll_before: float   # mean binary cross-entropy per predicted span at T = 1
    nll_after: float
    ece_before: float
    ece_after: float

    def record(self, source: str) -> dict:
        """calibration.json's content."""
        return {"temperature": round(self.temperature, 6), "fitted_on": source, "objective":
                "binary cross-entropy of predicted span probabilities", "spans": self.spans,
                "nll_before": round(self.nll_before, 6), "nll_after": round(self.nll_after, 6),
                "ece_before": round(self.ece_before, 6), "ece_after": round(self.ece_after, 6)}


def decode_once(model: Inference, sentences: Sequence[Sequence[str]], gold: Sequence[Sequence[str]],
                documents: Optional[Sequence[int]] = None) -> list[_Scored]:
    """Run the network over ``sentences`` once; keep emissions, best paths and which predicted spans are
    right against ``gold`` (tags in the training files' scheme, one list per sentence)."""
    labels, crf, device, out = model.labels, model.tagger.crf, model.device, []
    for indices, batch, emissions in model.emission_batches(sentences, documents):
        with torch.inference_mode():
            paths = crf.decode(emissions, batch.mask)[0]
        rows, ends, correct = [], [], []
        lengths = batch.mask.sum(1).tolist()
        for b, (i, path) in enumerate(zip(indices, paths.cpu().tolist())):
            truth = set(to_spans(gold[i], labels.output_scheme))
            for span in to_spans([labels.labels[k] for k in path[:lengths[b]]], labels.tag_scheme):
                rows.append(b)
                ends.append(span[2] - 1)
                correct.append(span in truth)
        out.append(_Scored(emissions, batch.mask, paths, torch.tensor(rows, dtype=torch.long, device=device),
                           torch.tensor(ends, dtype=torch.long, device=device),
                           torch.tensor(correct, dtype=torch.bool, device=device)))
    return out


def golden_section(f: Callable[[float], float], lo: float, hi: float, iterations: int = 30) -> float:
    """The minimiser of a unimodal ``f`` on ``[lo, hi]`` (golden-section search; the interval shrinks by
    0.618 per evaluation, so 30 evaluations narrow it ~1.9e-6 times)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def span_probabilities(model: Inference, scored: list[_Scored], temperature: float) -> tuple[Tensor, Tensor]:
    """``(p, correct)``, each ``(S,)`` over every predicted span of ``scored``, at ``temperature``."""
    crf, probs, correct = model.tagger.crf, [], []
    with torch.inference_mode():
        for s in scored:
            log_p = crf.span_log_probs(s.emissions, s.mask, s.paths, model.continues, temperature)[2]
            probs.append(log_p[s.rows, s.ends].exp())
            correct.append(s.correct)
    if not probs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(probs).cpu(), torch.cat(correct).cpu()


def span_nll(p: Tensor, correct: Tensor) -> float:
    """Mean binary cross-entropy of span probabilities ``p`` against ``correct``."""
    p = p.double().clamp(1e-12, 1 - 1e-12)
    return float(-(torch.where(correct, p.log(), (1 - p).log())).mean()) if p.numel() else 0.0


def fit_temperature(model: Inference, scored: list[_Scored]) -> Optional[Fit]:
    """The temperature in [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``] that minimises the span cross-entropy
    on ``scored``; None when it holds fewer than ``MIN_SPANS`` predicted spans, or all are right or all
    wrong (no temperature is then better than another: the fit would run to the end of the range)."""
    p1, correct = span_probabilities(model, scored, 1.0)
    if p1.numel() < MIN_SPANS or bool(correct.all()) or not bool(correct.any()):
        return None
    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    t = math.exp(golden_section(lambda log_t: span_nll(span_probabilities(model, scored, math.exp(log_t))[0],
                                                   correct), lo, hi))
    pt = span_probabilities(model, scored, t)[0]
    ok = correct.tolist()
    return Fit(t, p1.numel(), span_nll(p1, correct), span_nll(pt, correct),
               calibration_error(p1.tolist(), ok)["ece"], calibration_error(pt.tolist(), ok)["ece"])


def calibrate_model(model: Inference, dev: "LabelledFile", test: Optional["LabelledFile"],
                    model_dir: Union[str, os.PathLike]) -> Optional[dict]:
    """Training's last step: fit the temperature on ``dev``, write ``model_dir``/calibration.json (with
    the test ECE before and after when ``test`` is given), set it on ``model``, log one line.
    Returns calibration.json's content (None: not fitted)."""
    fit = fit_temperature(model, decode_once(model, dev.tokens, dev.gold, dev.documents))
    if fit is None:
        log.info(f"calibration: not fitted (dev {dev.path} gives fewer than {MIN_SPANS} predicted spans, or all "
                 f"are right or all wrong); confidences stay uncalibrated")
        return None
    record = fit.record(str(dev.path))
    line = (f"calibration: temperature {fit.temperature:.3f} fitted on dev; span ECE dev "
            f"{100 * fit.ece_before:.2f}% -> {100 * fit.ece_after:.2f}%")
    if test is not None:
        scored = decode_once(model, test.tokens, test.gold, test.documents)
        p1, correct = span_probabilities(model, scored, 1.0)
        pt = span_probabilities(model, scored, fit.temperature)[0]
        ok = correct.tolist()
        record["test_ece_before"] = round(calibration_error(p1.tolist(), ok)["ece"], 6)
        record["test_ece_after"] = round(calibration_error(pt.tolist(), ok)["ece"], 6)
        line += f", test {100 * record['test_ece_before']:.2f}% -> {100 * record['test_ece_after']:.2f}%"
    write_calibration(model_dir, record)
    model.temperature = fit.temperature
    log.info(line)
    return record
