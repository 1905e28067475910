"""The numeric modes a model runs in, torch-free so that the config schema, every CLI and the ONNX runtime
read the same choices: precisions (autocast) and quantisations (dynamic int8)."""
from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
QUANTIZATIONS: tuple[str, ...] = ("none", "int8")
