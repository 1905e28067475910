"""Streaming CoNLL reader and writer.

A CoNLL file is a sequence of token lines (one token per line, columns separated by
spaces or tabs) grouped into sentences by blank lines. ``-DOCSTART-`` lines mark
document boundaries; a line starting with ``#`` is a comment (MultiCoNER's ``# id ...``,
CoNLL-U's ``# text = ...``) unless it reads as a token line whose token is ``#`` (the
rule is ``data.sniff.comment_line``: the file's column count and, where the label column
holds tags, a tag there). The reader yields every line back to the caller, either inside
a ``Sentence`` or as a ``Passthrough``, so a writer can reproduce the file exactly and
only append columns. It knows nothing of tensors and never holds more than one
sentence in memory (two at the start, to tell raw text from CoNLL: ``data.sniff.text_like``).
"""
from __future__ import annotations

import itertools
import os
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import BinaryIO, ContextManager, Iterator, Optional, Sequence, Union

from ner_toolkit.data.sniff import all_tags, comment_line, looks_like_tag, text_like
from ner_toolkit.errors import PathLike, UserError, warn

__all__ = [
    "Sentence",
    "Passthrough",
    "Item",
    "is_docstart",
    "document_ids",
    "read_conll",
    "check_text_file",
    "read_sentences",
    "refuse_text",
    "format_sentence",
    "format_passthrough",
]

DOCSTART = "-DOCSTART-"
# The first line of a predict.py output whose columns are not "inputs + prediction" (formats.py writes it):
# a passthrough line for every reader, the column map for ``ner evaluate``.
COLUMNS_HEADER = "# ner_toolkit columns:"
STDIN = "-"  # as a path: read standard input
_SNIFF_BYTES = 8192
_BOM = b"\xef\xbb\xbf"
# Only ASCII whitespace separates columns (what `bytes.split()` and conlleval's Perl
# `split` use): a no-break or ideographic space is a character of some corpora's tokens.
_FIELD = re.compile(r"[^ \t\n\r\f\v]+")
_TRAILING_BLANKS = " \t\r\f\v"
_AHEAD = 10_000  # lines read ahead at most for the column count of a file that starts with empty labels


@dataclass
class Sentence:
    """One sentence: its token lines, verbatim, plus the columns parsed from them."""

    tokens: list[str]
    labels: Optional[list[str]]
    columns: list[list[str]]
    lines: list[str]
    line_numbers: list[int]
    separator: str

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Passthrough:
    """A line that belongs to no sentence (blank, whitespace-only, ``-DOCSTART-`` or a ``#`` comment), verbatim."""

    line: str
    line_number: int


Item = Union[Sentence, Passthrough]


def is_docstart(item: Item) -> bool:
    """Whether ``item`` is a ``-DOCSTART-`` line (a document boundary)."""
    return isinstance(item, Passthrough) and item.line.split()[:1] == [DOCSTART]


def document_ids(items: Sequence[Item]) -> list[int]:
    """The document number of each sentence among ``items``: it goes up at every ``-DOCSTART-``."""
    out, doc = [], 0
    for item in items:
        if is_docstart(item):
            doc += 1
        elif isinstance(item, Sentence):
            out.append(doc)
    return out


def read_conll(path: PathLike, token_column: int = 0, label_column: int = -1,
               missing_label: Optional[str] = None) -> Iterator[Item]:
    """Yield the sentences and passthrough lines of ``path`` in file order.

    A sentence is yielded before the blank or ``-DOCSTART-`` line that ends it.
    ``labels`` is None when the file has a single column. A missing or unreadable
    path is reported now, not at the first ``next()``. ``-`` reads standard input.
    ``missing_label``: when the label is the last column, a token line whose label is empty (one
    column short, e.g. ``word<TAB>``) gets this label (partial annotation) instead of being an error;
    the first token line too, when it ends with a tab and a later line shows the full column count.
    """
    _check_readable(path)
    return _iter_items(path, token_column, label_column, missing_label)


def read_sentences(path: PathLike, token_column: int = 0, label_column: int = -1) -> list[Sentence]:
    """All sentences of ``path`` (passthrough lines dropped)."""
    return [item for item in read_conll(path, token_column, label_column) if isinstance(item, Sentence)]


def format_sentence(sentence: Sentence, extra_columns: Sequence[Sequence[str]]) -> str:
    """The sentence's lines with ``extra_columns[c][i]`` appended to token ``i``, newline-terminated.

    With no extra columns the raw lines come back verbatim. When appending, trailing
    blanks of a raw line are dropped so no empty column appears before the new one.
    """
    n = len(sentence.lines)
    for c, column in enumerate(extra_columns):
        if len(column) != n:
            raise ValueError(f"extra column {c} has {len(column)} values for a sentence of {n} tokens")
    if not extra_columns:
        return "\n".join(sentence.lines) + "\n"
    sep = sentence.separator
    out = []
    for i, line in enumerate(sentence.lines):
        out.append(line.rstrip(_TRAILING_BLANKS) + "".join(sep + column[i] for column in extra_columns))
    return "\n".join(out) + "\n"


def format_passthrough(item: Passthrough) -> str:
    """The passthrough line, newline-terminated."""
    return item.line + "\n"


def _check_readable(path: PathLike) -> None:
    """Raise a UserError unless ``path`` is ``-`` (standard input) or an existing, readable file or pipe."""
    if os.fspath(path) == STDIN:
        return
    if os.path.isdir(path):
        raise UserError("is a directory, not a CoNLL file; pass the path of a file", path)
    if not os.path.exists(path):
        raise UserError("no such file; check the path", path)
    if not os.access(path, os.R_OK):
        raise UserError("cannot read the file (permission denied); fix its permissions", path)


def check_text_file(path: PathLike) -> None:
    """Fail now, before any output exists, on an unreadable file or a binary one (NUL bytes in its first
    block: an archive, a model file, an image). Pipes and standard input cannot be peeked at and pass."""
    _check_readable(path)
    if os.fspath(path) == STDIN or not os.path.isfile(path):
        return
    with _open(path) as handle:
        try:
            head = handle.read(_SNIFF_BYTES)
        except OSError as e:
            raise UserError(f"cannot read the file ({e.strerror}); check the path and its permissions", path) from None
    if b"\0" in head:
        raise UserError("is a binary file (it holds NUL bytes), not CoNLL text; remove it from the inputs", path)


def _open(path: PathLike) -> ContextManager[BinaryIO]:
    if os.fspath(path) == STDIN:
        return nullcontext(sys.stdin.buffer)  # not closed after reading: it belongs to the process
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError("no such file; check the path", path) from None
    except IsADirectoryError:
        raise UserError("is a directory, not a CoNLL file; pass the path of a file", path) from None
    except OSError as e:
        raise UserError(f"cannot read the file ({e.strerror}); check the path and its permissions", path) from None


def _iter_items(path: PathLike, token_column: int, label_column: int,
                missing_label: Optional[str] = None) -> Iterator[Item]:
    with _open(path) as handle:
        n_columns = 0  # fixed by the first token line
        first_line = 0
        separator = " "
        tok_i = lab_i = 0
        lines: list[str] = []
        columns: list[list[str]] = []
        numbers: list[int] = []

        def flush() -> Sentence:
            return Sentence(
                tokens=[cols[tok_i] for cols in columns],
                labels=None if n_columns == 1 else [cols[lab_i] for cols in columns],
                columns=columns,
                lines=lines,
                line_numbers=numbers,
                separator=separator,
            )

        numbered: Iterator[tuple[int, str]] = enumerate(_decoded_lines(handle, path), start=1)
        # The first token line that does not start with '#' (with missing_label: nor end with a tab), read
        # ahead: its column count completes a first ``word<TAB>`` line and tells comments from '#' tokens.
        template, numbered = _columns_ahead(numbered, missing_label is not None)
        full = len(template)
        lab_t = label_column % full if full > 1 and -full <= label_column < full else None
        tags = lab_t is not None and looks_like_tag(template[lab_t])
        for number, text in numbered:
            fields = _FIELD.findall(text)
            if (not fields or fields[0] == DOCSTART or _is_header(number, text)
                    or (text[:1] == "#" and comment_line(fields, n_columns or full, lab_t, tags))):
                if lines:
                    yield flush()
                    lines, columns, numbers = [], [], []
                yield Passthrough(text, number)
                continue
            if n_columns == 0:
                if (missing_label is not None and len(fields) == full - 1 and _empty_last(text)
                        and label_column % full == full - 1 and token_column % full != full - 1):
                    fields.append(missing_label)  # word<TAB> first: the count is the full lines'
                n_columns, first_line = len(fields), number
                separator = "\t" if "\t" in text else " "
                tok_i = _resolve_column(token_column, "token", n_columns, path, number)
                lab_i = _resolve_column(label_column, "label", n_columns, path, number) if n_columns > 1 else 0
            elif (missing_label is not None and len(fields) == n_columns - 1 and lab_i == n_columns - 1
                  and tok_i < n_columns - 1):
                fields.append(missing_label)
            elif len(fields) != n_columns:
                hint = (f" (an empty label on line {first_line}? write it as word<TAB>)"
                        if missing_label is not None and len(fields) == n_columns + 1 else "")
                raise UserError(
                    f"expected {n_columns} columns as on line {first_line}, found {len(fields)}{hint}; "
                    "give every token line the same columns (a token may not contain spaces); for raw text, "
                    "one document per line, use predict.py --input-format text",
                    path,
                    number,
                )
            lines.append(text)
            columns.append(fields)
            numbers.append(number)
        if lines:
            yield flush()


def _is_header(number: int, text: str) -> bool:
    """The first line is predict.py's column header (a passthrough line)."""
    return number == 1 and text.startswith(COLUMNS_HEADER)


def _empty_last(text: str) -> bool:
    """The line ends with a tab (blanks after it aside): its last column is there, and empty."""
    return text.rstrip(" \r\f\v").endswith("\t")


def _columns_ahead(numbered: Iterator[tuple[int, str]],
                   tabs: bool) -> tuple[list[str], Iterator[tuple[int, str]]]:
    """The fields of the first token line that does not start with '#' (with ``tabs``: nor end with a tab,
    else the widest of the lines read, ``_AHEAD`` at most), and the lines again, those read ahead
    included: a first line ``word<TAB>`` has an empty label, which only a later line's count can tell from
    a file of one column, and a '#' line is a comment or a token by the file's columns."""
    ahead: list[tuple[int, str]] = []
    found: list[str] = []
    hashed: list[str] = []  # the first '#' line: the template of a file of no other token line
    for number, text in numbered:
        ahead.append((number, text))
        fields = _FIELD.findall(text)
        if fields and text[:1] == "#" and not hashed and not _is_header(number, text):
            hashed = fields
        elif fields and fields[0] != DOCSTART and text[:1] != "#":
            if not (tabs and _empty_last(text)):
                found = fields
                break
            found = max(found, fields, key=len)  # every line so far ends with a tab: the widest is complete
        if len(ahead) >= _AHEAD:
            break
    return found or hashed, itertools.chain(ahead, numbered)


def refuse_text(items: Iterator[Item], path: PathLike,
                fix: str = "for raw text (one document per line) pass --input-format text",
                tag_tokens: bool = True) -> Iterator[Item]:
    """``items`` of ``read_conll``, unless the file starts as raw text: its first sentence is one text-like
    line (``data.sniff.text_like``) and so is the next sentence, or there is none. Only the items up to the
    second sentence are held (``_AHEAD`` at most). For callers that expect real CoNLL (prediction, training
    data), not for the reader itself, which reads any columns. ``fix``: what to do instead, for the message.
    With ``tag_tokens``, tokens that are all tags (a label-first file read tokens-first) are one warning."""
    held: list[Item] = []
    sentences: list[Sentence] = []
    for item in items:
        held.append(item)
        if isinstance(item, Sentence):
            sentences.append(item)
        if len(sentences) == 2 or len(held) >= _AHEAD:
            break
    if sentences and all(len(s.lines) == 1 and text_like(s.columns[0]) for s in sentences) and len(held) < _AHEAD:
        first = sentences[0]
        raise UserError(
            f"reads as raw text, not CoNLL: line {first.line_numbers[0]} is one token line of "
            f"{len(first.columns[0])} column(s) ({first.lines[0][:30].strip()!r}...) that makes a whole sentence; "
            f"{fix}; CoNLL has one token per line, its columns (tag last) separated by spaces or tabs",
            path, first.line_numbers[0])
    tokens = [t for s in sentences for t in s.tokens]
    if tag_tokens and tokens and all_tags(tokens):
        shown = ", ".join(dict.fromkeys(tokens[:20]))
        warn(f"the tokens read from this file are all tags ({shown}): a label-first file? the tokens must be in "
             "the token column (data.token_column, the model's for prediction)", path, sentences[0].line_numbers[0])
    yield from held
    yield from items


def _decoded_lines(handle: BinaryIO, path: PathLike) -> Iterator[str]:
    """Lines of a binary file as text: UTF-8, BOM stripped, LF or CRLF terminator removed."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-save the file as UTF-8",
                path,
                number,
            ) from None


def _resolve_column(index: int, what: str, n_columns: int, path: PathLike, line: int) -> int:
    """Turn a possibly negative column index into 0..n-1, or explain why it cannot be used."""
    if -n_columns <= index < n_columns:
        return index % n_columns
    raise UserError(
        f"{what} column {index} does not exist in a line of {n_columns} column(s); "
        f"choose a {what} column from {-n_columns} to {n_columns - 1}",
        path,
        line,
    )
