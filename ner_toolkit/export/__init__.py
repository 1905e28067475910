"""ONNX export of a trained model and a torch-free runtime for it.

``ner-export --model DIR --output OUT [--quantize int8]`` writes OUT (see :mod:`.onnx_export`);
:class:`.runtime.OnnxPredictor` loads it with onnxruntime and decodes with the toolkit's C Viterbi
(numpy fallback). This package's ``__init__`` imports nothing heavy: the runtime's import chain
never imports torch, and only :mod:`.onnx_export` does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

MANIFEST = "export.json"      # marks an export directory; its format and collation settings
GRAPH, GRAPH_INT8 = "model.onnx", "model.int8.onnx"
CRF_FILE = "crf.npz"
FORMAT_VERSION = 1

__all__ = ["MANIFEST", "GRAPH", "GRAPH_INT8", "CRF_FILE", "FORMAT_VERSION", "is_export", "OnnxPredictor",
           "export_model"]


def is_export(directory: Union[str, "os.PathLike[str]"]) -> bool:
    """Whether ``directory`` is an ONNX export written by ``ner-export`` (cheap, torch-free)."""
    return (Path(directory) / MANIFEST).is_file()


def __getattr__(name: str) -> Any:  # lazy: importing the package stays light
    if name == "OnnxPredictor":
        from .runtime import OnnxPredictor

        return OnnxPredictor
    if name == "export_model":
        from .onnx_export import export_model

        return export_model
    raise AttributeError(name)
