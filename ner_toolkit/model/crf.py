"""Linear-chain conditional random field: NLL, constrained Viterbi, n-best, marginals, span probabilities.

Self-contained (imports only ``torch`` and ``typing``) and batched: the only Python loops run over time
steps, and nothing copies tensors to the host or branches on tensor values (the ``mask[:, 0]`` guard in
:meth:`CRF._validate` runs only for CPU tensors outside ``torch.compile``). All arithmetic is float32,
also for bf16/fp16 inputs and under autocast. Memory is O(B·T·K) plus per-step histories; no
``(B, T, K, K)`` tensor is built. Parameter names and initialisation follow pytorch-crf, so its
``state_dict`` loads unchanged; label-scheme constraints are non-persistent buffers of additive penalties.

Shapes: ``B`` sentences, ``T`` time steps, ``K`` tags. The recursions run *batch-last*, ``(T, K, B)``:
each step works on ``(K, B)`` tensors and reduces over a leading dimension, which vectorises well.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["CRF", "DISALLOWED_PENALTY"]

#: Added to the score of a disallowed start / transition / end. Finite (not ``-inf``) so that every
#: sentence keeps a finite best path and NLL, while ``exp`` of it is exactly 0 in float32.
DISALLOWED_PENALTY = -1.0e4

#: The exp-space recursions subtract ``max - 60`` before ``exp``: the best entry becomes ``e^60`` (no
#: overflow even summed over thousands of tags) and entries ~147 nats below it are still representable
#: (~87 with a plain max shift), at the price of ~2e-6 relative rounding, below pytorch-crf's own.
_HEADROOM = 60.0
#: ``e^(60 - 75)``: the NLL backward skips columns whose scaled mass is below it (see there).
_PAIR_FLOOR = 3.0e-7

_REDUCTIONS = ("none", "sum", "mean", "token_mean")

Constraints = Tuple[Sequence[bool], Sequence[bool], Sequence[Sequence[bool]]]


def _batch_last(em: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """``(B, T, K)`` float emissions → ``(T, K, B)`` with padding zeroed (so that the recursions, which
    run on past each sentence's end, stay finite whatever padding holds); ``(B, T)`` mask → ``(T, B)``."""
    return em.masked_fill(~mask.unsqueeze(2), 0.0).permute(1, 2, 0).contiguous(), mask.t()


def _forward_scaled(em: Tensor, start: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
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


def _backward_scaled(em: Tensor, valid: Tensor, end: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
    """Backward algorithm: ``(b (T, K, B), shift (T, 1, B))`` with ``log_beta[t] = b[t] + shift[t:].sum(0)``
    (emission ``t`` excluded, the end transition at each sentence's own last position included: ``b =
    end`` and ``shift = 0`` there and beyond). Scaled as :func:`_forward_scaled`, with ``c`` the column
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


def _last_of(x: Tensor, last: Tensor) -> Tensor:
    """``x`` ``(T, K, B)`` at each sentence's last position ``last`` ``(B,)`` → ``(K, B)``."""
    return x.gather(0, last.view(1, 1, -1).expand(1, x.size(1), -1)).squeeze(0)


def _log_z(a: Tensor, shift: Tensor, end: Tensor, last: Tensor) -> Tensor:
    """log Z ``(B,)`` from the scaled forward pass."""
    total = _last_of(shift.cumsum(0), last).squeeze(0)  # running shift at each sentence's end
    return torch.logsumexp(_last_of(a, last) + end.unsqueeze(1), dim=0) + total


class _LogPartition(torch.autograd.Function):
    """log Z ``(B,)`` with a hand-written backward (forward–backward): no autograd graph per time step,
    several times cheaper than differentiating the loop, and more precise."""

    @staticmethod
    def forward(ctx, em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> Tensor:
        em_k, valid = _batch_last(em, mask)
        a, shift = _forward_scaled(em_k, start, trans)
        last = mask.sum(1) - 1
        ctx.save_for_backward(em_k, valid, last, a, shift, end, trans)
        return _log_z(a, shift, end, last)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        em_k, valid, last, a, shift, end, trans = ctx.saved_tensors
        with torch.autocast(device_type=em_k.device.type, enabled=False):  # backward may run under autocast
            b, _ = _backward_scaled(em_k, valid, end, trans)
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
            return g.permute(2, 0, 1), None, g[0].sum(1), _last_of(g, last).sum(1), grad_trans


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags (batch-first).

    Args:
        num_tags: number of tags ``K``.
        constraints: ``(start_allowed[K], end_allowed[K], trans_allowed[K][K])`` where
            ``trans_allowed[i][j]`` says whether tag ``j`` may follow tag ``i``. ``None`` means
            unconstrained. Disallowed entries receive :data:`DISALLOWED_PENALTY` in every computation
            (partition function, gold score, Viterbi, n-best, marginals); the parameters are never modified.

    Attributes:
        start_transitions: ``(K,)`` score of starting with each tag.
        end_transitions: ``(K,)`` score of ending with each tag.
        transitions: ``(K, K)`` score of a transition ``[from, to]``.
    """

    def __init__(self, num_tags: int, constraints: Optional[Constraints] = None) -> None:
        super().__init__()
        if not isinstance(num_tags, int) or isinstance(num_tags, bool) or num_tags <= 0:
            raise ValueError(f"num_tags must be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

        self.start_penalty: Optional[Tensor]
        self.end_penalty: Optional[Tensor]
        self.transition_penalty: Optional[Tensor]
        if constraints is None:
            start_pen = end_pen = trans_pen = None
        else:
            start_pen, end_pen, trans_pen = self._build_penalties(num_tags, constraints)
        self.register_buffer("start_penalty", start_pen, persistent=False)
        self.register_buffer("end_penalty", end_pen, persistent=False)
        self.register_buffer("transition_penalty", trans_pen, persistent=False)

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """Initialise all parameters uniformly in ``(-0.1, 0.1)``, as pytorch-crf does."""
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    @staticmethod
    def _build_penalties(num_tags: int, constraints: Constraints) -> Tuple[Tensor, Tensor, Tensor]:
        if not isinstance(constraints, (tuple, list)) or len(constraints) != 3:
            raise ValueError(
                "constraints must be a tuple (start_allowed[K], end_allowed[K], trans_allowed[K][K])"
            )
        start, end, trans = (torch.as_tensor(c, dtype=torch.bool) for c in constraints)
        for name, value, shape in (
            ("start_allowed", start, (num_tags,)),
            ("end_allowed", end, (num_tags,)),
            ("trans_allowed", trans, (num_tags, num_tags)),
        ):
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"constraints: {name} must have shape {shape} for num_tags={num_tags}, "
                    f"got {tuple(value.shape)}"
                )

        def penalty(allowed: Tensor) -> Tensor:
            return torch.where(allowed, 0.0, DISALLOWED_PENALTY).to(torch.float32)

        return penalty(start), penalty(end), penalty(trans)

    @property
    def constrained(self) -> bool:
        """Whether label-scheme constraints are in force."""
        return self.transition_penalty is not None

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrained={self.constrained}"

    # ------------------------------------------------------------- public API
    def forward(
        self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean"
    ) -> Tensor:
        """Negative log-likelihood of the gold tag sequences (a loss to minimise).

        Args:
            emissions: ``(B, T, K)`` emission scores, any floating dtype (computed in float32).
            tags: ``(B, T)`` gold tag indices; values at padded positions are ignored.
            mask: ``(B, T)`` length mask: a prefix of ``True`` per row, ``mask[:, 0]`` all ``True``.
            reduction: ``"none"`` → ``(B,)``; ``"sum"``; ``"mean"`` (over sentences);
                ``"token_mean"`` (sum divided by the number of unmasked tokens).

        Returns:
            float32 tensor: the NLL, reduced as requested.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self._validate(emissions, mask, tags)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em = emissions.float()
            mask = mask.bool()
            start, end, trans = self._scoring_params()
            gold = self._gold_score(em, tags, mask, start, end, trans)
            nll = _LogPartition.apply(em, mask, start, end, trans) - gold  # (B,)
            if reduction == "none":
                return nll
            if reduction == "sum":
                return nll.sum()
            if reduction == "mean":
                return nll.mean()
            return nll.sum() / mask.sum().to(nll.dtype)

    def decode(self, emissions: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Constrained Viterbi decoding.

        Args:
            emissions: ``(B, T, K)`` emission scores, any floating dtype (computed in float32).
            mask: ``(B, T)`` length mask: a prefix of ``True`` per row, ``mask[:, 0]`` all ``True``.

        Returns:
            ``(paths, scores)``: ``paths`` ``(B, T)`` int64 on the emissions' device, 0 beyond each
            sentence's length; ``scores`` ``(B,)`` float32, the (penalised) score of the best path.
        """
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return self._viterbi(*self._inference_inputs(emissions, mask))

    def nbest(self, emissions: Tensor, mask: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        """The ``k`` best distinct legal paths per sentence (batched k-best Viterbi).

        Args:
            emissions, mask: as for :meth:`decode`. k: number of paths, >= 1.

        Returns:
            ``(paths, scores)``: ``paths`` ``(B, k, T)`` int64, 0 beyond each length; ``scores`` ``(B, k)``
            float32, best first. ``paths[:, 0]``, ``scores[:, 0]`` are :meth:`decode`'s (up to the choice
            between exactly tied paths). Ranks beyond the number of legal paths get score ``-inf`` and an
            all-zero path; rank 0 stays decode's even in a sentence with no legal path at all (possible
            only with constraints that forbid every path of its length).
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return self._kbest(*self._inference_inputs(emissions, mask), k)

    def forward_backward(self, emissions: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Forward–backward log-scores, float32 and detached (inference only; train with :meth:`forward`).

        Returns:
            ``(log_alpha, log_beta, log_z)``: ``log_alpha`` ``(B, T, K)``, the log-sum of all path
            prefixes ending in tag k at t, emission t included; ``log_beta`` ``(B, T, K)``, the log-sum
            of all continuations after tag k at t (emission t excluded, the end transition at each
            sentence's own last position included); ``log_z`` ``(B,)``. Padded positions are unspecified.
        """
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask)
            a, a_shift, b, b_shift, _ = self._forward_backward(em, mask, start, end, trans)
            alpha = (a + a_shift.cumsum(0)).permute(2, 0, 1).contiguous()
            beta = (b + b_shift.flip(0).cumsum(0).flip(0)).permute(2, 0, 1).contiguous()
            return alpha, beta, _log_z(a, a_shift, end, mask.sum(1) - 1)

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Posterior tag probabilities ``P(y_t = k)``, ``(B, T, K)`` float32 and detached: each valid
        position sums to 1, padded positions are 0, disallowed tags get ~0."""
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask)
            a, _, b, _, _ = self._forward_backward(em, mask, start, end, trans)
            # exp(alpha + beta - log Z), normalised per position (the shifts are constant there).
            marg = torch.where(mask.t().unsqueeze(1), torch.softmax(a + b, dim=1), 0.0)
            return marg.permute(2, 0, 1).contiguous()

    def span_log_probs(
        self, emissions: Tensor, mask: Tensor, paths: Tensor, continues: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Log-probability of each exact segment of ``paths`` under the CRF: a span confidence.

        Args:
            emissions, mask: as for :meth:`decode`. paths: ``(B, T)`` tag ids, e.g. from :meth:`decode`.
            continues: ``(K, K)`` bool, ``continues[i][j]``: tag ``j`` right after tag ``i`` extends
                ``i``'s segment (BIOES: B-X→I-X, B-X→E-X, I-X→I-X, I-X→E-X; BIO: B-X→I-X, I-X→I-X).

        A path splits into maximal segments, each starting at ``t = 0`` or where
        ``not continues[paths[t-1], paths[t]]``.

        Returns:
            ``(is_end, start, log_prob)``, all ``(B, T)``: ``is_end`` (bool) marks the last position of
            each segment; ``start`` (int64) the start of each valid position's segment (0 at padding);
            ``log_prob`` (float32, detached) at segment ends ``log P(y[s..t] = paths[s..t] and y[t+1]
            does not continue it)``, 0 elsewhere. The "does not continue" term makes it the exact span
            (in BIO an I-X at t+1 would extend it); the left side needs no such term, as a segment starts
            with a tag that does not continue its predecessor, and is not corrected.
        """
        self._validate(emissions, mask)
        batch, seq_len, num_tags = emissions.shape
        if not isinstance(paths, Tensor) or tuple(paths.shape) != (batch, seq_len):
            raise ValueError(f"paths must have shape (batch, seq_len) = {(batch, seq_len)}")
        if not isinstance(continues, Tensor) or tuple(continues.shape) != (num_tags, num_tags):
            raise ValueError(f"continues must be a ({num_tags}, {num_tags}) bool tensor")
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask)
            a, _, b, b_shift, em = self._forward_backward(em, mask, start, end, trans)  # (T, K, B)
            b_shift = b_shift.squeeze(1)  # log_beta[t] - log_beta[t+1] = b[t] - b[t+1] + b_shift[t]
            valid = mask.t()
            y = paths.t().long().masked_fill(~valid, 0)  # (T, B)
            cont = continues.to(device=y.device, dtype=torch.bool)

            def at(x: Tensor) -> Tensor:  # (T, K, B) at the path's tags → (T, B)
                return x.gather(1, y.unsqueeze(1)).squeeze(1)

            # log P(y_t | y_{t-1}) along the path (the posterior is a Markov chain). Built from the
            # scaled passes, it never subtracts two large log-scores, and its running sum stays small
            # for confident paths, so differences of it are precise.
            b_y = at(b)
            step = trans[y[:-1], y[1:]] + at(em)[1:] + b_y[1:] - b_y[:-1] - b_shift[:-1]  # (T-1, B)
            csum = torch.cat([torch.zeros_like(step[:1]), step]).cumsum(0)  # (T, B)
            joined = cont[y[:-1], y[1:]] & valid[1:]  # (T-1, B): t continues t-1's segment
            starts_here = torch.cat([torch.ones_like(joined[:1]), ~joined])
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
            log_prob = seg + torch.cat([ends, torch.zeros_like(ends[:1])])
            is_end = valid & ~torch.cat([joined, torch.zeros_like(joined[:1])])
            log_prob = torch.where(is_end, log_prob, 0.0)
            seg_start = seg_start.masked_fill(~valid, 0)
            return is_end.t().contiguous(), seg_start.t().contiguous(), log_prob.t().contiguous()

    # --------------------------------------------------------------- internals
    def _validate(self, emissions: Tensor, mask: Tensor, tags: Optional[Tensor] = None) -> None:
        if not isinstance(emissions, Tensor) or emissions.dim() != 3:
            raise ValueError(
                "emissions must be a 3-D tensor (batch, seq_len, num_tags), got "
                f"{tuple(emissions.shape) if isinstance(emissions, Tensor) else type(emissions).__name__}"
            )
        if not emissions.is_floating_point():
            raise ValueError(f"emissions must be floating point, got {emissions.dtype}")
        batch, seq_len, num_tags = emissions.shape
        if num_tags != self.num_tags:
            raise ValueError(
                f"emissions have {num_tags} tags in the last dimension but the CRF has "
                f"num_tags={self.num_tags}"
            )
        if seq_len < 1:
            raise ValueError("emissions must have at least one time step (seq_len >= 1)")
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, seq_len):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"mask must have shape (batch, seq_len) = {(batch, seq_len)} to match emissions, got {got}"
            )
        if tags is not None:
            if not isinstance(tags, Tensor) or tuple(tags.shape) != (batch, seq_len):
                got = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
                raise ValueError(
                    f"tags must have shape (batch, seq_len) = {(batch, seq_len)} to match emissions, got {got}"
                )
            if tags.is_floating_point() or tags.dtype == torch.bool:
                raise ValueError(f"tags must be an integer tensor, got {tags.dtype}")
        # Reading a value back would synchronise an accelerator, so only CPU masks are checked.
        if (
            mask.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and not bool(mask[:, 0].all())
        ):
            raise ValueError(
                "mask[:, 0] must be True for every sentence (every sentence needs at least one token; "
                "the mask must be a length mask with the valid positions first)"
            )

    def _scoring_params(self) -> Tuple[Tensor, Tensor, Tensor]:
        """float32 ``(start (K,), end (K,), transitions (K, K))`` with constraint penalties added."""
        start = self.start_transitions.float()
        end = self.end_transitions.float()
        trans = self.transitions.float()
        if self.start_penalty is not None:
            start = start + self.start_penalty.float()
        if self.end_penalty is not None:
            end = end + self.end_penalty.float()
        if self.transition_penalty is not None:
            trans = trans + self.transition_penalty.float()
        return start, end, trans

    @staticmethod
    def _gold_score(
        em: Tensor, tags: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
    ) -> Tensor:
        """Score of the given paths, ``(B,)``; ``em`` ``(B, T, K)``, ``tags``/``mask`` ``(B, T)``."""
        tags = tags.long().masked_fill(~mask, 0)  # padded positions may hold e.g. -100
        maskf = mask.to(em.dtype)
        emit = em.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        score = start[tags[:, 0]] + (emit * maskf).sum(1)
        score = score + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = mask.long().sum(1) - 1  # (B,) index of each sentence's last token
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
        return score + end[last_tags]

    def _inference_inputs(self, emissions: Tensor, mask: Tensor) -> Tuple[Tensor, ...]:
        """Detached float32 ``(emissions, mask (bool), start, end, transitions)``, penalties added."""
        start, end, trans = (p.detach() for p in self._scoring_params())
        return emissions.detach().float(), mask.bool(), start, end, trans

    @staticmethod
    def _forward_backward(
        em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
    ) -> Tuple[Tensor, ...]:
        """Scaled passes ``(a, a_shift, b, b_shift, emissions)``, ``(T, K, B)`` / ``(T, 1, B)``."""
        em, valid = _batch_last(em, mask)
        a, a_shift = _forward_scaled(em, start, trans)
        return (a, a_shift, *_backward_scaled(em, valid, end, trans), em)

    @staticmethod
    def _viterbi(
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

    def _kbest(
        self, em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor, k: int
    ) -> Tuple[Tensor, Tensor]:
        """k-best Viterbi. The state ``(k, K, B)`` holds the k best prefix scores per tag, rank-major,
        so a flat index ``rank * K + tag`` names a prefix. Each step takes the top k of the ``k * K``
        candidates per tag (a transient ``(k*K, K, B)`` block) and keeps their flat indices as
        backpointers. Ranks start at ``-inf`` (no prefix): that is how short sentences get missing ranks."""
        em, valid = _batch_last(em, mask)
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
        if self.constrained:  # ranks reached only through penalised moves are not legal paths
            pen = self.start_penalty[paths[:, :, 0]] + self.end_penalty[paths[:, :, -1]]
            step_pen = self.transition_penalty[paths[:, :, :-1], paths[:, :, 1:]]
            missing = missing | (pen + torch.where(valid[1:].t(), step_pen, 0.0).sum(2) < 0)
        missing[0] = False  # rank 0 is decode's path (legal whenever the sentence has a legal path)
        paths = paths.masked_fill(missing.unsqueeze(2) | ~mask, 0).transpose(0, 1).contiguous()
        return paths, final.masked_fill(missing, float("-inf")).t().contiguous()
