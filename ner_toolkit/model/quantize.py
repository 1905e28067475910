"""Dynamic int8 quantisation of a trained tagger for CPU prediction.

Every ``nn.Linear`` (the encoder's embedding projection, attention and feed-forward layers, the fusion
projections, the emission layer) and every ``nn.LSTM`` of the BiLSTM get int8 weights; their inputs are
quantised per batch on the fly (dynamic activations), their outputs are float32. Embedding tables, layer
norms, the character CNN and the CRF stay float32 and untouched: the CRF's transition scores are what
keeps every decoded sequence legal, and its algorithms compute in float32 anyway.

The BiLSTM's reversed-within-length trick (``bilstm.py``) lives outside its ``nn.LSTM`` modules (gathers
before and after), so the quantised LSTMs (``batch_first=True`` preserved) see exactly what the float
ones saw.

Only for the CPU: PyTorch's quantised kernels (fbgemm / x86 / onednn / qnnpack) have no CUDA or MPS
implementation, and only for fp32 prediction (autocast would hand them bfloat16 inputs).
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Iterator, Optional

import torch
from torch import nn

from .modes import QUANTIZATIONS
from .tagger import Tagger


def check_quantize(quantize: Optional[str], device: torch.device | str, precision: str = "fp32") -> None:
    """Refuse (ValueError, a one-line message) what cannot run quantised; ``None``/"none" is always fine."""
    if quantize in (None, "none"):
        return
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    kind = torch.device(device).type
    if kind != "cpu":
        raise ValueError(f"int8 quantisation runs on the CPU only (PyTorch has no quantised kernels for "
                         f"{kind}); use --device cpu, or bf16/fp16 precision on {kind}")
    if precision != "fp32":
        raise ValueError(f"int8 quantisation replaces mixed precision: use precision fp32 with it, not {precision}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """``torch.ao.quantization``'s eager-mode API warns on every call that it is deprecated in favour of
    torchao (whose int8 CPU path needs ``torch.compile``); it is still the one eager CPU int8 path in
    this torch. Only those two known messages are hidden, only while converting."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        yield


def default_engine() -> str:
    """The quantised backend: x86 (fbgemm with VNNI where the CPU has it) on x86, qnnpack on ARM."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack", "onednn"):
        if engine in engines:
            return engine
    raise ValueError("this PyTorch build has no quantised CPU engine")


def quantize_int8(tagger: Tagger, engine: Optional[str] = None, inplace: bool = False) -> Tagger:
    """A copy of ``tagger`` (``inplace``: the tagger itself) with int8 Linear and LSTM weights and dynamic
    activation quantisation, for CPU inference. The CRF keeps its float32 parameters unchanged.

    ``engine``: the quantised backend (``torch.backends.quantized.engine``), default :func:`default_engine`;
    weights are packed for it, so it is set process-wide and must stay so while the model runs.
    Raises ValueError when the tagger is not on the CPU.
    """
    devices = {p.device.type for p in tagger.parameters()} | {b.device.type for b in tagger.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantisation runs on the CPU only; the tagger is on {', '.join(sorted(devices))} "
                         "(load it with device cpu)")
    engine = engine or default_engine()
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantised engine {engine!r} is not available here; choose one of "
                         f"{', '.join(torch.backends.quantized.supported_engines)}")
    torch.backends.quantized.engine = engine
    from torch.ao.quantization import quantize_dynamic

    was_training = tagger.training
    model = tagger if inplace else copy.deepcopy(tagger)
    model.eval()
    crf = model.crf
    # The CRF is detached while converting: nothing inside it may be swapped, whatever it holds.
    model.crf = nn.Identity()
    try:
        with _quiet():
            quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=torch.qint8, inplace=True)
    finally:
        model.crf = crf
    model.quantized = "int8"  # type: ignore[attr-defined]  # for reports; a quantised model is not trainable
    if was_training and inplace:
        model.train()
    return model


def is_quantized(tagger: nn.Module) -> bool:
    return getattr(tagger, "quantized", None) == "int8"
