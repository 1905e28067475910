"""Prediction result types, torch-free: shared by ``predict.Predictor`` and the ONNX runtime
(``export.runtime.OnnxPredictor``), so code that formats results never needs torch."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .data.text import Document

__all__ = ["Span", "Prediction", "Entity", "entities"]


@dataclass
class Span:
    label: str
    start: int                          # token index of the first token
    end: int                            # token index after the last token
    confidence: Optional[float] = None  # probability of this exact span under the CRF (with scores=True)


@dataclass
class Prediction:
    tags: list[str]                                   # in the training data's scheme
    spans: list[Span]                                 # filled with nbest > 1 or scores=True
    token_confidence: Optional[list[float]] = None    # marginal probability of each predicted tag
    nbest: Optional[list[tuple[list[str], float]]] = None  # (tags, path score), best first, best included


@dataclass
class Entity:
    """A predicted entity in a text: ``text == original[start:end]`` (character offsets, end exclusive)."""

    label: str
    start: int
    end: int
    text: str
    score: float        # probability of this exact span under the CRF
    token_start: int    # its first token
    token_end: int      # after its last token

    def to_dict(self) -> dict:
        return asdict(self)


def entities(document: Document, prediction: Prediction) -> list[Entity]:
    """The entities of ``prediction`` (made with ``scores=True``) located in ``document``'s text."""
    out = []
    for span in prediction.spans:
        start, end = document.offsets[span.start][0], document.offsets[span.end - 1][1]
        score = span.confidence
        if score is None:  # the CRF's segment differs from the scheme's reading: its weakest token
            score = min(prediction.token_confidence[span.start:span.end]) if prediction.token_confidence else 0.0
        out.append(Entity(span.label, start, end, document.text[start:end], score, span.start, span.end))
    return out
