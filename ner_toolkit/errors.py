"""User-facing errors.

Every problem the user can fix (bad file, bad config, missing path) is raised as
``UserError``; the CLI prints its one-line ``str()`` and exits with code 2.
Anything else is a bug and keeps its traceback (exit 1).
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class UserError(Exception):
    """An error the user can fix, rendered as ``error: PATH:LINE: message``."""

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        # One line, always: the CLI contract is a single `error: ...` line.
        # splitlines: \r, \x1c-\x1e, \u2028 and friends end a line on a terminal too (a path may hold them).
        return "error: " + " ".join((where + self.message).splitlines())


def warn(message: str, path: Optional[PathLike] = None, line: Optional[int] = None) -> None:
    """Print a one-line warning to stderr in the same PATH:LINE format as errors."""
    import sys

    where = ""
    if path is not None:
        where = f"{os.fspath(path)}:{line}: " if line is not None else f"{os.fspath(path)}: "
    print("warning: " + " ".join(f"{where}{message}".splitlines()), file=sys.stderr)


def causes(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (``__cause__``, else ``__context__``), at
    most ``limit`` deep: where a library's error hides the fault or the interrupt behind it."""
    current: Optional[BaseException] = exc
    for _ in range(limit):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__
