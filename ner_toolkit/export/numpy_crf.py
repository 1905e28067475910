"""Constrained CRF inference on numpy arrays, torch-free: Viterbi and k-best (the C library of
``model/crf/viterbi_native.c`` when it can be built, else numpy), marginals and exact-span
log-probabilities (forward-backward in float64 log space; the definitions of ``model.crf.CRF``).

Shapes: ``B`` sentences, ``T`` positions, ``K`` tags; ``mask`` is a (B, T) length mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import native_build
from ..data.labels import DISALLOWED_PENALTY


@dataclass
class CRFParams:
    """float32 scores with the constraint penalties added (as ``CRF._scoring_params``), and the penalties."""

    start: np.ndarray        # (K,)
    end: np.ndarray          # (K,)
    trans: np.ndarray        # (K, K) [from, to]
    penalties: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def from_arrays(cls, start: np.ndarray, end: np.ndarray, trans: np.ndarray,
                    allowed: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> "CRFParams":
        start, end, trans = (np.asarray(x, dtype=np.float32) for x in (start, end, trans))
        if allowed is None:
            return cls(start, end, trans, None)
        pen = tuple(np.where(np.asarray(a, dtype=bool), np.float32(0.0), np.float32(DISALLOWED_PENALTY))
                    .astype(np.float32) for a in allowed)
        return cls(start + pen[0], end + pen[1], trans + pen[2], pen)  # type: ignore[arg-type]

    @property
    def num_tags(self) -> int:
        return int(self.start.shape[0])

    def scaled(self, temperature: float) -> "CRFParams":
        """Every score divided by ``temperature`` (``CRF``'s calibration; emissions are divided by the caller)."""
        if temperature == 1.0:
            return self
        pen = None if self.penalties is None else tuple(p / temperature for p in self.penalties)
        return CRFParams(self.start / temperature, self.end / temperature, self.trans / temperature,
                         pen)  # type: ignore[arg-type]


def _check(em: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    em = np.ascontiguousarray(em, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=bool)
    if em.ndim != 3 or mask.shape != em.shape[:2]:
        raise ValueError(f"emissions (B, T, K) and mask (B, T) expected, got {em.shape} and {mask.shape}")
    if em.shape[1] < 1 or not mask[:, 0].all():
        raise ValueError("every sentence needs at least one token (mask[:, 0] must be True)")
    return em, mask


# ----------------------------------------------------------------------------------------- Viterbi
def viterbi(em: np.ndarray, mask: np.ndarray, crf: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    """Best paths (B, T) int64 (0 past each length) and their scores (B,) float32."""
    em, mask = _check(em, mask)
    lib = native_build.library("numpy")
    if lib is not None:
        return native_build.viterbi(lib, em, mask, crf.start, crf.end, crf.trans)
    return _viterbi_numpy(em, mask, crf)


def _viterbi_numpy(em: np.ndarray, mask: np.ndarray, crf: CRFParams) -> tuple[np.ndarray, np.ndarray]:
    batch, seq_len, num_tags = em.shape
    lengths = mask.sum(1)
    score = crf.start[None, :] + em[:, 0]                      # (B, K)
    back = np.zeros((max(seq_len - 1, 1), batch, num_tags), dtype=np.int64)
    for t in range(1, seq_len):
        cand = score[:, :, None] + crf.trans[None]              # (B, from, to)
        back[t - 1] = cand.argmax(1)
        nxt = cand.max(1) + em[:, t]
        score = np.where((t < lengths)[:, None], nxt, score)
    final = score + crf.end[None, :]
    best = final.argmax(1)
    scores = final[np.arange(batch), best].astype(np.float32)
    paths = np.zeros((batch, seq_len), dtype=np.int64)
    for b in range(batch):
        n, tag = int(lengths[b]), int(best[b])
        paths[b, n - 1] = tag
        for t in range(n - 2, -1, -1):
            tag = int(back[t, b, tag])
            paths[b, t] = tag
    return paths, scores


# ------------------------------------------------------------------------------------------ k-best
def nbest(em: np.ndarray, mask: np.ndarray, crf: CRFParams, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best distinct legal paths: paths (B, k, T) int64, scores (B, k) float32, best first;
    missing ranks score ``-inf`` with an all-zero path (as ``CRF.nbest``)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    em, mask = _check(em, mask)
    lib = native_build.library("numpy")
    if lib is not None:
        paths, scores = native_build.kbest(lib, em, mask, crf.start, crf.end, crf.trans, k)
    else:
        paths, scores = _kbest_numpy(em, mask, crf, k)
    return legal_ranks(paths, scores, mask, crf.penalties)


def _kbest_numpy(em: np.ndarray, mask: np.ndarray, crf: CRFParams, k: int) -> tuple[np.ndarray, np.ndarray]:
    batch, seq_len, num_tags = em.shape
    score = np.full((batch, k, num_tags), -np.inf, dtype=np.float32)
    score[:, 0] = crf.start[None] + em[:, 0]
    history = np.zeros((max(seq_len - 1, 1), batch, k, num_tags), dtype=np.int64)
    rows = np.arange(batch)[:, None, None]
    for t in range(1, seq_len):
        cand = (score[:, :, :, None] + crf.trans[None, None]).reshape(batch, k * num_tags, num_tags)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :k]            # (B, k, K_to)
        best = cand[rows, order, np.arange(num_tags)[None, None, :]]
        history[t - 1] = order
        score = np.where(mask[:, t][:, None, None], best + em[:, t][:, None, :], score)
    final = (score + crf.end[None, None, :]).reshape(batch, k * num_tags)
    flat = np.argsort(-final, axis=1, kind="stable")[:, :k]                # (B, k)
    scores = np.take_along_axis(final, flat, 1).astype(np.float32)
    paths = np.zeros((batch, k, seq_len), dtype=np.int64)
    paths[:, :, seq_len - 1] = flat % num_tags
    for t in range(seq_len - 2, -1, -1):
        prev = np.take_along_axis(history[t].reshape(batch, k * num_tags), flat, 1)
        flat = np.where(mask[:, t + 1][:, None], prev, flat)
        paths[:, :, t] = flat % num_tags
    return paths, scores


def legal_ranks(paths: np.ndarray, scores: np.ndarray, mask: np.ndarray,
                penalties: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``model.crf.viterbi.legal_ranks`` on numpy arrays."""
    missing = scores == -np.inf
    if penalties is not None:
        start_p, end_p, trans_p = penalties
        pen = start_p[paths[:, :, 0]] + end_p[paths[:, :, -1]]
        step = trans_p[paths[:, :, :-1], paths[:, :, 1:]]
        missing = missing | (pen + np.where(mask[:, None, 1:], step, np.float32(0.0)).sum(2) < 0)
    missing[:, 0] = False
    paths = np.where(missing[:, :, None] | ~mask[:, None, :], 0, paths)
    return np.ascontiguousarray(paths, dtype=np.int64), np.where(missing, np.float32(-np.inf), scores).astype(np.float32)


# ----------------------------------------------------------------------------- forward-backward
def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def forward_backward(em: np.ndarray, mask: np.ndarray, crf: CRFParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``(log_alpha (B,T,K), log_beta (B,T,K), log_z (B,))`` with ``CRF.forward_backward``'s meaning
    (alpha includes emission t, beta excludes it and includes the end score); padding unspecified."""
    em, mask = _check(em, mask)
    em = em.astype(np.float64)
    start, end, trans = (x.astype(np.float64) for x in (crf.start, crf.end, crf.trans))
    batch, seq_len, _ = em.shape
    lengths = mask.sum(1)
    alpha = np.empty_like(em)
    beta = np.empty_like(em)
    alpha[:, 0] = start + em[:, 0]
    for t in range(1, seq_len):
        nxt = _logsumexp(alpha[:, t - 1, :, None] + trans[None], 1) + em[:, t]
        alpha[:, t] = np.where((t < lengths)[:, None], nxt, alpha[:, t - 1])
    beta[:, seq_len - 1] = end
    for t in range(seq_len - 2, -1, -1):
        nxt = _logsumexp(trans[None] + (em[:, t + 1] + beta[:, t + 1])[:, None, :], 2)
        beta[:, t] = np.where((t < lengths - 1)[:, None], nxt, end[None])
    last = alpha[np.arange(batch), lengths - 1]
    return alpha, beta, _logsumexp(last + end[None], 1)


def marginals(em: np.ndarray, mask: np.ndarray, crf: CRFParams) -> np.ndarray:
    """Posterior tag probabilities (B, T, K) float64; padded positions 0."""
    alpha, beta, log_z = forward_backward(em, mask, crf)
    marg = np.exp(alpha + beta - log_z[:, None, None])
    marg /= marg.sum(2, keepdims=True)
    return np.where(np.asarray(mask, dtype=bool)[:, :, None], marg, 0.0)


def span_log_probs(em: np.ndarray, mask: np.ndarray, crf: CRFParams, paths: np.ndarray,
                   continues: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``CRF.span_log_probs`` on numpy: ``(is_end, start, log_prob)``, all (B, T): the segments of
    ``paths`` (split where ``not continues[prev, cur]``) and, at each segment's end, ``log P(y[s..t] =
    paths[s..t] and y[t+1] does not continue it)``."""
    em, mask = _check(em, mask)
    alpha, beta, log_z = forward_backward(em, mask, crf)
    em64, trans = em.astype(np.float64), crf.trans.astype(np.float64)
    cont = np.asarray(continues, dtype=bool)
    batch, seq_len, _ = em.shape
    is_end = np.zeros((batch, seq_len), dtype=bool)
    starts = np.zeros((batch, seq_len), dtype=np.int64)
    log_prob = np.zeros((batch, seq_len), dtype=np.float64)
    lengths = mask.sum(1)
    for b in range(batch):
        n = int(lengths[b])
        y = np.asarray(paths[b, :n], dtype=np.int64)
        step = np.zeros(n)
        if n > 1:
            step[1:] = trans[y[:-1], y[1:]] + em64[b, np.arange(1, n), y[1:]]
        csum = np.cumsum(step)
        joined = np.zeros(n, dtype=bool)
        if n > 1:
            joined[1:] = cont[y[:-1], y[1:]]
        seg_start = np.maximum.accumulate(np.where(~joined, np.arange(n), 0))
        ends = np.append(~joined[1:], True)
        starts[b, :n] = seg_start
        is_end[b, :n] = ends
        for t in np.flatnonzero(ends):
            s = int(seg_start[t])
            value = alpha[b, s, y[s]] + csum[t] - csum[s] - log_z[b]
            if t == n - 1:
                value += beta[b, t, y[t]]
            else:
                free = ~cont[y[t]]
                value += _logsumexp((trans[y[t]] + em64[b, t + 1] + beta[b, t + 1])[free], 0) if free.any() else -np.inf
            log_prob[b, t] = min(value, 0.0)  # a probability, whatever the rounding (as CRF.span_log_probs)
    return is_end, starts, log_prob
