"""Active learning: rank unlabelled sentences by how unsure the CRF is about them (``ner-select``).

Three layers, each usable alone:

* :func:`sentence_uncertainty` — the maths, a function of ``(crf, emissions, mask)``: one uncertainty per
  sentence, batched, on the emissions' device, no host copy.
* :func:`uncertainties` — a ``Predictor``'s own encoding, length bucketing, collator, network and
  precision over token lists; one ``(B,)`` host copy per batch; results in input order.
* :func:`select` — the ``budget`` most uncertain indices, ties broken by pool order (deterministic).

Every strategy gives a number where higher means more uncertain, so one ranking serves all:

``least-confidence``
    ``1 - P(best path | x) ** (1 / n)`` for a sentence of ``n`` tokens, ``P = exp(viterbi score - log Z)``.
    The n-th root matters: ``P(best)`` is a product of ``n`` per-token factors, so it falls geometrically
    with length even where every token is equally sure; unnormalised, the ranking would mostly pick the
    longest sentences. The root is the per-token geometric mean, which compares sentences of any length.
``entropy``
    The mean over tokens of the entropy (nats) of each token's CRF marginal ``P(y_t = k | x)``:
    length-normalised by construction, from 0 to ``log K``.
``margin``
    ``1 - (P(best) - P(second best))`` from the 2-best Viterbi: a small margin between the two likeliest
    paths is high uncertainty. A sentence with one legal path has ``P(second) = 0``. Not length-normalised:
    a long sentence's paths all have small probabilities, so its margin is small too.
``random``
    A seeded uniform draw per sentence (``random.Random(seed)``), so its ranking is a uniform shuffle
    that the same seed reproduces; the model is not run.
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence

import torch
from torch import Tensor

from .model.crf import CRF
from .predict import Predictor
from .tagging import check_token_lists

__all__ = ["STRATEGIES", "sentence_uncertainty", "uncertainties", "select"]

STRATEGIES = ("least-confidence", "entropy", "margin", "random")


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def sentence_uncertainty(crf: CRF, emissions: Tensor, mask: Tensor, strategy: str,
                         temperature: float = 1.0) -> Tensor:
    """One uncertainty per sentence under ``crf`` (higher = more uncertain; see the module docstring).

    Args:
        crf: the CRF that decodes ``emissions`` (its constraints count: illegal paths have probability 0).
        emissions: ``(B, T, K)`` scores as ``Tagger.crf_scores`` gives them, any floating dtype.
        mask: ``(B, T)`` length mask, a prefix of ``True`` per row; padded positions are ignored.
        strategy: ``least-confidence``, ``entropy`` or ``margin`` (``random`` needs no model).
        temperature: every CRF score over it, as for the CRF's calibrated marginals (``Predictor.temperature``,
            from the model's calibration.json): the probabilities ranked are the ones predict.py reports.

    Returns:
        ``(B,)`` float32 on the emissions' device.
    """
    if strategy == "random" or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of least-confidence, entropy, margin, got {strategy!r}")
    lengths = mask.sum(1).float()  # (B,)
    if strategy == "entropy":
        marginals = crf.marginals(emissions, mask, temperature)  # (B, T, K), 0 at padding: 0 log 0 = 0 there
        return -torch.xlogy(marginals, marginals).sum(2).sum(1) / lengths
    log_z = crf.forward_backward(emissions, mask, temperature)[2]  # (B,)
    # A path's score is a sum of CRF scores, so over T it is the score / T; the best paths stay the best.
    if strategy == "least-confidence":
        best = crf.decode(emissions, mask)[1] / temperature  # (B,)
        # clamp: rounding can put the best path a hair above log Z, a probability above 1.
        return 1.0 - torch.exp((best - log_z).clamp(max=0.0) / lengths)
    scores = crf.nbest(emissions, mask, 2)[1] / temperature  # (B, 2); rank 2 is -inf where one path is legal
    p = torch.exp((scores - log_z.unsqueeze(1)).clamp(max=0.0))  # (B, 2); exp(-inf) = 0
    return 1.0 - (p[:, 0] - p[:, 1])


def uncertainties(predictor: Optional[Predictor], sentences: Sequence[Sequence[str]], strategy: str,
                  documents: Optional[Sequence[int]] = None, seed: int = 0) -> list[float]:
    """The uncertainty of each sentence (a token list) under ``predictor``'s model, in input order.

    ``documents``: a document number per sentence, as for ``Predictor.predict`` (a model trained with
    document context reads each sentence with its neighbours); None: one document. ``seed``: the draw of
    ``random``, which runs no model (``predictor`` may be None for it). An empty sentence has nothing to
    be unsure of: 0.0. The sentences are encoded, length-bucketed and collated exactly as
    ``Predictor.predict`` does it, under the predictor's precision and with its calibration temperature;
    each batch's ``(B,)`` result is the only thing copied to the host.
    """
    _check_strategy(strategy)
    check_token_lists(sentences)
    if documents is not None and len(documents) != len(sentences):
        raise ValueError(f"{len(documents)} document numbers for {len(sentences)} sentences")
    if strategy == "random":
        rng = random.Random(seed)
        return [rng.random() for _ in sentences]
    if predictor is None:
        raise ValueError(f"strategy {strategy!r} needs a Predictor")
    out = [0.0] * len(sentences)
    for indices, batch, emissions in predictor.emission_batches(sentences, documents):
        values = sentence_uncertainty(predictor.tagger.crf, emissions, batch.mask, strategy,
                                      predictor.temperature).cpu().tolist()
        for i, value in zip(indices, values):
            out[i] = value
    return out


def select(scores: Sequence[float], budget: int) -> list[int]:
    """Indices of the ``budget`` highest ``scores``, highest first; equal scores keep their input order
    (a stable sort), so the same scores always give the same selection. A budget above ``len(scores)``
    returns every index."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    return _ranked(scores)[:budget]


def select_tokens(scores: Sequence[float], lengths: Sequence[int], budget_tokens: int) -> list[int]:
    """Indices chosen for an annotation budget in tokens (what annotation costs), highest score first:
    down the ranking of ``select``, each sentence whose length fits what is left of the budget is taken
    and one that does not fit is passed over, so shorter, less uncertain sentences may fill the rest.
    Nothing left out fits the budget that remains; a budget of at least the pool's tokens takes it all."""
    if budget_tokens < 1:
        raise ValueError(f"budget_tokens must be at least 1, got {budget_tokens}")
    if len(lengths) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(lengths)} lengths")
    chosen, left = [], budget_tokens
    for i in _ranked(scores):
        if lengths[i] <= left:
            chosen.append(i)
            left -= lengths[i]
    return chosen


def _ranked(scores: Sequence[float]) -> list[int]:
    """Every index, highest score first, ties in input order (a stable sort)."""
    if any(math.isnan(s) for s in scores):
        raise ValueError("an uncertainty is NaN: the model produced non-finite scores")
    return sorted(range(len(scores)), key=lambda i: -scores[i])
