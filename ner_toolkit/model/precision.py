"""Mixed precision: autocast for the network; the CRF always computes in float32 (it casts itself)."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from ..errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device: torch.device, source: str = "training.precision") -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", source)
    if precision == "fp16" and device.type != "cuda":
        raise UserError("fp16 needs a CUDA device (loss scaling); use bf16 on CPU", source)


def autocast(device: torch.device, precision: str) -> ContextManager:
    """``torch.autocast`` in bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
