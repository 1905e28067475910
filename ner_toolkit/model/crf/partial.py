"""Partial-label likelihood: the NLL of a sentence whose tags are known at some positions only.

The loss is ``log Z - log Z_known``: ``Z`` sums the scores of all legal paths, ``Z_known`` those of the
legal paths that read as the known tags wherever a tag is known (Tsuboi et al., 2008; the "fuzzy CRF"
of Shang et al., 2018). Known tags are in the *user's* scheme, and a canonical label's reading can
depend on the label before it (IOB1), so the agreement is a per-position table over label pairs
(``data.schemes.reading_tables``) gathered into an additive penalty on each step's transitions.

Both partition functions run the same log-space recursion, so a sentence with no known tag has
``Z_known == Z`` bit for bit: loss 0 and gradient 0. With every tag known, ``Z_known`` is the score of the
one gold path and the loss equals the CRF's ordinary NLL (up to float rounding).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def log_partition(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor,
                  first_pen: Optional[Tensor] = None, pair_pen: Optional[Tensor] = None) -> Tensor:
    """log-sum-exp over paths ``(B,)``, with optional additive per-position penalties.

    ``em`` ``(B, T, K)`` float32, ``mask`` ``(B, T)`` bool (a prefix per row, first column set),
    ``start``/``end`` ``(K,)``, ``trans`` ``(K, K)`` (penalties of the scheme already added),
    ``first_pen`` ``(B, K)`` added at position 0, ``pair_pen`` ``(B, T, K, K)`` added to the transition
    into position ``t`` (index 0 unused)."""
    alpha = start.unsqueeze(0) + em[:, 0]  # (B, K)
    if first_pen is not None:
        alpha = alpha + first_pen
    for t in range(1, em.size(1)):
        step = alpha.unsqueeze(2) + trans.unsqueeze(0)  # (B, K_from, K_to)
        if pair_pen is not None:
            step = step + pair_pen[:, t]
        nxt = torch.logsumexp(step, dim=1) + em[:, t]
        alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
    return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)


def agreement_penalties(known: Tensor, first_table: Tensor, pair_table: Tensor, penalty: float
                        ) -> tuple[Tensor, Tensor]:
    """``known`` ``(B, T)`` user-tag ids, ``U`` (= ``first_table.size(0) - 1``) where unknown;
    ``first_table`` ``(U + 1, K)`` and ``pair_table`` ``(U + 1, K, K)`` bool with an all-True last row
    for "unknown". Returns ``(first_pen (B, K), pair_pen (B, T, K, K))``: 0 where a label (pair)
    reads as the known tag, ``penalty`` elsewhere."""
    zero = torch.zeros((), dtype=torch.float32, device=known.device)
    bad = torch.full((), penalty, dtype=torch.float32, device=known.device)
    first_pen = torch.where(first_table[known[:, 0]], zero, bad)
    pair_pen = torch.where(pair_table[known], zero, bad)
    return first_pen, pair_pen


def partial_nll(em: Tensor, mask: Tensor, known: Tensor, start: Tensor, end: Tensor, trans: Tensor,
                first_table: Tensor, pair_table: Tensor, penalty: float) -> Tensor:
    """Per-sentence ``log Z - log Z_known`` ``(B,)``; 0 exactly for a sentence with no known tag.
    Shapes as in :func:`log_partition` and :func:`agreement_penalties`."""
    first_pen, pair_pen = agreement_penalties(known, first_table, pair_table, penalty)
    return (log_partition(em, mask, start, end, trans)
            - log_partition(em, mask, start, end, trans, first_pen, pair_pen))


def with_unknown_row(table: Tensor) -> Tensor:
    """Append the all-True "unknown" row to a ``(U, ...)`` bool table."""
    return torch.cat([table, torch.ones_like(table[:1])], dim=0)
