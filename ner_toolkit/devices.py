"""Which device a run uses: ``auto``/``cpu``/``cuda[:N]``. :func:`parse_device` reads the name (torch-free:
the ONNX runtime uses it too); :func:`resolve_device` checks it against this machine for torch."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from .errors import UserError

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"([a-z][a-z0-9_]*)(?::(\d+))?")


def parse_device(name: str, source: str = "--device") -> tuple[str, Optional[int]]:
    """``(type, index)`` of a device name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or another backend's
    ``type[:N]``); a name of another shape is a user error naming ``source`` (the option)."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None or (match.group(1) == "auto" and match.group(2)):
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N", source)
    index = match.group(2)
    return match.group(1), None if index is None else int(index)


def resolve_device(name: str, source: str = "--device") -> "torch.device":
    """A torch device from ``auto``/``cpu``/``cuda[:N]`` (``mps``/``xpu`` where the machine has one);
    a device this machine lacks is a user error here, not a crash at the first tensor. ``source``
    names the option in errors."""
    import torch

    kind, index = parse_device(name, source)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(kind, index) if index is not None else torch.device(kind)
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
