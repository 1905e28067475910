"""ner_toolkit: encoder -> BiLSTM -> CRF sequence labelling.

``ner_toolkit.train(config, overrides=..., output_dir=...)`` trains (see :mod:`ner_toolkit.api`);
``ner_toolkit.Predictor.load(model_dir)`` tags. Both are imported on first use, so ``import ner_toolkit``
(and the ``ner`` command's ``--help``) stays free of torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train", "TrainResult", "Predictor", "UserError"]

_LAZY = {"train": ".api", "TrainResult": ".api", "Predictor": ".predict", "UserError": ".errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
