"""How predictions are written: extra CoNLL columns, or one JSON object per sentence (JSONL)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .data.conll import Sentence

if TYPE_CHECKING:
    from .predict import Prediction

FORMATS = ("conll", "jsonl")


def conll_columns(prediction: "Prediction", nbest: int, scores: bool) -> list[list[str]]:
    """The columns appended to each token line: the predicted tag, then (with nbest > 1) the tags of ranks
    2..nbest ("-" where fewer legal paths exist), then (with scores) the token's marginal probability and the
    probability of the span it belongs to ("-" outside spans)."""
    n = len(prediction.tags)
    columns = [prediction.tags]
    if nbest > 1:
        ranked = prediction.nbest or []
        for rank in range(1, nbest):
            columns.append(ranked[rank][0] if rank < len(ranked) else ["-"] * n)
    if scores:
        columns.append([f"{p:.4f}" for p in prediction.token_confidence or []])
        span_p = ["-"] * n
        for span in prediction.spans:
            if span.confidence is not None:
                span_p[span.start:span.end] = [f"{span.confidence:.4f}"] * (span.end - span.start)
        columns.append(span_p)
    return columns


def jsonl_record(sentence: Sentence, prediction: "Prediction") -> str:
    """One line of JSON: tokens, tags, spans (label, token offsets [start, end), text, confidence),
    token confidences and the n-best paths when they were computed, and the sentence's first line."""
    record: dict = {
        "line": sentence.line_numbers[0],
        "tokens": sentence.tokens,
        "tags": prediction.tags,
        "spans": [{"label": s.label, "start": s.start, "end": s.end, "text": " ".join(sentence.tokens[s.start:s.end]),
                   "confidence": None if s.confidence is None else round(s.confidence, 6)} for s in prediction.spans],
    }
    if prediction.token_confidence is not None:
        record["token_confidence"] = [round(p, 6) for p in prediction.token_confidence]
    if prediction.nbest is not None:
        record["nbest"] = [{"tags": tags, "score": round(score, 6)} for tags, score in prediction.nbest]
    return json.dumps(record, ensure_ascii=False) + "\n"
