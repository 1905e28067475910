"""Plain UTF-8 text files as documents (one per line, or one per file), and the byte-level reading
that the text and JSONL readers share: ``-`` is standard input, a BOM is dropped, invalid UTF-8 and
NUL bytes are user errors naming the line."""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from typing import BinaryIO, ContextManager, Iterator

from ner_toolkit.data.text import Document, get_tokenizer
from ner_toolkit.errors import PathLike, UserError

STDIN = "-"
BOM = b"\xef\xbb\xbf"


def check_readable(path: PathLike, kind: str) -> None:
    """Fail at the call, not at the first ``next()``, on a path that cannot be read."""
    if os.fspath(path) != STDIN:
        problem = (f"is a directory, not a {kind} file; pass the path of a file" if os.path.isdir(path)
                   else "no such file; check the path" if not os.path.exists(path)
                   else "cannot read the file (permission denied); fix its permissions"
                   if not os.access(path, os.R_OK) else None)
        if problem:
            raise UserError(problem, path)


def open_binary(path: PathLike) -> ContextManager[BinaryIO]:
    if os.fspath(path) == STDIN:
        return nullcontext(sys.stdin.buffer)  # not closed after reading: it belongs to the process
    try:
        return open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read the file ({e.strerror}); check the path and its permissions", path) from None


def decode(raw: bytes, path: PathLike, line: int, kind: str) -> str:
    nul = raw.find(b"\0")  # line: of the bad byte, when a whole file is decoded at once
    if nul >= 0:
        raise UserError(f"holds NUL bytes (a binary file?), not {kind} text; pass a UTF-8 text file", path,
                        line + raw.count(b"\n", 0, nul))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        line += raw.count(b"\n", 0, e.start)
        raise UserError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); re-save the file as UTF-8",
                        path, line) from None


def decoded_lines(handle: BinaryIO, path: PathLike, kind: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line: UTF-8, BOM stripped, LF or CRLF terminator removed."""
    for number, raw in enumerate(handle, start=1):
        raw = raw.removeprefix(BOM) if number == 1 else raw
        yield number, decode(raw.removesuffix(b"\n").removesuffix(b"\r"), path, number, kind)


def read_text(path: PathLike, tokenizer: str, document_per_file: bool = False) -> Iterator[Document]:
    """Documents of a plain UTF-8 text file: one per non-blank line (``line`` its 1-based number;
    blank and whitespace-only lines are skipped), or with ``document_per_file`` the whole file as one
    document (its text verbatim, CRLF included, less a BOM; nothing for a blank file). ``-`` is stdin."""
    get_tokenizer(tokenizer)
    check_readable(path, "text")
    return _iter_text(path, tokenizer, document_per_file)


def _iter_text(path: PathLike, tokenizer: str, document_per_file: bool) -> Iterator[Document]:
    with open_binary(path) as handle:
        if document_per_file:
            text = decode(handle.read().removeprefix(BOM), path, 1, "plain")
            if text.strip():
                yield Document.from_text(text, tokenizer, line=1)
            return
        for number, text in decoded_lines(handle, path, "plain"):
            if text.strip():
                yield Document.from_text(text, tokenizer, line=number)
