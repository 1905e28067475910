"""Labelled CoNLL files -> validated sentences, the label set, and internal tag ids."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig
from ..data.conll import Sentence, is_docstart, read_conll
from ..data.schemes import SchemeError, detect_scheme, from_spans, labels_for_types, normalize_scheme, tag_problem, to_spans
from ..errors import UserError
from ..model.directory import LabelInfo

INTERNAL_SCHEMES = ("BIO", "BIOES")


@dataclass
class LabelledFile:
    """Tokens and gold tags of a labelled file. Only what training needs is kept (not the raw lines
    and other columns), which halves the memory of a large corpus."""

    path: str
    tokens: list[list[str]]
    gold: list[list[str]]
    first_lines: list[int]  # line number of each sentence's first token; its lines are consecutive
    documents: list[int]  # document number of each sentence (counts -DOCSTART- lines)

    def lines(self, index: int) -> range:
        return range(self.first_lines[index], self.first_lines[index] + len(self.tokens[index]))


def read_labelled(path: str, cfg: DataConfig, key: str) -> LabelledFile:
    """Read ``path`` (the file of config key ``key``) and check every tag, naming the first bad line."""
    data = LabelledFile(path, [], [], [], [])
    document = 0
    for item in read_conll(path, cfg.token_column, cfg.label_column):
        if is_docstart(item):
            document += 1
        if not isinstance(item, Sentence):
            continue
        if item.labels is None:
            raise UserError(f"`{key}` needs a label column, but the file has a single column", path,
                            item.line_numbers[0])
        for tag, line in zip(item.labels, item.line_numbers):
            problem = tag_problem(tag)
            if problem:
                raise UserError(problem, path, line)
        data.tokens.append(item.tokens)
        data.gold.append(item.labels)
        data.first_lines.append(item.line_numbers[0])
        data.documents.append(document)
    if not data.tokens:
        raise UserError(f"no sentences found (`{key}` must be a CoNLL file with token lines)", path)
    return data


def input_scheme(train: LabelledFile, cfg: DataConfig) -> str:
    """The scheme of the data files: configured, or detected from the training file."""
    try:
        if cfg.input_scheme != "auto":
            return normalize_scheme(cfg.input_scheme)
        return detect_scheme(train.gold)
    except SchemeError as exc:
        raise UserError(str(exc), train.path if cfg.input_scheme == "auto" else "config") from None


def check_scheme(data: LabelledFile, scheme: str) -> None:
    """Every tag of ``data`` must belong to ``scheme`` (e.g. no S-PER in an IOB1 corpus); names the line."""
    first_line: dict[str, int] = {}
    for i, tags in enumerate(data.gold):
        for tag, line in zip(tags, data.lines(i)):
            first_line.setdefault(tag, line)
    for tag, line in first_line.items():  # each distinct tag once, not once per token
        try:
            to_spans([tag], scheme)
        except SchemeError as exc:
            raise UserError(f"{exc} (the training file is {scheme}; use one scheme for all files or set "
                            f"data.input_scheme)", data.path, line) from None


def build_labels(train: LabelledFile, scheme: str, cfg: DataConfig) -> LabelInfo:
    """Every internal label of every training type (all prefixes, seen or not), ``O`` first."""
    try:
        internal = normalize_scheme(cfg.tag_scheme)
    except SchemeError as exc:
        raise UserError(f"`data.tag_scheme`: {exc}", "config") from None
    if internal not in INTERNAL_SCHEMES:
        raise UserError(f"`data.tag_scheme` must be BIO or BIOES, got {cfg.tag_scheme!r}", "config")
    # check_scheme has run: every tag fits the scheme.
    types = {t for tags in train.gold for t, _, _ in to_spans(tags, scheme)}
    return LabelInfo(labels_for_types(types, internal), internal, scheme)


def tag_ids(data: LabelledFile, labels: LabelInfo) -> tuple[list[list[int]], int]:
    """Internal label ids per sentence (illegal sequences read the conlleval way) and how many were repaired."""
    index = {label: i for i, label in enumerate(labels.labels)}
    out, repaired = [], 0
    for tags in data.gold:
        spans = to_spans(tags, labels.output_scheme)  # conlleval reading: repairs illegal sequences
        repaired += from_spans(spans, len(tags), labels.output_scheme) != tags
        out.append([index[t] for t in from_spans(spans, len(tags), labels.tag_scheme)])
    return out, repaired
