"""Linear-chain conditional random field: negative log-likelihood and constrained Viterbi.

Self-contained (imports only ``torch`` and ``typing``) and batched over sentences: the only Python
loop is over time steps, and nothing in :meth:`CRF.forward` / :meth:`CRF.decode` copies tensors to the
host or branches on tensor values (the single exception is the ``mask[:, 0]`` guard in
:meth:`CRF._validate`, which is skipped while ``torch.compile`` traces).

Parameter names and initialisation follow pytorch-crf (``torchcrf.CRF``), so a pytorch-crf
``state_dict`` loads into :class:`CRF` unchanged. Label-scheme constraints are kept as
non-persistent buffers of additive penalties: they never enter a checkpoint and are rebuilt from the
label scheme when the model is constructed.

Shapes: ``B`` sentences, ``T`` time steps (the longest sentence), ``K`` tags.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["CRF", "DISALLOWED_PENALTY"]

#: Added to the score of a disallowed start / transition / end. Large and finite (not ``-inf``) so that
#: ``logsumexp`` and its gradient stay NaN-free even in rows where every entry is disallowed.
DISALLOWED_PENALTY = -1.0e4

_REDUCTIONS = ("none", "sum", "mean", "token_mean")

Constraints = Tuple[Sequence[bool], Sequence[bool], Sequence[Sequence[bool]]]


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags (batch-first).

    Args:
        num_tags: number of tags ``K``.
        constraints: ``(start_allowed[K], end_allowed[K], trans_allowed[K][K])`` where
            ``trans_allowed[i][j]`` says whether tag ``j`` may follow tag ``i``. ``None`` means
            unconstrained. Disallowed entries receive :data:`DISALLOWED_PENALTY` inside the partition
            function, the gold-path score and the Viterbi search; the parameters themselves are never
            modified.

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
            log_z = self._log_partition(em, mask, start, end, trans)
            nll = log_z - gold  # (B,)
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
            em = emissions.float()
            mask = mask.bool()
            start, end, trans = self._scoring_params()
            return self._viterbi(em, mask, start, end, trans)

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
        if not torch.compiler.is_compiling() and not bool(mask[:, 0].all()):
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

    @staticmethod
    def _log_partition(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> Tensor:
        """log Z per sentence, ``(B,)``, by the forward algorithm (one ``(B, K, K)`` per step)."""
        seq_len = em.size(1)
        alpha = start.unsqueeze(0) + em[:, 0]  # (B, K)
        trans_b = trans.unsqueeze(0)  # (1, K_from, K_to)
        for t in range(1, seq_len):
            step = torch.logsumexp(alpha.unsqueeze(2) + trans_b + em[:, t].unsqueeze(1), dim=1)
            # Padded steps carry alpha unchanged, so `end` below lands on each sentence's own last token.
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)

    @staticmethod
    def _viterbi(
        em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor
    ) -> Tuple[Tensor, Tensor]:
        batch, seq_len, num_tags = em.shape
        score = start.unsqueeze(0) + em[:, 0]  # (B, K)
        trans_b = trans.unsqueeze(0)
        identity = torch.arange(num_tags, device=em.device).unsqueeze(0).expand(batch, num_tags)
        backpointers = []
        for t in range(1, seq_len):
            best, prev = (score.unsqueeze(2) + trans_b).max(dim=1)  # (B, K_to) over K_from
            keep = mask[:, t].unsqueeze(1)
            score = torch.where(keep, best + em[:, t], score)
            # At padded steps the backpointer is the identity: the backtrace passes through unchanged,
            # so each sentence's final tag is the one chosen at its own last position.
            backpointers.append(torch.where(keep, prev, identity))
        best_score, best_last = (score + end.unsqueeze(0)).max(dim=1)  # (B,), (B,)

        cur = best_last
        reversed_path = [cur]
        if backpointers:
            history = torch.stack(backpointers)  # (T-1, B, K) int64
            for t in range(seq_len - 2, -1, -1):
                cur = history[t].gather(1, cur.unsqueeze(1)).squeeze(1)
                reversed_path.append(cur)
        reversed_path.reverse()
        paths = torch.stack(reversed_path, dim=1).masked_fill(~mask, 0)  # (B, T)
        return paths, best_score
