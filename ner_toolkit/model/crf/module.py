"""The ``CRF`` module: parameters (pytorch-crf names), constraints, and the public API."""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...calibration import MAX_TEMPERATURE  # the toolkit's one bound (torch-free): the penalty / T stays prohibitive
from ...data.labels import DISALLOWED_PENALTY
from . import native
from .partial import partial_nll
from .posterior import marginals_of, segment_log_probs
from .scaled import LogPartition, forward_backward, log_z
from .viterbi import kbest, legal_ranks, viterbi


_REDUCTIONS = ("none", "sum", "mean", "token_mean")

Constraints = Tuple[Sequence[bool], Sequence[bool], Sequence[Sequence[bool]]]


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
            nll = LogPartition.apply(em, mask, start, end, trans) - gold  # (B,)
            if reduction == "none":
                return nll
            if reduction == "sum":
                return nll.sum()
            if reduction == "mean":
                return nll.mean()
            return nll.sum() / mask.sum().to(nll.dtype)

    def partial_nll(self, emissions: Tensor, known: Tensor, mask: Tensor, first_table: Tensor,
                    pair_table: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log of the probability mass of the legal paths that agree with the known tags.

        Args:
            emissions: ``(B, T, K)``; mask: ``(B, T)`` as in :meth:`forward`.
            known: ``(B, T)`` user-tag ids, ``U`` (the tables' last row) where the tag is unknown.
            first_table, pair_table: ``(U + 1, K)`` and ``(U + 1, K, K)`` bool, from
                ``data.schemes.reading_tables`` with :func:`partial.with_unknown_row` appended.
            reduction: as in :meth:`forward`, except that ``"mean"`` averages over the sentences with
                at least one known tag (a sentence with none contributes exactly 0).
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            mask = mask.bool()
            start, end, trans = self._scoring_params()
            nll = partial_nll(emissions.float(), mask, known, start, end, trans, first_table, pair_table,
                              DISALLOWED_PENALTY)
            if reduction == "none":
                return nll
            if reduction == "sum":
                return nll.sum()
            if reduction == "mean":
                labelled = ((known != first_table.size(0) - 1) & mask).any(1).sum().clamp(min=1)
                return nll.sum() / labelled.to(nll.dtype)
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
            inputs = self._inference_inputs(emissions, mask)
            # On the CPU the fused C loop (native.py) when it could be built; the same paths and scores.
            return native.viterbi(*inputs) if native.usable(inputs[0]) else viterbi(*inputs)

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
            inputs = self._inference_inputs(emissions, mask)
            if native.usable(inputs[0]):  # the C k-best on the CPU, as decode
                return legal_ranks(*native.kbest(*inputs, k), inputs[1], self._penalties())
            return kbest(*inputs, k, self._penalties())

    def forward_backward(self, emissions: Tensor, mask: Tensor,
                         temperature: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
        """Forward–backward log-scores, float32 and detached (inference only; train with :meth:`forward`).
        ``temperature``: every score (emissions, start, end, transitions) divided by it, as in the
        marginals and span probabilities below (a calibration; the best path does not change).

        Returns:
            ``(log_alpha, log_beta, log_z)``: ``log_alpha`` ``(B, T, K)``, the log-sum of all path
            prefixes ending in tag k at t, emission t included; ``log_beta`` ``(B, T, K)``, the log-sum
            of all continuations after tag k at t (emission t excluded, the end transition at each
            sentence's own last position included); ``log_z`` ``(B,)``. Padded positions are unspecified.
        """
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask, temperature)
            a, a_shift, b, b_shift, _ = forward_backward(em, mask, start, end, trans)
            alpha = (a + a_shift.cumsum(0)).permute(2, 0, 1).contiguous()
            beta = (b + b_shift.flip(0).cumsum(0).flip(0)).permute(2, 0, 1).contiguous()
            return alpha, beta, log_z(a, a_shift, end, mask.sum(1) - 1)

    def marginals(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
        """Posterior tag probabilities ``P(y_t = k)``, ``(B, T, K)`` float32 and detached: each valid
        position sums to 1, padded positions are 0, disallowed tags get ~0. ``temperature``: as for
        :meth:`forward_backward`."""
        self._validate(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask, temperature)
            a, _, b, _, _ = forward_backward(em, mask, start, end, trans)
            return marginals_of(a, b, mask)

    def span_log_probs(
        self, emissions: Tensor, mask: Tensor, paths: Tensor, continues: Tensor, temperature: float = 1.0
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
            ``temperature``: as for :meth:`forward_backward`.
        """
        self._validate(emissions, mask)
        self._check_paths(emissions, paths, continues)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask, temperature)
            a, _, b, b_shift, em = forward_backward(em, mask, start, end, trans)  # (T, K, B)
            return segment_log_probs(a, b, b_shift, em, trans, mask, paths, continues)

    # --------------------------------------------------------------- internals
    def posteriors(
        self, emissions: Tensor, mask: Tensor, paths: Tensor, continues: Tensor, temperature: float = 1.0
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(marginals, is_end, start, log_prob)``: :meth:`marginals` and :meth:`span_log_probs` from one
        forward-backward pass (what a tagger reporting confidences needs per batch)."""
        self._validate(emissions, mask)
        self._check_paths(emissions, paths, continues)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            em, mask, start, end, trans = self._inference_inputs(emissions, mask, temperature)
            a, _, b, b_shift, em = forward_backward(em, mask, start, end, trans)
            return (marginals_of(a, b, mask), *segment_log_probs(a, b, b_shift, em, trans, mask, paths, continues))

    @staticmethod
    def _check_paths(emissions: Tensor, paths: Tensor, continues: Tensor) -> None:
        batch, seq_len, num_tags = emissions.shape
        if not isinstance(paths, Tensor) or tuple(paths.shape) != (batch, seq_len):
            raise ValueError(f"paths must have shape (batch, seq_len) = {(batch, seq_len)}")
        if not isinstance(continues, Tensor) or tuple(continues.shape) != (num_tags, num_tags):
            raise ValueError(f"continues must be a ({num_tags}, {num_tags}) bool tensor")

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

    def _penalties(self) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        if self.start_penalty is None or self.end_penalty is None or self.transition_penalty is None:
            return None
        return self.start_penalty, self.end_penalty, self.transition_penalty

    def _inference_inputs(self, emissions: Tensor, mask: Tensor, temperature: float = 1.0) -> Tuple[Tensor, ...]:
        """Detached float32 ``(emissions, mask (bool), start, end, transitions)``, penalties added, all
        scores divided by ``temperature`` (the -1e4 penalties stay prohibitive for any T up to 100)."""
        if not (isinstance(temperature, (int, float)) and 0.0 < temperature <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be in (0, {MAX_TEMPERATURE}], got {temperature!r}")
        start, end, trans = (p.detach() for p in self._scoring_params())
        em = emissions.detach().float()
        if temperature != 1.0:
            em, start, end, trans = (x / temperature for x in (em, start, end, trans))
        return em, mask.bool(), start, end, trans
