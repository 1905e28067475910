"""Max-plus decoding: the best path (Viterbi) and the k best paths, batched, backtraced on the device."""

from typing import Optional, Tuple

import torch
from torch import Tensor

from .scaled import batch_last

def viterbi(
    em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
) -> Tuple[Tensor, Tensor]:
    """Max-plus forward pass keeping only the score history; the backtrace recomputes the one
    argmax it needs per step (over ``K`` entries per sentence). Storing backpointers instead takes
    an arg-max over each step's whole ``K x K`` block: 1.3x slower at B=32, 1.7-3.3x from B=256
    (and uint8/int16 storage adds a conversion per step). Wide batches run batch-last,
    ``(T, K, B)``, narrow ones batch-first, ``(T, B, K)``, so reductions have a long contiguous side."""
    tag_dim = 0 if em.size(0) >= 16 else 1  # position of the tag axis in a step's (K, B) / (B, K)
    # No padding mask needed: whatever runs on past a sentence's end is never read back.
    if tag_dim == 0:  # step candidates (K_to, K_from, B)
        em, trans_t = em.permute(1, 2, 0), trans.t().unsqueeze(2)
    else:  # step candidates (B, K_to, K_from)
        em, trans_t = em.transpose(0, 1), trans.t()
    # One fresh buffer turns from emissions into the score history in place, and the step temporaries
    # are allocated once: a fresh megabyte-sized block per step costs its page faults every time (the
    # allocator hands large blocks back to the OS), which took longer than the maths (2x at K=37, B=256).
    scores = torch.empty(em.shape, dtype=em.dtype, device=em.device).copy_(em)
    trans_t = trans_t.contiguous()
    seq_len, num_tags = scores.size(0), scores.size(1 + tag_dim)
    steps = scores.unbind(0)  # per-step views, sliced once (indexing every step costs more than the maths)
    prev = steps if tag_dim == 0 else scores.unsqueeze(2).unbind(0)  # broadcastable against trans_t
    cand = scores.new_empty(torch.broadcast_shapes(prev[0].shape, trans_t.shape))
    best = torch.empty_like(steps[0])
    steps[0].add_(start.unsqueeze(1 - tag_dim))
    for t in range(1, seq_len):
        torch.add(prev[t - 1], trans_t, out=cand)
        torch.amax(cand, tag_dim + 1, out=best)
        steps[t].add_(best)
    last = mask.sum(1) - 1
    at_last = scores.gather(0, last.unsqueeze(tag_dim).unsqueeze(0).expand_as(scores[:1])).squeeze(0)
    best_score, best_last = (at_last + end.unsqueeze(1 - tag_dim)).max(tag_dim)  # (B,), (B,)
    # The backtrace arg-maxes (B, K) rows when K is small: max(0) over (K, B) with indices pays
    # a multithreading toll of a few microseconds per step, argmax over short rows does not.
    if tag_dim == 0 and num_tags <= 16:
        scores, tag_dim = scores.transpose(1, 2).contiguous(), 1
    # Pin the history to each sentence's final tag from its last position on (0 there, -inf elsewhere),
    # in place: the backtrace then starts at T-1 for everyone with no per-step select. The -inf comes
    # as a broadcast add of a (T, 1, B) row, 4x faster than a broadcast masked_fill over the history.
    after = (torch.arange(seq_len, device=em.device).unsqueeze(1) >= last).unsqueeze(1 + tag_dim)
    final = best_last.unsqueeze(tag_dim).unsqueeze(0).expand_as(after)  # (T, 1, B) | (T, B, 1)
    kept = scores.gather(1 + tag_dim, final).masked_fill_(after, 0.0)
    pin = torch.zeros(after.shape, dtype=scores.dtype, device=em.device).masked_fill_(after, float("-inf"))
    scores.add_(pin).scatter_(1 + tag_dim, final, kept)
    back = trans if tag_dim == 0 else trans.t().contiguous()
    # Each step's arg-max goes straight into its row of the (T, B) result: no list, no stack.
    paths = torch.empty(seq_len, best_last.size(0), dtype=torch.long, device=em.device)
    path_t, history = paths.unbind(0), scores.unbind(0)
    path_t[-1].copy_(best_last)
    values = torch.empty_like(best_score)
    for t in range(seq_len - 2, -1, -1):
        x = history[t] + back.index_select(1 - tag_dim, path_t[t + 1])
        if tag_dim == 0:
            torch.max(x, 0, out=(values, path_t[t]))
        else:
            torch.argmax(x, 1, out=path_t[t])
    return paths.t().masked_fill(~mask, 0), best_score


def _top(cand: Tensor, k: int, values: Tensor, indices: Tensor) -> None:
    """The ``k`` largest of ``cand`` ``(N, ...)`` along dim 0, best first, into ``values`` / ``indices``
    ``(k, ...)``. Small ``k`` over wide columns: ``k`` rounds of max-and-knock-out, 4-8x faster on CPU
    than ``topk`` along a strided dim (K=37, B=256); narrow columns (few tags x sentences) are faster
    with ``topk`` (K=300, B=4: the whole n-best 1.3x). Ties among ``-inf`` may repeat an index; such
    ranks are missing paths (score ``-inf``) and are never continued into finite ones."""
    if k > 4 or cand[0].numel() < 2048:
        torch.topk(cand, k, dim=0, out=(values, indices))
        return
    for rank in range(k):
        torch.max(cand, 0, keepdim=True, out=(values[rank:rank + 1], indices[rank:rank + 1]))
        if rank + 1 < k:
            cand.scatter_(0, indices[rank:rank + 1], float("-inf"))


def kbest(
    em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor, k: int,
    penalties: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """k-best Viterbi. The state ``(k, K, B)`` holds the k best prefix scores per tag, rank-major,
    so a flat index ``rank * K + tag`` names a prefix. Each step takes the top k of the ``k * K``
    candidates per tag (a transient ``(k*K, K, B)`` block) and keeps their flat indices as
    backpointers. Ranks start at ``-inf`` (no prefix): that is how short sentences get missing ranks.
    ``penalties`` (start, end, transitions) are the constraint penalties, to drop ranks that need a
    disallowed move."""
    em, valid = batch_last(em, mask)
    seq_len, num_tags, batch = em.shape
    em_t, valid_t = em.unbind(0), valid.unbind(0)
    trans4 = trans.view(1, num_tags, num_tags, 1)
    score = torch.full((k, num_tags, batch), float("-inf"), device=em.device)
    score[0] = start.unsqueeze(1) + em_t[0]
    history = torch.empty(max(seq_len - 1, 1), k, num_tags, batch, dtype=torch.long, device=em.device)
    history_t = history.unbind(0)
    best = torch.empty_like(score)
    cand = score.new_empty(k, num_tags, num_tags, batch)  # once: see viterbi on per-step page faults
    flat_cand = cand.view(k * num_tags, num_tags, batch)
    for t in range(1, seq_len):
        torch.add(score.unsqueeze(2), trans4, out=cand)
        _top(flat_cand, k, best, history_t[t - 1])
        score = torch.where(valid_t[t], best + em_t[t], score)  # frozen after each sentence's end
    final, flat = (score + end.unsqueeze(1)).view(k * num_tags, batch).topk(k, dim=0)  # (k, B)
    tags = [flat % num_tags]
    if seq_len > 1:
        # Past each sentence's end the state was frozen: make those backpointers the identity.
        identity = torch.arange(k * num_tags, device=em.device).unsqueeze(1)
        history = history.view(seq_len - 1, k * num_tags, batch)
        steps = torch.where(valid[1:].unsqueeze(1), history, identity).unbind(0)
        for t in range(seq_len - 2, -1, -1):
            flat = steps[t].gather(0, flat)
            tags.append(flat % num_tags)
    tags.reverse()
    paths = torch.stack(tags, dim=2).transpose(0, 1)  # (B, k, T); past each end it repeats the last tag
    return legal_ranks(paths, final.t(), mask, penalties)


def legal_ranks(
    paths: Tensor, scores: Tensor, mask: Tensor, penalties: Optional[Tuple[Tensor, Tensor, Tensor]]
) -> Tuple[Tensor, Tensor]:
    """The k-best result from raw ranks, shared by :func:`kbest` and the C k-best: ``paths`` ``(B, k, T)``
    (each path's last tag repeated past its sentence's end) and ``scores`` ``(B, k)``. Ranks scoring
    ``-inf`` and ranks that need a penalised move are missing (score ``-inf``, all-zero path), except
    rank 0, which is decode's path; positions past each end are 0."""
    missing = scores == float("-inf")
    if penalties is not None:  # ranks reached only through penalised moves are not legal paths
        start_penalty, end_penalty, transition_penalty = penalties
        pen = start_penalty[paths[:, :, 0]] + end_penalty[paths[:, :, -1]]
        step_pen = transition_penalty[paths[:, :, :-1], paths[:, :, 1:]]
        missing = missing | (pen + torch.where(mask[:, None, 1:], step_pen, 0.0).sum(2) < 0)
    missing[:, 0] = False  # rank 0 is decode's path (legal whenever the sentence has a legal path)
    paths = paths.masked_fill(missing.unsqueeze(2) | ~mask.unsqueeze(1), 0).contiguous()
    return paths, scores.masked_fill(missing, float("-inf")).contiguous()
