"""The model's labels and the CRF's constraint tables, torch-free: what the PyTorch model directory
(``model.directory``) and the ONNX runtime (``export.runtime``) both read from ``labels.json``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .schemes import Scheme, allowed_transitions

#: Added to the score of a disallowed start / transition / end in every CRF computation (PyTorch and
#: numpy). Finite (not ``-inf``) so that every sentence keeps a finite best path and NLL, while ``exp``
#: of it is exactly 0 in float32.
DISALLOWED_PENALTY = -1.0e4


@dataclass
class LabelInfo:
    labels: list[str]      # internal labels, index = CRF tag id
    tag_scheme: Scheme     # the scheme of `labels` (an internal one: Scheme.internal)
    output_scheme: Scheme  # the scheme of the training files, used for predictions

    @property
    def types(self) -> set[str]:
        return {label.split("-", 1)[1] for label in self.labels if label != "O"}

    def constraints(self) -> tuple[list[bool], list[bool], list[list[bool]]]:
        """(start (K,), end (K,), transitions (K, K) [from, to]) allowed under ``tag_scheme``."""
        return allowed_transitions(self.labels, self.tag_scheme)

    def to_json(self) -> dict[str, Any]:
        """labels.json's object (schemes by name)."""
        return {"labels": list(self.labels), "tag_scheme": self.tag_scheme.name,
                "output_scheme": self.output_scheme.name}
