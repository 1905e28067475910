"""Labelled CoNLL files -> validated sentences, the label set, and internal tag ids."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig
from ..data.conll import Sentence, read_conll
from ..data.schemes import SchemeError, convert, detect_scheme, labels_for_types, normalize_scheme, repair, tag_problem, to_spans
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

    def lines(self, index: int) -> range:
        return range(self.first_lines[index], self.first_lines[index] + len(self.tokens[index]))


def read_labelled(path: str, cfg: DataConfig, key: str) -> LabelledFile:
    """Read ``path`` (the file of config key ``key``) and check every tag, naming the first bad line."""
    data = LabelledFile(path, [], [], [])
    for item in read_conll(path, cfg.token_column, cfg.label_column):
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
    for i, tags in enumerate(data.gold):
        for tag, line in zip(tags, data.lines(i)):
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
    types = {t for tags in train.gold for t, _, _ in spans_or_error(tags, scheme, train.path)}
    return LabelInfo(labels_for_types(types, internal), internal, scheme)


def spans_or_error(tags: list[str], scheme: str, path: str) -> list:
    try:
        return to_spans(tags, scheme)
    except SchemeError as exc:
        raise UserError(f"{exc} (the file's tags do not fit the {scheme} scheme; set data.input_scheme)", path) from None


def tag_ids(data: LabelledFile, labels: LabelInfo) -> tuple[list[list[int]], int]:
    """Internal label ids per sentence (illegal sequences repaired the conlleval way) and the repair count."""
    index = {label: i for i, label in enumerate(labels.labels)}
    out, repaired = [], 0
    for i, tags in enumerate(data.gold):
        try:
            fixed, changed = repair(tags, labels.output_scheme)
        except SchemeError as exc:
            raise UserError(f"{exc}; set data.input_scheme", data.path, data.first_lines[i]) from None
        repaired += changed
        out.append([index[t] for t in convert(fixed, labels.output_scheme, labels.tag_scheme)])
    return out, repaired

