"""The optimizer side of training: AdamW groups, warmup + linear decay, autocast, fp16 loss scaling,
gradient accumulation and clipping, behind one ``backward(batch)`` call per batch."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from ..config import TrainingConfig
from ..data.batching import Batch
from ..distributed import all_reduce_grads
from ..model.precision import autocast
from ..model.tagger import Tagger


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of the tagger's parameters, updated after every optimizer step.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the early average
    is not dominated by the random initialisation. ``swapped()`` puts the average into the tagger for
    scoring and saving, then restores the trained weights: training itself never sees the average.
    """

    def __init__(self, tagger: Tagger, decay: float) -> None:
        self.decay, self.updates = decay, 0
        named = [(name, p) for name, p in tagger.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], trained)

    def state_dict(self) -> dict:
        """``{"updates": n, "shadow": {parameter name: averaged tensor}}`` (CPU tensors)."""
        return {"updates": self.updates, "shadow": {n: t.cpu() for n, t in zip(self.names, self.shadow)}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        with torch.no_grad():
            for name, mine in zip(self.names, self.shadow):
                mine.copy_(state["shadow"][name])


class Optimization:
    """Feeds batches to the tagger and steps AdamW every ``training.accumulate`` batches.

    ``total_steps`` is the number of optimizer steps of the whole run (for the schedule).
    """

    def __init__(self, tagger: Tagger, tc: TrainingConfig, total_steps: int, device: torch.device) -> None:
        self.tagger, self.tc, self.device = tagger, tc, device
        # The fused kernel updates all parameters in one pass (CPU and CUDA), instead of one op per tensor.
        self.optimizer = torch.optim.AdamW(tagger.param_groups(tc.lr, tc.weight_decay), fused=True)
        self.scheduler = linear_schedule(self.optimizer, int(tc.warmup * total_steps), total_steps)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
        self.pending = 0  # batches whose gradients wait for the next step
        self.average = WeightAverage(tagger, tc.ema) if tc.ema else None

    @contextmanager
    def evaluated_weights(self) -> Iterator[None]:
        """The weights to score and save: the moving average under ``training.ema``, else the trained ones."""
        if self.average is None:
            yield
        else:
            with self.average.swapped():
                yield

    def backward(self, batch: Optional[Batch], share: float = 1.0, last: bool = True) -> Optional[torch.Tensor]:
        """Forward + backward of one batch (a step when ``accumulate`` batches are in); the detached loss.

        ``share``: this call's fraction of the global batch, under data parallelism and for micro-batches
        (its loss weight, so that the summed gradients are those of the whole batch's mean loss); ``batch``
        None: this rank's share of a small batch is empty, it only takes part in the step. ``last`` False:
        a micro-batch with more of the same batch to come, so it does not count towards ``accumulate``.
        """
        loss = None
        if batch is not None:
            with autocast(self.device, self.tc.precision):
                loss = self.tagger.loss(batch)
            self.scaler.scale(loss * share / self.tc.accumulate).backward()
        if not last:
            return None if loss is None else loss.detach()
        self.pending += 1
        if self.pending >= self.tc.accumulate:
            self.step()
        return None if loss is None else loss.detach()

    def step(self) -> None:
        """Apply the accumulated gradients (no-op when none are pending, e.g. at an epoch's end)."""
        if not self.pending:
            return
        all_reduce_grads(self.tagger.parameters())  # data parallel: sum the ranks' shares
        if self.tc.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.tagger.parameters(), self.tc.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.update()
        self.pending = 0

    def learning_rates(self) -> dict[str, float]:
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}
