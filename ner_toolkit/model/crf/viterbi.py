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
    an arg-max over each step's whole ``K x K`` block: as fast at B=32, 1.5-4x slower from B=256
    (and uint8/int16 storage adds a conversion per step). Wide batches run batch-last,
    ``(T, K, B)``, narrow ones batch-first, ``(T, B, K)``, so reductions have a long contiguous side."""
    tag_dim = 0 if em.size(0) >= 16 else 1  # position of the tag axis in a step's (K, B) / (B, K)
    # No padding mask needed: whatever runs on past a sentence's end is never read back.
    if tag_dim == 0:  # step candidates (K_to, K_from, B)
        em, trans_t = em.permute(1, 2, 0), trans.t().unsqueeze(2)
    else:  # step candidates (B, K_to, K_from)
        em, trans_t = em.transpose(0, 1), trans.t()
    em, trans_t = em.contiguous(), trans_t.contiguous()
    seq_len, num_tags = em.size(0), em.size(1 + tag_dim)
    em_t = em.unbind(0)  # per-step views, sliced once (indexing every step costs more than the maths)
    scores = torch.empty_like(em)  # written in place (see _forward_scaled)
    steps = scores.unbind(0)
    prev = steps if tag_dim == 0 else scores.unsqueeze(2).unbind(0)  # broadcastable against trans_t
    torch.add(start.unsqueeze(1 - tag_dim), em_t[0], out=steps[0])
    for t in range(1, seq_len):
        torch.add((prev[t - 1] + trans_t).amax(tag_dim + 1), em_t[t], out=steps[t])
    last = mask.sum(1) - 1
    at_last = scores.gather(0, last.unsqueeze(tag_dim).unsqueeze(0).expand_as(scores[:1])).squeeze(0)
    best_score, best_last = (at_last + end.unsqueeze(1 - tag_dim)).max(tag_dim)  # (B,), (B,)
    # From each sentence's last position on, pin the history to its final tag (0 there, -inf
    # elsewhere): the backtrace can then start at T-1 for everyone without a per-step select.
    tags = torch.arange(num_tags, device=em.device).unsqueeze(1 - tag_dim)
    pin = torch.where(tags == best_last.unsqueeze(tag_dim), 0.0, float("-inf"))
    after = torch.arange(seq_len, device=em.device).unsqueeze(1) >= last  # (T, B)
    pinned = torch.where(after.unsqueeze(1 + tag_dim), pin, scores)
    # The backtrace arg-maxes (B, K) rows when K is small: max(0) over (K, B) with indices pays
    # a multithreading toll of a few microseconds per step, argmax over short rows does not.
    if tag_dim == 0 and num_tags <= 16:
        pinned, tag_dim = pinned.transpose(1, 2).contiguous(), 1
    back = trans if tag_dim == 0 else trans.t().contiguous()
    cur = best_last
    path = [cur]
    for row in pinned.unbind(0)[-2::-1]:  # t = T-2 .. 0
        x = row + back.index_select(1 - tag_dim, cur)
        cur = x.max(0).indices if tag_dim == 0 else x.argmax(1)
        path.append(cur)
    path.reverse()
    return torch.stack(path, dim=1).masked_fill_(~mask, 0), best_score


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
    for t in range(1, seq_len):
        cand = (score.unsqueeze(2) + trans4).view(k * num_tags, num_tags, batch)
        torch.topk(cand, k, dim=0, out=(best, history_t[t - 1]))  # sorted, best first
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
    paths = torch.stack(tags, dim=2)  # (k, B, T); past each end it repeats the last tag
    missing = final == float("-inf")
    if penalties is not None:  # ranks reached only through penalised moves are not legal paths
        start_penalty, end_penalty, transition_penalty = penalties
        pen = start_penalty[paths[:, :, 0]] + end_penalty[paths[:, :, -1]]
        step_pen = transition_penalty[paths[:, :, :-1], paths[:, :, 1:]]
        missing = missing | (pen + torch.where(valid[1:].t(), step_pen, 0.0).sum(2) < 0)
    missing[0] = False  # rank 0 is decode's path (legal whenever the sentence has a legal path)
    paths = paths.masked_fill(missing.unsqueeze(2) | ~mask, 0).transpose(0, 1).contiguous()
    return paths, final.masked_fill(missing, float("-inf")).t().contiguous()
