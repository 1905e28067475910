"""How predictions are written: a registry of output writers, one class per format.

A writer turns one prediction unit (a CoNLL ``Sentence`` or a text ``Document``) and its
``Prediction`` into text; a fresh writer is made per output file, so it may keep state (a JSON
array's commas). ``predict.py --format`` offers exactly the registered names. A new format is one
class here with ``@register``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from .data.conll import COLUMNS_HEADER, DOCSTART, Passthrough, Sentence, format_passthrough, format_sentence
from .data.text import Document
from .results import Prediction, entities

Unit = Union[Sentence, Document]
_WRITERS: dict[str, type["Writer"]] = {}


@dataclass
class Options:
    """What is written: ``fmt`` a registered writer; ``nbest`` > 1 adds the runner-up paths; ``scores``
    adds token and span probabilities where the format has room for them."""

    nbest: int = 1
    scores: bool = False
    fmt: str = "conll"
    label_column: int = -1  # where the input holds gold tags (the model's data.label_column)


class Writer:
    name = ""
    help = ""
    needs_scores = False  # whether predictions must carry CRF span probabilities

    def header(self, options: Options) -> str:
        return ""

    def passthrough(self, item: Passthrough, options: Options) -> str:
        """A CoNLL line outside sentences (blank, -DOCSTART-): only formats that keep lines write it."""
        return ""

    def write(self, unit: Unit, prediction: Prediction, options: Options) -> str:
        raise NotImplementedError

    def footer(self, options: Options) -> str:
        return ""


def register(cls: type[Writer]) -> type[Writer]:
    _WRITERS[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    return tuple(_WRITERS)


def writer(name: str) -> Writer:
    """A fresh writer for one output file."""
    try:
        return _WRITERS[name]()
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; choose one of {', '.join(_WRITERS)}") from None


def describe() -> str:
    """One line per format, for --help."""
    return "; ".join(f"{name}: {cls.help}" for name, cls in _WRITERS.items())


def as_document(unit: Unit) -> Document:
    """A CoNLL sentence as a document: its tokens joined by single spaces, offsets into that text."""
    if isinstance(unit, Document):
        return unit
    return Document.from_tokens(unit.tokens, line=unit.line_numbers[0])


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) + "\n"


def conll_columns(prediction: Prediction, nbest: int, scores: bool) -> list[list[str]]:
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


def conll_layout(nbest: int, scores: bool, label_column: int) -> dict[str, int]:
    """Where ``conll_columns`` puts each column, counted from the end of the line (the gold counted as the
    model reads its inputs: from the start when ``label_column`` >= 0)."""
    names = ["pred"] + [f"rank{r}" for r in range(2, nbest + 1)] + (["token_p", "span_p"] if scores else [])
    layout = {"gold": label_column if label_column >= 0 else label_column - len(names)}
    layout.update((name, i - len(names)) for i, name in enumerate(names))
    return layout


PLAIN_LAYOUT = {"gold": -2, "pred": -1}  # what conlleval and ner evaluate read with no header


def format_layout(layout: dict[str, int]) -> str:
    """The header line of a CoNLL output whose columns differ from ``PLAIN_LAYOUT``."""
    return COLUMNS_HEADER + " " + " ".join(f"{name}={index}" for name, index in layout.items()) + "\n"


def parse_layout(line: str) -> Optional[dict[str, int]]:
    """The column map of a header line written by ``format_layout``; None when ``line`` is none."""
    if not line.startswith(COLUMNS_HEADER):
        return None
    layout = {}
    for field in line[len(COLUMNS_HEADER):].split():
        name, _, index = field.partition("=")
        try:
            layout[name] = int(index)
        except ValueError:
            return None
    return layout if "pred" in layout and "gold" in layout else None


@register
class Conll(Writer):
    """The input's lines with the prediction columns appended. Where they are not the plain "gold,
    prediction" pair at the end (n-best and score columns, a gold column elsewhere), the first line is a
    ``# ner_toolkit columns: ...`` header that ``ner evaluate`` reads; plain outputs stay exactly what
    conlleval reads."""

    name = "conll"
    help = ("the input's lines (or one token per line for text) plus the prediction columns; with --nbest, "
            "--scores or a model's label column other than the last, a first line '# ner_toolkit columns: ...' "
            "tells ner evaluate where gold and prediction are")

    def header(self, options: Options) -> str:
        layout = conll_layout(options.nbest, options.scores, options.label_column)
        return "" if layout == PLAIN_LAYOUT else format_layout(layout)

    def passthrough(self, item: Passthrough, options: Options) -> str:
        line = item.line
        if line.startswith(COLUMNS_HEADER):
            return ""  # the input was an output: its header described columns that are now inputs
        if line.split()[:1] == [DOCSTART]:
            # conlleval needs the same column count on every non-blank line: DOCSTART gets an O too
            # (and "-" for every further column).
            extra = options.nbest - 1 + (2 if options.scores else 0)
            line = ("\t" if "\t" in line else " ").join([line.rstrip(), "O"] + ["-"] * extra)
        return format_passthrough(Passthrough(line, item.line_number))

    def write(self, unit: Unit, prediction: Prediction, options: Options) -> str:
        columns = conll_columns(prediction, options.nbest, options.scores)
        if isinstance(unit, Sentence):
            return format_sentence(unit, columns)
        # A text's tokens hold no whitespace, so each is one column; a blank line ends the document.
        rows = ["\t".join([token] + [c[i] for c in columns]) for i, token in enumerate(unit.tokens)]
        return "\n".join(rows) + "\n\n" if rows else ""


@register
class Jsonl(Writer):
    name = "jsonl"
    help = ("one object per document or sentence: text, entities (label, start, end, text, score, token_start, "
            "token_end; character offsets into text), tokens, tags and the input's other keys")
    needs_scores = True

    def write(self, unit: Unit, prediction: Prediction, options: Options) -> str:
        document = as_document(unit)
        record: dict = dict(document.fields)
        if document.line:
            record["line"] = document.line
        record.update(text=document.text,
                      entities=[_rounded(e.to_dict()) for e in entities(document, prediction)],
                      tokens=document.tokens, tags=prediction.tags)
        if prediction.token_confidence is not None:
            record["token_confidence"] = [round(p, 6) for p in prediction.token_confidence]
        if prediction.nbest is not None:
            record["nbest"] = [{"tags": tags, "score": round(score, 6)} for tags, score in prediction.nbest]
        return _json(record)


def _rounded(entity: dict) -> dict:
    entity["score"] = round(entity["score"], 6)
    return entity


@register
class HuggingFace(Writer):
    name = "hf"
    help = ("one JSON list per document, the fields of a transformers token-classification pipeline with "
            "aggregation: entity_group, score, word, start, end")
    needs_scores = True

    def write(self, unit: Unit, prediction: Prediction, options: Options) -> str:
        document = as_document(unit)
        return _json([{"entity_group": e.label, "score": round(e.score, 6), "word": e.text, "start": e.start,
                       "end": e.end} for e in entities(document, prediction)])


def _utf16_offsets(text: str) -> list[int]:
    """``out[i]``: the UTF-16 code-unit offset of Python index ``i`` (0..len(text))."""
    out, units = [0], 0
    for ch in text:
        units += 2 if ord(ch) > 0xFFFF else 1
        out.append(units)
    return out


def label_studio_regions(text: str, spans: Iterable[tuple[int, int, str, Optional[float]]], from_name: str,
                         to_name: str, id_prefix: str) -> list[dict]:
    """Label Studio ``labels`` results for ``(start, end, label, score)`` spans of ``text`` (Python offsets,
    end exclusive; a None score writes none): the one builder of the file writer, the ML backend's
    predictions and a simulated annotator's webhook payloads. Label Studio indexes text in JavaScript
    (UTF-16) units, which differ from Python's after a character outside the BMP (an emoji)."""
    utf16 = _utf16_offsets(text) if any(ord(c) > 0xFFFF for c in text) else None
    out = []
    for i, (start, end, label, score) in enumerate(spans):
        region: dict = {"id": f"{id_prefix}{i}", "from_name": from_name, "to_name": to_name, "type": "labels",
                        "value": {"start": utf16[start] if utf16 else start, "end": utf16[end] if utf16 else end,
                                  "text": text[start:end], "labels": [label]}}
        if score is not None:
            region["score"] = round(score, 6)
        out.append(region)
    return out


@register
class LabelStudio(Writer):
    """Pre-annotation tasks for Label Studio's named-entity template (``<Labels name="label"
    toName="text">`` over ``<Text name="text" value="$text">``), as one JSON array that its import
    reads; each task's score is its least confident entity's, so review can start with it. Offsets
    are in UTF-16 code units, as Label Studio counts (the JSONL reader converts them back)."""

    name = "label-studio"
    help = "a JSON array of Label Studio pre-annotation tasks (data.text + predictions with labels results)"
    needs_scores = True
    from_name, to_name = "label", "text"

    def __init__(self) -> None:
        self.first = True

    def header(self, options: Options) -> str:
        return "[\n"

    def write(self, unit: Unit, prediction: Prediction, options: Options) -> str:
        document = as_document(unit)
        found = entities(document, prediction)
        results = label_studio_regions(document.text, ((e.start, e.end, e.label, e.score) for e in found),
                                       self.from_name, self.to_name, "e")
        extra = document.fields.get("data")  # a Label Studio task read back: its other data keys
        task = {"data": {**(extra if isinstance(extra, dict) else {}), "text": document.text},
                "predictions": [{"model_version": "ner_toolkit", "result": results,
                                 "score": round(min((e.score for e in found), default=1.0), 6)}]}
        separator = "" if self.first else ",\n"
        self.first = False
        return separator + json.dumps(task, ensure_ascii=False)

    def footer(self, options: Options) -> str:
        return "\n]\n" if not self.first else "]\n"
