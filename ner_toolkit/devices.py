"""Which torch device a run uses: ``auto``/``cpu``/``cuda[:N]``, checked against this machine."""
from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str, source: str = "--device") -> torch.device:
    """A torch device from ``auto``/``cpu``/``cuda[:N]`` (``mps``/``xpu`` where the machine has one);
    a device this machine lacks is a user error here, not a crash at the first tensor. ``source``
    names the option in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N", source) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available; use cpu", source)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}", source)
        return device
    backend = {"mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if backend is not None and backend.is_available():
        return device
    raise UserError(f"device {name!r} is not available on this machine; use cpu"
                    f"{' or cuda' if torch.cuda.is_available() else ''}", source)
