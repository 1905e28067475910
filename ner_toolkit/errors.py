"""User-facing errors and messages.

Every problem the user can fix (bad file, bad config, missing path) is raised as
``UserError``; the CLI prints its one-line ``str()`` and exits with code 2.
Anything else is a bug and keeps its traceback (exit 1).

Warnings, notes and progress lines go through ``logging``, on the ``ner_toolkit.*`` logger of the module
that says them: a library user silences or redirects them as any other library's (``logging.getLogger(
"ner_toolkit").setLevel(logging.ERROR)``); with no logging configured Python shows warnings, not
progress. The commands install ``one_line_logging``: every record one line on stderr, a warning as
``warning: ...``, progress as its text, as they always printed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
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
    """Log a one-line warning in the same PATH:LINE format as errors, on the calling module's logger
    (``ner_toolkit.training.dataset``, ...), which the CLI shows as ``warning: PATH:LINE: message``."""
    where = ""
    if path is not None:
        where = f"{os.fspath(path)}:{line}: " if line is not None else f"{os.fspath(path)}: "
    caller = sys._getframe(1).f_globals.get("__name__", "")
    name = caller if caller.startswith("ner_toolkit.") else "ner_toolkit"
    logging.getLogger(name).warning(" ".join(f"{where}{message}".splitlines()), stacklevel=2)


class OneLineHandler(logging.Handler):
    """A record as the commands print it on stderr: one line each (a report keeps its own lines),
    ``warning: `` / ``error: `` before a warning / error, progress and notes as their text."""

    PREFIXES = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.PREFIXES.get(record.levelno, "") + record.getMessage()
            stream = sys.stderr  # looked up per record: whatever stderr is now (a redirection, a capture)
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


@contextlib.contextmanager
def one_line_logging(level: int = logging.INFO) -> Iterator[OneLineHandler]:
    """While it is entered, the ``ner_toolkit`` loggers print on stderr through a ``OneLineHandler`` from
    ``level`` up, and only there (not also through a handler of the root logger); restored after."""
    logger = logging.getLogger("ner_toolkit")
    handler = OneLineHandler()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def causes(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (``__cause__``, else ``__context__``), at
    most ``limit`` deep: where a library's error hides the fault or the interrupt behind it."""
    current: Optional[BaseException] = exc
    for _ in range(limit):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__
