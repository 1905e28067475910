"""The scaled (exp-space) forward and backward recursions and the log-partition with its hand-written
backward. Layout is batch-last, ``(T, K, B)``: each step works on ``(K, B)`` tensors."""

from typing import Tuple

import torch
from torch import Tensor

#: The exp-space recursions subtract ``max - 60`` before ``exp``: the best entry becomes ``e^60`` (no
#: overflow even summed over thousands of tags) and entries ~147 nats below it are still representable
#: (~87 with a plain max shift), at the price of ~2e-6 relative rounding, below pytorch-crf's own.
_HEADROOM = 60.0
#: ``e^(60 - 75)``: the NLL backward skips columns whose scaled mass is below it (see there).
_PAIR_FLOOR = 3.0e-7


def batch_last(em: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """``(B, T, K)`` float emissions → ``(T, K, B)`` with padding zeroed (so that the recursions, which
    run on past each sentence's end, stay finite whatever padding holds); ``(B, T)`` mask → ``(T, B)``."""
    return em.masked_fill(~mask.unsqueeze(2), 0.0).permute(1, 2, 0).contiguous(), mask.t()


def forward_scaled(em: Tensor, start: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
    """Forward algorithm in exp space. ``em`` ``(T, K, B)`` → ``(a (T, K, B), shift (T, 1, B))`` with
    ``log_alpha[t] = a[t] + shift[:t+1].sum(0)`` (emission ``t`` included).

    Step: ``a_t = log(A^T @ exp(a_{t-1} + r - m_t)) + em_t`` with ``A = exp(trans - r)``, ``r`` the row
    max of ``trans`` and ``m_t`` the max of ``a_{t-1} + r`` minus :data:`_HEADROOM`: a ``(K, K) @ (K, B)``
    matmul instead of a ``(B, K, K)`` logsumexp (NLL forward+backward 1.2-7x faster at every benchmarked
    shape, so the log-space form is kept only as a test reference). Safe because the best row has
    weight ``e^60`` and reaches some tag with factor 1, disallowed moves (``exp(-1e4)``) are exactly 0,
    and a tag whose mass underflows gets ``-inf``: mass is dropped, never invented, and the NLL stays
    finite. The limit: prefixes ~147 nats below a step's best are dropped (emissions far sharper
    than trained taggers produce). The running shift ``sum(m)`` is kept apart so that ``a`` stays at
    the scale of one step: ``a + b`` (marginals, gradients) then loses no precision on long sentences.
    """
    r = trans.amax(1, keepdim=True)  # (K, 1)
    mat_t = torch.exp(trans - r).t()  # (K_to, K_from): A^T
    # Histories are preallocated and written in place: per-step tensors kept in a list interleave
    # with each step's transient buffers on the heap and fragment it (peak RSS +200 MB at K=300).
    a = torch.empty_like(em)
    shift = torch.zeros_like(em[:, :1])  # (T, 1, B)
    em_t, a_t, shift_t = em.unbind(0), a.unbind(0), shift.unbind(0)  # per-step views, sliced once
    torch.add(start.unsqueeze(1), em_t[0], out=a_t[0])
    for t in range(1, em.size(0)):
        s = a_t[t - 1] + r
        m = torch.sub(s.amax(0, keepdim=True), _HEADROOM, out=shift_t[t])  # (1, B)
        torch.add((mat_t @ torch.exp(s - m)).log_(), em_t[t], out=a_t[t])
    return a, shift


def backward_scaled(em: Tensor, valid: Tensor, end: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
    """Backward algorithm: ``(b (T, K, B), shift (T, 1, B))`` with ``log_beta[t] = b[t] + shift[t:].sum(0)``
    (emission ``t`` excluded, the end transition at each sentence's own last position included: ``b =
    end`` and ``shift = 0`` there and beyond). Scaled as :func:`forward_scaled`, with ``c`` the column
    max of ``trans`` folded into the emissions (which only blurs tags nothing can reach)."""
    c = trans.amax(0)
    a_c = torch.exp(trans - c.unsqueeze(0))  # (K_from, K_to)
    em_c = em + c.unsqueeze(1)
    end_b = end.unsqueeze(1).expand(-1, em.size(2))
    b = torch.empty_like(em)
    shift = torch.zeros_like(em[:, :1])
    em_t, b_t, shift_t, valid_t = em_c.unbind(0), b.unbind(0), shift.unbind(0), valid.unbind(0)
    b_t[-1].copy_(end_b)
    for t in range(em.size(0) - 2, -1, -1):
        s = b_t[t + 1] + em_t[t + 1]
        m = s.amax(0, keepdim=True) - _HEADROOM
        keep = valid_t[t + 1]  # t < last; otherwise the sentence ends at or before t
        torch.where(keep, (a_c @ torch.exp(s - m)).log_(), end_b, out=b_t[t])
        torch.mul(m, keep, out=shift_t[t])  # m is finite; 0 where the sentence has ended
    return b, shift


def last_of(x: Tensor, last: Tensor) -> Tensor:
    """``x`` ``(T, K, B)`` at each sentence's last position ``last`` ``(B,)`` → ``(K, B)``."""
    return x.gather(0, last.view(1, 1, -1).expand(1, x.size(1), -1)).squeeze(0)


def log_z(a: Tensor, shift: Tensor, end: Tensor, last: Tensor) -> Tensor:
    """log Z ``(B,)`` from the scaled forward pass."""
    total = last_of(shift.cumsum(0), last).squeeze(0)  # running shift at each sentence's end
    return torch.logsumexp(last_of(a, last) + end.unsqueeze(1), dim=0) + total


class LogPartition(torch.autograd.Function):
    """log Z ``(B,)`` with a hand-written backward (forward–backward): no autograd graph per time step,
    several times cheaper than differentiating the loop, and more precise."""

    @staticmethod
    def forward(ctx, em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> Tensor:
        em_k, valid = batch_last(em, mask)
        a, shift = forward_scaled(em_k, start, trans)
        last = mask.sum(1) - 1
        ctx.save_for_backward(em_k, valid, last, a, shift, end, trans)
        return log_z(a, shift, end, last)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        em_k, valid, last, a, shift, end, trans = ctx.saved_tensors
        with torch.autocast(device_type=em_k.device.type, enabled=False):  # backward may run under autocast
            b, _ = backward_scaled(em_k, valid, end, trans)
            valid3 = valid.unsqueeze(1)  # (T, 1, B)
            # P(y_t = j) per valid position: the shifts are constant per position, softmax drops them.
            g = torch.where(valid3, torch.softmax(a + b, dim=1), 0.0) * grad  # d log Z / d emissions
            # Pairwise P(y_{t-1}=i, y_t=j) = P_i * A_ij * marg_j / q_j with the forward pass's weights
            # P = exp(a + r - m) and q = A^T P, so d log Z / d trans = sum over steps of P (marg/q)^T * A.
            r = trans.amax(1, keepdim=True)
            mat = torch.exp(trans - r)
            p = torch.exp(a[:-1] + r - shift[1:])  # (T-1, K, B)
            q = torch.matmul(mat.t(), p)  # (T-1, K_to, B)
            # Products with A_ij > 0 are <= marg_j, but p <= e^60 times marg/q for a pair that A then
            # zeroes can overflow when column j is starved (> 75 nats below the best row): such
            # columns are left out of the transition gradient, which stays finite.
            ok = valid3[1:] & (q > _PAIR_FLOOR)
            w = torch.where(ok, g[1:] / torch.where(ok, q, 1.0), 0.0)
            # Per step, then summed: one GEMM over all T*B terms loses ~10x more precision.
            grad_trans = (torch.bmm(p, w.transpose(1, 2)) * mat).sum(0)
            return g.permute(2, 0, 1), None, g[0].sum(1), last_of(g, last).sum(1), grad_trans


def forward_backward(
    em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
) -> Tuple[Tensor, ...]:
    """Scaled passes ``(a, a_shift, b, b_shift, emissions)``, ``(T, K, B)`` / ``(T, 1, B)``."""
    em, valid = batch_last(em, mask)
    a, a_shift = forward_scaled(em, start, trans)
    return (a, a_shift, *backward_scaled(em, valid, end, trans), em)
