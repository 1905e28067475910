"""Batch prediction over files: CoNLL, raw text or JSONL in; any registered format out.

Files are read as a stream and predicted in chunks, in input order; the output is written under a
temporary name and renamed at the end, so an interrupted run leaves no partial file behind.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Literal, Optional

from . import distributed
from .atomic import atomic_write
from .data.conll import Passthrough, Sentence, document_ids, is_docstart, read_conll, refuse_text
from .data.jsonl import AlignmentReport, read_jsonl
from .data.plaintext import read_text
from .data.sniff import script_mismatch
from .data.text import Document
from .errors import UserError, warn
from .evaluate import unknown_gold_problem
from .formats import Options, Writer, writer
from .predict import Predictor, entities

InputFormat = Literal["conll", "text", "jsonl"]
INPUT_FORMATS = ("conll", "text", "jsonl")


@dataclass
class FileResult:
    """What one file gave: counts, and for scoring the gold and predicted tags (CoNLL input) or the
    gold and predicted character spans per document (text and JSONL input with gold entities)."""

    input: Path
    output: Optional[Path]
    sentences: int = 0
    tokens: int = 0
    gold: list[list[str]] = field(default_factory=list)
    pred: list[list[str]] = field(default_factory=list)
    gold_offsets: list[list[tuple[str, int, int]]] = field(default_factory=list)
    pred_offsets: list[list[tuple[str, int, int]]] = field(default_factory=list)
    alignment: Optional[AlignmentReport] = None


@dataclass
class OutputOptions(Options):
    """``Options`` of the writer plus how the input is read."""

    input_format: InputFormat = "conll"
    document_per_file: bool = False   # text input: the whole file is one document (else one per line)
    word_tokenizer: Optional[str] = None  # text/jsonl input: override the model's


def read_items(predictor: Predictor, path: Path, options: OutputOptions,
               report: Optional[AlignmentReport] = None) -> Iterator[Any]:
    """The prediction units of ``path``: CoNLL sentences and passthrough lines, or documents."""
    tokenizer = options.word_tokenizer or predictor.word_tokenizer
    if options.input_format == "conll":
        return refuse_text(read_conll(path, token_column=predictor.token_column, label_column=predictor.label_column),
                           path)
    if options.input_format == "text":
        documents = read_text(path, tokenizer, document_per_file=options.document_per_file)
    else:
        documents = read_jsonl(path, tokenizer, misaligned="expand", report=report)
    return warn_script_mismatch(documents, tokenizer, path)


def warn_script_mismatch(documents: Iterator[Document], tokenizer: str, path: Path,
                         sample: int = 2000) -> Iterator[Document]:
    """``documents``, with one warning at the first whose text the word tokeniser splits wrongly, among
    their first ``sample`` tokens (``data.sniff.script_mismatch``: Chinese left whole by ``conll``, English
    cut into letters by ``chars``)."""
    seen: list[str] = []
    looking = True
    for doc in documents:
        if looking:
            seen.extend(doc.tokens[:sample])
            problem = script_mismatch(seen, tokenizer)
            if problem:
                warn(problem, path, doc.line or None)
            looking = not problem and len(seen) < sample  # one warning at most
        yield doc


def _write_chunk(out: IO[str], items: list, predictor: Predictor, result: FileResult, keep_gold: bool,
                 options: OutputOptions, fmt: Writer) -> None:
    units = [it for it in items if not isinstance(it, Passthrough)]
    # Documents are scored by their entities' character offsets, which need the span predictions.
    scores = options.scores or fmt.needs_scores or (keep_gold and options.input_format != "conll")
    dist = distributed.current()
    mine = dist.shard(range(len(units)))  # under torchrun each rank tags its share of the chunk
    # A CoNLL file's documents are -DOCSTART- bounded; every text or JSONL record is its own.
    documents = document_ids(items) if options.input_format == "conll" else list(range(len(units)))
    local = predictor.predict_detailed([u.tokens for u in units], options.nbest, scores,
                                       documents=documents, only=mine)
    gathered = distributed.gather_to_main(list(zip(mine, local)))
    if gathered is None:
        return  # not rank 0: rank 0 writes the merged chunk in input order
    predictions: list[Any] = [None] * len(units)
    for part in gathered:
        for index, prediction in part:
            predictions[index] = prediction
    in_order = iter(predictions)  # units appear among the items in the order they were predicted
    for it in items:
        if isinstance(it, Passthrough):
            out.write(fmt.passthrough(it, options))
            continue
        prediction = next(in_order)
        out.write(fmt.write(it, prediction, options))
        result.sentences += 1
        result.tokens += len(it.tokens)
        if not keep_gold:
            continue
        if isinstance(it, Document) and it.entities is not None:  # character spans: scored by offsets
            result.gold_offsets.append(it.entities)
            result.pred_offsets.append([(e.label, e.start, e.end) for e in entities(it, prediction)])
        elif it.labels is not None:  # CoNLL gold column, or JSONL rows of tokens + tags: scored by tags
            result.gold.append(it.labels)
            result.pred.append(prediction.tags)
    out.flush()  # a pipeline reader sees each chunk as soon as it is tagged


def _check_gold(item: Any, path: Path, unknown_tag: Optional[str], label_column: int) -> None:
    """Every gold tag is a tag, or ``unknown_tag`` (None: no tag may be unknown)."""
    if isinstance(item, Sentence) and item.labels is not None:
        for tag, line in zip(item.labels, item.line_numbers):
            problem = unknown_gold_problem(tag, unknown_tag or "?", unknown_tag is not None)
            if problem:
                raise UserError(f"--evaluate needs gold tags in column {label_column} (the model's "
                                f"data.label_column): {problem}", path, line)


def predict_file(predictor: Predictor, path: Path, output: Optional[Path], evaluate: bool = False,
                 chunk_sentences: int = 1024, options: Optional[OutputOptions] = None,
                 unknown_tag: Optional[str] = None) -> FileResult:
    """Predict one file into ``output`` (stdout when None), streaming in chunks of sentences.
    ``evaluate``: keep the gold; ``unknown_tag``: a gold tag that marks an unannotated token."""
    options = options or OutputOptions()
    result = FileResult(path, output)
    if options.input_format == "jsonl":
        result.alignment = AlignmentReport(str(path))
    items_iter = read_items(predictor, path, options, result.alignment)
    fmt = writer(options.fmt)

    def run(out: IO[str]) -> None:
        out.write(fmt.header(options))
        chunk: list = []
        count = 0
        for item in items_iter:
            # With document context a chunk ends only where a document does (or, to bound memory,
            # after 16 chunks' worth of one document), so that every sentence sees its neighbours.
            document_ends = is_docstart(item) or count >= 16 * chunk_sentences
            if predictor.context > 0 and count >= chunk_sentences and document_ends:
                _write_chunk(out, chunk, predictor, result, evaluate, options, fmt)
                chunk, count = [], 0
            chunk.append(item)
            if not isinstance(item, Passthrough):
                if evaluate:
                    _check_gold(item, path, unknown_tag, predictor.label_column)
                count += 1
                # Documents are independent: their chunks may end anywhere.
                if count >= chunk_sentences and (predictor.context == 0 or isinstance(item, Document)):
                    _write_chunk(out, chunk, predictor, result, evaluate, options, fmt)
                    chunk, count = [], 0
        _write_chunk(out, chunk, predictor, result, evaluate, options, fmt)
        out.write(fmt.footer(options))

    if not distributed.current().main:
        run(open(os.devnull, "w", encoding="utf-8"))  # takes part in every chunk, writes nothing
    elif output is None:
        run(sys.stdout)
    else:
        with atomic_write(output) as fh:
            run(fh)
    return result
