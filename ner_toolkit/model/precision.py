"""Mixed precision: autocast for the network; the CRF always computes in float32 (it casts itself)."""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import ContextManager, Optional

import torch

from ..errors import UserError
from .modes import PRECISIONS

log = logging.getLogger(__name__)


def check_precision(precision: str, device: torch.device, source: str = "training.precision") -> None:
    """What ``precision`` (one of ``modes.PRECISIONS``) needs of ``device``: fp16 needs CUDA; bf16 on a CPU that
    only emulates it gets a note. The choice itself is checked for a Python caller's argument (``Predictor.load``);
    config values and CLI options never reach here unchecked (the schema, argparse)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", source)
    if precision == "fp16" and device.type != "cuda":
        raise UserError("fp16 needs a CUDA device (loss scaling); use bf16 on CPU", source)
    if precision == "bf16" and device.type == "cpu" and cpu_native_bf16() is False:
        _note_emulated_bf16(source)


CPUINFO = Path("/proc/cpuinfo")
# x86: AVX512-BF16 or AMX; aarch64: the BF16 extension. Without one of them oneDNN emulates bf16 in fp32
# units and converts on every op, so bf16 autocast runs slower than fp32 instead of 2-3x faster.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> Optional[bool]:
    """Whether this CPU computes bf16 natively; None where that cannot be told (no /proc/cpuinfo)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & NATIVE_BF16_FLAGS)


_noted = False


def _note_emulated_bf16(source: str) -> None:
    """One note a process: bf16 was asked for on a CPU that only emulates it."""
    global _noted
    if not _noted:
        _noted = True
        log.info(f"note: {source} bf16 on a CPU without AVX512-BF16/AMX (or the ARM BF16 extension) is emulated "
                 f"and usually slower than fp32")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """``torch.autocast`` in bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
