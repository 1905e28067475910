"""Posterior quantities from the scaled forward-backward passes (``scaled.forward_backward``): token
marginals and exact-segment log-probabilities. Shared by ``CRF.marginals``, ``CRF.span_log_probs`` and
``CRF.posteriors`` (both from one pass).

Inputs are batch-last, as the passes give them: ``a``, ``b``, ``em`` ``(T, K, B)``, ``b_shift``
``(T, 1, B)``, ``trans`` ``(K, K)``; ``mask`` ``(B, T)`` bool.
"""
from typing import Tuple

import torch
from torch import Tensor


def marginals_of(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """``P(y_t = k)`` ``(B, T, K)``: exp(alpha + beta - log Z), normalised per position (the scaling
    shifts are constant there); 0 at padded positions."""
    marg = torch.where(mask.t().unsqueeze(1), torch.softmax(a + b, dim=1), 0.0)
    return marg.permute(2, 0, 1).contiguous()


def segment_log_probs(a: Tensor, b: Tensor, b_shift: Tensor, em: Tensor, trans: Tensor, mask: Tensor,
                      paths: Tensor, continues: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(is_end, start, log_prob)``, all ``(B, T)``, as ``CRF.span_log_probs`` documents."""
    seq_len, num_tags, batch = a.shape
    b_shift = b_shift.squeeze(1)  # log_beta[t] - log_beta[t+1] = b[t] - b[t+1] + b_shift[t]
    valid = mask.t()
    y = paths.t().long().masked_fill(~valid, 0)  # (T, B)
    cont = continues.to(device=y.device, dtype=torch.bool)

    def at(x: Tensor) -> Tensor:  # (T, K, B) at the path's tags → (T, B)
        return x.gather(1, y.unsqueeze(1)).squeeze(1)

    # log P(y_t | y_{t-1}) along the path (the posterior is a Markov chain). Built from the scaled
    # passes, it never subtracts two large log-scores, and its running sum stays small for confident
    # paths, so differences of it are precise.
    b_y = at(b)
    # (T-1, B) tensors below are empty for one-token batches: pads are built as (1, B), never sliced
    # from them.
    step = trans[y[:-1], y[1:]] + at(em)[1:] + b_y[1:] - b_y[:-1] - b_shift[:-1]  # (T-1, B)
    csum = torch.cat([step.new_zeros(1, batch), step]).cumsum(0)  # (T, B)
    joined = cont[y[:-1], y[1:]] & valid[1:]  # (T-1, B): t continues t-1's segment
    starts_here = torch.cat([joined.new_ones(1, batch), ~joined])
    times = torch.arange(seq_len, device=y.device).unsqueeze(1).expand_as(y)
    seg_start = torch.where(starts_here, times, 0).cummax(dim=0).values  # (T, B)
    # log P(y[s..t] = path) = log P(y_s) + sum of log P(y_u | y_{u-1}) for u in s+1..t
    seg = at(torch.log_softmax(a + b, dim=1)).gather(0, seg_start) + csum - csum.gather(0, seg_start)
    # ... times P(y_{t+1} does not continue y_t | y_t): a logsumexp over those next tags.
    rows = y[:-1].reshape(-1)
    nxt = trans.index_select(0, rows).view(seq_len - 1, batch, num_tags)
    nxt = nxt + (em[1:] + b[1:]).transpose(1, 2)
    nxt = nxt.masked_fill(cont.index_select(0, rows).view_as(nxt), float("-inf"))
    ends = torch.where(valid[1:], torch.logsumexp(nxt, dim=2) - b_y[:-1] - b_shift[:-1], 0.0)
    log_prob = seg + torch.cat([ends, ends.new_zeros(1, batch)])
    is_end = valid & ~torch.cat([joined, joined.new_zeros(1, batch)])
    # A probability: float32 rounding puts near-certain spans a hair above log 1 (seen: 1.5e-5).
    log_prob = torch.where(is_end, log_prob.clamp(max=0.0), 0.0)
    seg_start = seg_start.masked_fill(~valid, 0)
    return is_end.t().contiguous(), seg_start.t().contiguous(), log_prob.t().contiguous()
