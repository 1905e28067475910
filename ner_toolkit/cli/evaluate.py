"""``ner evaluate`` (``ner-evaluate``): span P/R/F1 of a CoNLL file's last two columns, or of JSONL predictions
against JSONL gold."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..errors import UserError
from .common import Parser

if TYPE_CHECKING:
    from ..data.schemes import Scheme


@dataclass
class Confidences:
    """``ner-evaluate --calibration``: each token's span-confidence cell (None for ``-``), the token lines,
    the diagram's path."""

    values: list[list[Optional[float]]]
    lines: list[list[int]]
    path: str
    png: str


def report(gold: list[list[str]], pred: list[list[str]], strict: bool, json_path: Optional[str], where: str,
           errors: bool = False, unknown_tag: Optional[str] = None,
           confidences: Optional[Confidences] = None, scheme: Optional[Scheme] = None) -> None:
    """Print (and with ``json_path`` write) span P/R/F1; ``unknown_tag``: gold positions left out;
    ``confidences``: also the calibration of the predicted spans' confidences and its diagram; ``scheme``:
    the tags' scheme where the caller knows it (None: detected from gold, once, for every score)."""
    from ..data.schemes import SchemeError
    from ..evaluate import evaluate_spans, format_report, gold_scheme

    try:
        scheme = scheme or gold_scheme(gold, pred, unknown_tag)
        result = evaluate_spans(gold, pred, scheme=scheme, strict=strict, unknown_tag=unknown_tag)
    except SchemeError as exc:
        raise UserError(str(exc), where) from None
    print(format_report(result))
    if errors:
        from ..error_analysis import error_report, format_error_report

        result["errors"] = error_report(gold, pred, scheme)
        print("\n" + format_error_report(result["errors"]))
    if confidences is not None:
        result["calibration"] = _calibration(gold, pred, scheme, unknown_tag, confidences)
    _write_json(result, json_path)


def _calibration(gold: list[list[str]], pred: list[list[str]], scheme: Scheme, unknown_tag: Optional[str],
                 conf: Confidences) -> dict:
    """ECE of the predicted spans' confidences (read at each span's first token), printed and drawn."""
    from ..calibration import calibration_error, format_calibration, reliability_diagram, span_outcomes
    from ..data.schemes import to_spans

    spans = []
    for i, tags in enumerate(pred):
        spans.append([])
        for label, start, end in to_spans(tags, scheme):
            value = conf.values[i][start]
            if value is None:
                raise UserError("a predicted span has no confidence (`-`) at its first token; score a file "
                                "written by predict.py --scores, with --confidence-column at its last column",
                                conf.path, conf.lines[i][start])
            spans[-1].append((label, start, end, value))
    result = calibration_error(*span_outcomes(gold, spans, scheme, unknown_tag))
    print("\n" + format_calibration(result))
    note = reliability_diagram([("predicted spans", result)], conf.png, f"reliability of {os.path.basename(conf.path)}")
    print(f"note: {note}" if note else f"reliability diagram: {conf.png}", file=sys.stderr)
    return result


def _write_json(result: dict, json_path: Optional[str]) -> None:
    if json_path == "-":
        print(json.dumps(result, indent=2))
    elif json_path:
        from ..atomic import atomic_write

        with atomic_write(json_path) as fh:
            fh.write(json.dumps(result, indent=2) + "\n")


def report_offsets(gold: list, pred: list, json_path: Optional[str]) -> None:
    """Print (and with ``json_path`` write) P/R/F1 by exact character spans, per document."""
    from ..evaluate import evaluate_offsets, format_report

    result = evaluate_offsets(gold, pred)
    print(format_report(result))
    _write_json(result, json_path)


def _jsonl_documents(path: str) -> list:
    from ..data.jsonl import AlignmentReport, read_jsonl

    # Scoring compares the character spans as given; the tokeniser only has to be cheap.
    return list(read_jsonl(path, "whitespace", misaligned="skip", report=AlignmentReport(path)))


def _evaluate_jsonl(pred_path: str, gold_path: str, json_path: Optional[str]) -> None:
    """Predictions (JSONL with ``entities``, e.g. predict.py --format jsonl) against gold JSONL, document
    by document in file order; each pair must hold the same text."""
    pred_docs, gold_docs = _jsonl_documents(pred_path), _jsonl_documents(gold_path)
    if len(pred_docs) != len(gold_docs):
        raise UserError(f"{len(pred_docs)} documents, but the gold file {gold_path} has {len(gold_docs)}; predict "
                        f"the gold file itself to get one prediction per document", pred_path)
    gold, pred = [], []
    for p_doc, g_doc in zip(pred_docs, gold_docs):
        if p_doc.text != g_doc.text:
            raise UserError(f"this document's text differs from the gold document at {gold_path}:{g_doc.line}; "
                            f"predictions must come in the gold file's order", pred_path, p_doc.line)
        if g_doc.entities is None:
            raise UserError("the gold document has no entities (no entities, label or annotations key)",
                            gold_path, g_doc.line)
        if p_doc.entities is None:
            raise UserError("this document has no predicted entities (no entities key); score the output of "
                            "predict.py --format jsonl", pred_path, p_doc.line)
        gold.append(g_doc.entities)
        pred.append(p_doc.entities)
    if not gold:
        raise UserError("no documents to score", gold_path)
    report_offsets(gold, pred, json_path)


def run(argv: list[str], prog: Optional[str] = None) -> int:
    p = Parser(prog=prog, description="Span P/R/F1 from the last two columns (gold, predicted) of a CoNLL "
                                                 "file, or of JSONL predictions against JSONL gold (--gold).")
    p.add_argument("file", help="CoNLL file whose last two columns are gold and predicted tags, or (with --gold) "
                                "JSONL predictions")
    p.add_argument("--gold", metavar="GOLD.jsonl",
                   help="score JSONL predictions against this JSONL gold by exact character offsets (label, start, "
                        "end); documents pair up in file order")
    p.add_argument("--strict", action="store_true", help="strict span matching (default: conlleval-compatible)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON (- for stdout)")
    p.add_argument("--report", action="store_true",
                   help="also count per type: correct, wrong type (right boundaries), wrong boundaries, missed, spurious")
    p.add_argument("--ignore-unknown", action="store_true",
                   help="leave gold positions tagged --unknown-tag out of the score (partially annotated gold): "
                        "predicted spans over them count neither way")
    p.add_argument("--unknown-tag", default="?", metavar="TAG", help="the gold tag of unannotated tokens (default ?)")
    p.add_argument("--calibration", nargs="?", const="", metavar="PNG",
                   help="also the expected calibration error of the predicted spans' confidences, and a reliability "
                        "diagram written to PNG (default: beside FILE, FILE.reliability.png); needs the span "
                        "probabilities of predict.py --scores (see --confidence-column)")
    p.add_argument("--confidence-column", type=int, metavar="N",
                   help="with --calibration: the column of each span's probability (default: where predict.py "
                        "--scores wrote it, as its header says; else -1)")
    p.add_argument("--gold-column", type=int, metavar="N",
                   help="column of the gold tags (default: as the file's '# ner_toolkit columns:' header says, "
                        "written by predict.py; else -2, the second to last)")
    p.add_argument("--pred-column", type=int, metavar="N",
                   help="column of the predicted tags (default: as the file's header says; else -1, the last)")
    args = p.parse_args(argv)
    from ..data.schemes import tag_problem
    from ..evaluate import unknown_gold_problem
    from ..paths import Read, Write, check_no_clash

    if args.report and args.ignore_unknown:
        raise UserError("--report sorts errors over whole sentences; it cannot be combined with --ignore-unknown",
                        "--report")
    reads = [Read("the scored file", args.file)] + ([Read("--gold", args.gold)] if args.gold else [])
    writes = [Write("--json", args.json)] if args.json else []
    if args.calibration is not None:
        if args.gold:
            raise UserError("--calibration reads span probabilities from CoNLL columns (predict.py --scores); "
                            "score the CoNLL output", "--calibration")
        args.calibration = args.calibration or os.path.splitext(args.file)[0] + ".reliability.png"
        writes.append(Write("--calibration", args.calibration))
    if writes:
        check_no_clash(reads, writes)
    _check_not_unscored_json(args.file, bool(args.gold))
    if args.gold:
        _evaluate_jsonl(args.file, args.gold, args.json)
        return 0
    if args.file.endswith((".jsonl", ".json", ".ndjson")):
        raise UserError("JSONL predictions are scored against JSONL gold: add --gold GOLD.jsonl", args.file)

    gold, pred = [], []
    conf = None if args.calibration is None else Confidences([], [], args.file, args.calibration)
    sentences, layout = _read_scored(args.file)
    _resolve_columns(args, layout, conf is not None)
    columns = [args.gold_column, args.pred_column] + ([args.confidence_column] if conf else [])
    for sentence in sentences:
        width = len(sentence.columns[0])
        if width < 2:
            raise UserError("need at least two columns (gold and predicted tags)", args.file, sentence.line_numbers[0])
        if layout is not None and not _has_gold(layout, width):
            raise UserError("no gold column: predict.py wrote this file from an input without gold tags; predict "
                            "a file that has them (in the model's label column) to score it",
                            args.file, sentence.line_numbers[0])
        for column in columns:
            if not -width <= column < width:
                raise UserError(f"column {column} does not exist: the file has {width} columns; check "
                                f"--gold-column/--pred-column/--confidence-column", args.file, sentence.line_numbers[0])
        g = [c[args.gold_column] for c in sentence.columns]
        q = [c[args.pred_column] for c in sentence.columns]
        for tag, line in zip(g, sentence.line_numbers):
            problem = unknown_gold_problem(tag, args.unknown_tag, args.ignore_unknown)
            if problem:
                raise UserError(f"{problem} (read as gold from column {args.gold_column}: a file predicted from "
                                f"tokens alone has no gold to score; else name it with --gold-column)",
                                args.file, line)
        for tag, line in zip(q, sentence.line_numbers):
            problem = tag_problem(tag)
            if problem:
                raise UserError(problem, args.file, line)
        gold.append(g)
        pred.append(q)
        if conf is not None:
            conf.values.append([_probability(c[args.confidence_column], args.file, line)
                                for c, line in zip(sentence.columns, sentence.line_numbers)])
            conf.lines.append(sentence.line_numbers)
    if not gold:
        raise UserError("no sentences to score", args.file)
    report(gold, pred, args.strict, args.json, args.file, errors=args.report,
           unknown_tag=args.unknown_tag if args.ignore_unknown else None, confidences=conf)
    return 0


def _probability(cell: str, path: str, line: int) -> Optional[float]:
    """A confidence cell: ``-`` (outside any span) or a probability."""
    if cell == "-":
        return None
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise UserError(f"confidence {cell!r} is not a probability in [0, 1] or '-'; check --confidence-column",
                        path, line)
    return value




def _read_scored(path: str) -> tuple[list, Optional[dict[str, int]]]:
    """The sentences of a CoNLL file, and the column map of its first line when predict.py wrote one."""
    from ..data.conll import Passthrough, read_conll
    from ..formats import parse_layout

    items = list(read_conll(path))
    layout = None
    if items and isinstance(items[0], Passthrough) and items[0].line_number == 1:
        layout = parse_layout(items[0].line)
    sentences = [item for item in items if not isinstance(item, Passthrough)]
    return sentences, layout


def _resolve_columns(args: argparse.Namespace, layout: Optional[dict[str, int]], calibration: bool) -> None:
    """Explicit --gold/--pred/--confidence-column win; then the file's header; then the last two columns."""
    layout = layout or {}
    if args.gold_column is None:
        args.gold_column = layout.get("gold", -2)
    if args.pred_column is None:
        args.pred_column = layout.get("pred", -1)
    if args.confidence_column is None:
        if calibration and layout and "span_p" not in layout:
            raise UserError("--calibration needs the span probabilities of predict.py --scores; this file was "
                            "predicted without --scores", args.file)
        args.confidence_column = layout.get("span_p", -1)


def _has_gold(layout: dict[str, int], width: int) -> bool:
    """Whether a file predict.py wrote with ``layout`` kept a gold column: its input had more than the token."""
    inputs = width - (len(layout) - 1)  # every named column but the gold one was appended
    gold = layout["gold"]
    return inputs > 1 and (0 <= gold < inputs if gold >= 0 else -width <= gold < -(len(layout) - 1))


def _check_not_unscored_json(path: str, gold: bool) -> None:
    """predict.py's hf and label-studio outputs hold neither gold nor tokens, and JSONL predictions pair with
    JSONL gold: refuse them with the way that scores, before a reader misreads them (a file may have any name)."""
    if path == "-" or not os.path.isfile(path):
        return
    with open(path, "rb") as fh:
        first = fh.readline().lstrip(b"\xef\xbb\xbf").strip()
    if first == b"[" or (first.startswith(b"[") and first.endswith(b"]")):
        raise UserError("predict.py --format hf or label-studio output is not scored: predict with --format jsonl "
                        "and score with --gold GOLD.jsonl, or with --format conll", path, 1)
    if first.startswith(b'{"') and not gold:
        raise UserError("JSONL predictions are scored against JSONL gold: add --gold GOLD.jsonl", path, 1)
