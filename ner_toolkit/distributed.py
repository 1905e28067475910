"""Data parallelism under ``torchrun``: one process per device, gloo on CPU, nccl on GPU.

Every rank builds the same model (same seed) and draws the same global batch order; rank r takes
sentences r, r+W, r+2W, ... of each global batch. Each rank's loss is weighted by its share of the
global batch and the gradients are summed across ranks (one flattened all-reduce per optimizer step),
so a step equals the single-process step on the whole global batch up to floating-point rounding.
A rank whose share of a small batch is empty contributes zeros. Rank 0 alone evaluates, logs and
writes files. Without ``torchrun`` (WORLD_SIZE unset or 1) everything here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.rank::self.world])


_CURRENT = Dist()


def current() -> Dist:
    return _CURRENT


def init_from_env(device_name: str) -> tuple[Dist, Optional[str]]:
    """Join the process group torchrun describes (env://); returns the Dist and the device to use."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _CURRENT, None
    import torch.distributed as dist

    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _CURRENT = Dist(dist.get_rank(), dist.get_world_size())
    device = None
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return _CURRENT, device


def all_reduce_grads(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks in one flattened all-reduce (missing gradients count as zeros)."""
    if not _CURRENT.enabled:
        return
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if _CURRENT.enabled:
        import torch.distributed as dist

        dist.all_reduce(value)
    return value


def broadcast_object(value: Any) -> Any:
    """Rank 0's value on every rank."""
    if not _CURRENT.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: Any) -> Optional[list[Any]]:
    """Every rank's value, in rank order, on rank 0 (None elsewhere)."""
    if not _CURRENT.enabled:
        return [value]
    import torch.distributed as dist

    out = [None] * _CURRENT.world if _CURRENT.main else None
    dist.gather_object(value, out, dst=0)
    return out


def barrier() -> None:
    if _CURRENT.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    if _CURRENT.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
