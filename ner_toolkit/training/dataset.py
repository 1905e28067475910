"""Labelled CoNLL or JSONL files -> validated sentences, the label set, and internal tag ids."""
from __future__ import annotations

import logging
from typing import Any, Optional
from array import array
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..config import DataConfig
from ..data.conll import Sentence, is_docstart, read_conll, refuse_text
from ..data.schemes import (Scheme, SchemeError, detect_scheme, each_known_run, from_spans, get_scheme,
                             labels_for_types, reading_tables, tag_problem, to_spans)
from ..data.jsonl import AlignmentReport, read_jsonl
from ..data.sniff import UNK_WARN_SHARE, tag_columns, unk_share
from ..data.store import RaggedInts, RaggedStrings
from ..data.text import detect_tokenizer
from ..errors import UserError, warn
from ..data.labels import LabelInfo

log = logging.getLogger(__name__)


@dataclass
class LabelledFile:
    """Tokens and gold tags of a labelled file. Only what training needs is kept (not the raw lines
    and other columns), in flat arrays: a large corpus costs a few bytes per token, not a list per
    sentence (``data.store``)."""

    path: str
    tokens: RaggedStrings = field(default_factory=RaggedStrings)
    gold: RaggedStrings = field(default_factory=RaggedStrings)
    # line number of each sentence's first token; its lines are consecutive
    first_lines: array = field(default_factory=lambda: array("q"))
    documents: array = field(default_factory=lambda: array("q"))  # document number of each sentence
    one_line_each: bool = False  # JSONL: a sentence is one record on one line

    def lines(self, index: int) -> list[int]:
        first = self.first_lines[index]
        if self.one_line_each:
            return [first] * self.tokens.row_length(index)
        return list(range(first, first + self.tokens.row_length(index)))


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def is_jsonl(path: str, cfg: DataConfig) -> bool:
    """Whether ``path`` is read as JSONL: ``data.format``, or with ``auto`` its suffix."""
    return cfg.format == "jsonl" or (cfg.format == "auto" and Path(path).suffix.lower() in JSONL_SUFFIXES)


def resolve_word_tokenizer(cfg: DataConfig) -> str:
    """``data.word_tokenizer``, with ``auto`` decided from the training file's first texts or tokens."""
    if cfg.word_tokenizer != "auto":
        return cfg.word_tokenizer
    assert cfg.train is not None
    if is_jsonl(cfg.train, cfg):
        texts = (d.text for d in islice(read_jsonl(cfg.train, "whitespace", "skip", cfg.tag_names,
                                                   AlignmentReport(cfg.train), cfg.unknown_tag), 2000))
        return detect_tokenizer(texts)
    # Read as read_labelled reads it: an empty label column is a partial label, not a missing column.
    items = read_conll(cfg.train, cfg.token_column, cfg.label_column, missing_label=cfg.unknown_tag)
    sentences = (s.tokens for s in islice(items, 2000) if isinstance(s, Sentence))
    return detect_tokenizer(t for tokens in sentences for t in tokens)


def read_labelled(path: str, cfg: DataConfig, key: str) -> LabelledFile:
    """Read ``path`` (the file of config key ``key``) and check every tag, naming the first bad line.
    ``cfg.word_tokenizer`` must be resolved (not ``auto``) for JSONL texts."""
    if is_jsonl(path, cfg):
        return _read_jsonl(path, cfg, key)
    data = LabelledFile(path)
    document = 0
    unknown = cfg.unknown_tag if key == "data.train" else None  # partial labels train, never score
    # An empty label column reads as the unknown tag in training data; elsewhere it stays an error.
    items = read_conll(path, cfg.token_column, cfg.label_column, missing_label=unknown)
    # Tokens that are tags get no warning here: the label column's check names the settings that read them.
    for item in refuse_text(items, path, "raw text trains nothing: label it as JSONL (text + entities) or CoNLL",
                            tag_tokens=False):
        if is_docstart(item):
            document += 1
        if not isinstance(item, Sentence):
            continue
        if item.labels is None:
            raise UserError(f"`{key}` needs a label column, but the file has a single column", path,
                            item.line_numbers[0])
        for tag, line in zip(item.labels, item.line_numbers):
            if tag == unknown:
                continue
            if tag == cfg.unknown_tag:
                raise UserError(f"`{key}` holds the unknown tag {tag!r}: only training data may be partially "
                                f"labelled (dev and test are scored against every tag)", path, line)
            problem = tag_problem(tag)
            if problem:
                raise UserError(_label_column_problem(item, tag, cfg, key) or problem, path, line)
        data.tokens.append(item.tokens)
        data.gold.append(item.labels)
        data.first_lines.append(item.line_numbers[0])
        data.documents.append(document)
    if not len(data.tokens):
        raise UserError(f"no sentences found (`{key}` must be a CoNLL file with token lines)", path)
    return data


def _label_column_problem(sentence: Sentence, tag: str, cfg: DataConfig, key: str) -> Optional[str]:
    """Where the label column holds no tag but another column holds tags only (label-first CoNLL), the
    message naming the settings that read the file; else None."""
    width = len(sentence.columns[0])
    label = cfg.label_column % width
    found = tag_columns(sentence.columns, label)
    if not found:
        return None
    sets = [f"data.label_column={found[0]}"]
    if cfg.token_column % width == found[0]:  # label-first: the token is where the label was looked for
        sets.append(f"data.token_column={label}")
    return (f"`{key}` column {label} (data.label_column={cfg.label_column}) holds {tag!r}, not a tag, and column "
            f"{found[0]} holds tags (a label-first file?): set {' and '.join(sets)} "
            f"({' '.join('--set ' + s for s in sets)})")


def _read_jsonl(path: str, cfg: DataConfig, key: str) -> LabelledFile:
    """Texts with character-offset entities (aligned to ``cfg.word_tokenizer``'s tokens, misaligned
    spans per ``data.misaligned`` and reported) or rows of tokens and tags."""
    data = LabelledFile(path, one_line_each=True)
    report = AlignmentReport(path)
    unlabelled: list[int] = []
    for doc in read_jsonl(path, cfg.word_tokenizer, cfg.misaligned, cfg.tag_names, report, cfg.unknown_tag):
        if doc.labels is None:
            unlabelled.append(doc.line)
            continue
        if not doc.tokens:
            continue  # an empty text: nothing to learn or score
        if key != "data.train" and cfg.unknown_tag in doc.labels:
            raise UserError(f"`{key}` holds the unknown tag {cfg.unknown_tag!r}: only training data may be partially "
                            f"labelled (dev and test are scored against every tag)", path, doc.line)
        data.tokens.append(doc.tokens)
        data.gold.append(doc.labels)
        data.first_lines.append(doc.line)
        data.documents.append(len(data.documents))  # every record is a document of its own
    if report.expanded or report.skipped:
        for line in report.lines():
            log.info(line)
    if unlabelled:
        shown = ", ".join(map(str, unlabelled[:5])) + (", ..." if len(unlabelled) > 5 else "")
        warn(f"`{key}`: {len(unlabelled)} records without annotations left out (lines {shown})", path)
    if not len(data.tokens):
        raise UserError(f"no labelled records found (`{key}` as JSONL needs text + entities, or tokens + ner_tags)",
                        path)
    return data


def check_annotated(train: LabelledFile, unknown_tag: str) -> None:
    """Some training tag must be known: a file of unknown tags alone would train a model that tags O everywhere."""
    if not any(tag != unknown_tag for tags in train.gold for tag in tags):
        raise UserError(f"every tag of `data.train` is the unknown tag {unknown_tag!r} (no token is annotated): "
                        "nothing to learn; annotate some tokens, entities and O alike", train.path)


def input_scheme(train: LabelledFile, cfg: DataConfig) -> Scheme:
    """The scheme of the data files: configured, or detected from the training file."""
    if cfg.input_scheme != "auto":
        return get_scheme(cfg.input_scheme)  # the schema accepts only names of the table
    try:
        return detect_scheme(each_known_run(train.gold, cfg.unknown_tag))
    except SchemeError as exc:
        raise UserError(str(exc), train.path) from None


def check_scheme(data: LabelledFile, scheme: Scheme, unknown_tag: str = "?") -> None:
    """Every tag of ``data`` must belong to ``scheme`` (e.g. no S-PER in an IOB1 corpus); names the line."""
    first_line: dict[str, int] = {}
    for i, tags in enumerate(data.gold):
        for tag, line in zip(tags, data.lines(i)):
            first_line.setdefault(tag, line)
    first_line.pop(unknown_tag, None)
    for tag, line in first_line.items():  # each distinct tag once, not once per token
        try:
            to_spans([tag], scheme)
        except SchemeError as exc:
            raise UserError(f"{exc} (the training file is {scheme}; use one scheme for all files or set "
                            f"data.input_scheme)", data.path, line) from None


def build_labels(train: LabelledFile, scheme: Scheme, cfg: DataConfig) -> LabelInfo:
    """Every internal label of every training type (all prefixes, seen or not), ``O`` first."""
    internal = get_scheme(cfg.tag_scheme)  # the schema accepts only internal schemes
    # check_scheme has run: every tag fits the scheme.
    types = {t for tags in each_known_run(train.gold, cfg.unknown_tag) for t, _, _ in to_spans(tags, scheme)}
    return LabelInfo(labels_for_types(types, internal), internal, scheme)


def known_ids(data: LabelledFile, labels: LabelInfo, unknown_tag: str) -> Optional[tuple[RaggedInts, list[str]]]:
    """Partial labels: per sentence, each word's tag as an id of ``reading_tables``' user tags, their
    count where unknown; and those user tags. None when no training tag is unknown. Fully labelled
    sentences are read the conlleval way first (as ``tag_ids`` does), so that each has a legal path."""
    if not any(unknown_tag in tags for tags in data.gold):
        return None
    try:
        user_tags = reading_tables(labels.labels, labels.tag_scheme, labels.output_scheme)[0]
    except SchemeError as exc:
        raise UserError(str(exc), "config") from None
    index = {tag: u for u, tag in enumerate(user_tags)}
    out = RaggedInts(typecode="h")
    for tags in data.gold:
        if unknown_tag not in tags:
            tags = from_spans(to_spans(tags, labels.output_scheme), len(tags), labels.output_scheme)
        out.append([index.get(t, len(user_tags)) if t != unknown_tag else len(user_tags) for t in tags])
    return out, user_tags


def tag_ids(data: LabelledFile, labels: LabelInfo, unknown_tag: str = "?") -> tuple[RaggedInts, int]:
    """Internal label ids per sentence (illegal sequences read the conlleval way) and how many were repaired.
    A partially labelled sentence gets O everywhere: its loss reads ``known_ids`` instead."""
    index = {label: i for i, label in enumerate(labels.labels)}
    out, repaired = RaggedInts(typecode="h"), 0
    for tags in data.gold:
        if unknown_tag in tags:
            out.append([0] * len(tags))
            continue
        spans = to_spans(tags, labels.output_scheme)  # conlleval reading: repairs illegal sequences
        repaired += from_spans(spans, len(tags), labels.output_scheme) != tags
        out.append([index[t] for t in from_spans(spans, len(tags), labels.tag_scheme)])
    return out, repaired


def read_training_data(cfg: DataConfig, decoder: str) -> tuple[LabelledFile, Optional[LabelledFile],
                                                               Optional[LabelledFile], LabelInfo, RaggedInts,
                                                               Optional[tuple[RaggedInts, list[str]]]]:
    """Read and check train/dev/test (``cfg.word_tokenizer`` resolved), build the labels; returns
    ``(train, dev, test, labels, train tag ids, partial)`` with ``partial`` as :func:`known_ids`."""
    from ..evaluate import warn_unseen

    train = read_labelled(cfg.train, cfg, "data.train")
    check_annotated(train, cfg.unknown_tag)
    dev = read_labelled(cfg.dev, cfg, "data.dev") if cfg.dev else None
    test = read_labelled(cfg.test, cfg, "data.test") if cfg.test else None
    scheme = input_scheme(train, cfg)
    for data in (train, dev, test):
        if data is not None:
            check_scheme(data, scheme, cfg.unknown_tag)
    labels = build_labels(train, scheme, cfg)
    train_tags, repaired = tag_ids(train, labels, cfg.unknown_tag)
    partial = known_ids(train, labels, cfg.unknown_tag)
    if partial is not None and decoder == "softmax":
        raise UserError(f"partial labels ({cfg.unknown_tag!r} tags) train a CRF; set model.decoder: crf", cfg.train)
    if repaired:
        warn(f"repaired {repaired} sentences with illegal {scheme} sequences the conlleval way", train.path)
    for data in (dev, test):
        if data is not None:
            warn_unseen(data.gold, labels.types, scheme, data.path)
    return train, dev, test, labels, train_tags, partial


def warn_unknown_words(aligner: Any, train: LabelledFile, encoder: str, sample: int = 2000) -> None:
    """One warning when more than ``UNK_WARN_SHARE`` of the training words (its first ``sample`` sentences)
    hold the encoder tokenizer's unknown subword: the encoder cannot read the script, and training would
    quietly learn from words alone (Chinese under albert-base-v2's vocabulary: 95% of the characters)."""
    sentences = train.tokens[:sample]
    unknown, total, examples = unk_share(sentences, aligner.pieces(sentences), aligner.unk)
    if total and unknown > UNK_WARN_SHARE * total:
        warn(f"the encoder's tokenizer ({encoder}) reads {unknown:,} of {total:,} training words "
             f"({unknown / total:.0%}) as <unk>, e.g. {' '.join(examples)}: it does not cover this script; use an "
             "encoder (model.encoder.name_or_path) or tokenizer (model.encoder.tokenizer, `ner pretrain tokenizer` "
             "on your text) made for it", train.path)
