"""What a run reads and what it writes, compared before any work starts: no output may destroy an input.

Every path is compared by its resolved form (``..`` spellings and symlinks count) *and* by
``(device, inode)`` (hard links count). A directory that is read whole (a model directory, an
encoder directory) clashes with any write inside it; a directory that a run fills or replaces
(``OUTPUT_DIR/model``, ``OUTPUT_DIR/checkpoints``) clashes with any input inside it. A clash is a
user error naming both paths, raised before anything is written.

``-`` is standard input or output and never clashes; a character device or FIFO given as an
output is written through (see ``atomic.is_stream``) and is not compared by inode.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .errors import PathLike, UserError

__all__ = ["Read", "Write", "check_no_clash", "same_file", "STDIO"]

STDIO = "-"
# A model directory is a few dozen files; a directory with more than this is not one (and walking it
# would be the slow part of a failed start).
_MAX_TREE_FILES = 10_000


@dataclass(frozen=True)
class Read:
    """An input: ``label`` says what it is in messages (``"the model directory"``, ``"data.train"``)."""

    label: str
    path: PathLike
    tree: bool = False  # a directory read whole: nothing may be written inside it


@dataclass(frozen=True)
class Write:
    """An output: a file, or with ``tree`` a directory the run fills or replaces."""

    label: str
    path: PathLike
    tree: bool = False


@dataclass(frozen=True)
class _Entry:
    label: str
    shown: str                          # the path as the user spelled it
    resolved: Path
    identity: Optional[tuple[int, int]]  # (st_dev, st_ino) of an existing regular file or directory
    tree: bool


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None  # devices and FIFOs are written through, never replaced
    return st.st_dev, st.st_ino


def _entry(label: str, path: PathLike, tree: bool) -> Optional[_Entry]:
    if os.fspath(path) == STDIO:
        return None
    p = Path(path)
    return _Entry(label, os.fspath(path), p.resolve(strict=False), _identity(p), tree)


def _read_entries(reads: Iterable[Read]) -> list[_Entry]:
    """Each input, and every file inside an input read whole."""
    out: list[_Entry] = []
    for read in reads:
        entry = _entry(read.label, read.path, read.tree)
        if entry is None:
            continue
        out.append(entry)
        if read.tree and Path(read.path).is_dir():
            count = 0
            for root, _, files in os.walk(read.path):
                for name in files:
                    count += 1
                    if count > _MAX_TREE_FILES:
                        break
                    inner = _entry(f"a file of {read.label}", Path(root) / name, False)
                    if inner is not None:
                        out.append(inner)
    return out


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _clash(write: _Entry, read: _Entry) -> bool:
    if write.identity is not None and write.identity == read.identity:
        return True
    if write.resolved == read.resolved:
        return True
    if read.tree and _inside(write.resolved, read.resolved):
        return True
    return write.tree and _inside(read.resolved, write.resolved)


def _message(write: _Entry, read: _Entry) -> str:
    if read.tree and write.resolved != read.resolved and _inside(write.resolved, read.resolved):
        return f"{write.label} would write inside {read.label} {read.shown}"
    if write.tree and read.resolved != write.resolved and _inside(read.resolved, write.resolved):
        return f"{write.label} would replace {read.label} {read.shown}, which lies inside it"
    return f"{write.label} would overwrite {read.label} {read.shown}"


def check_no_clash(reads: Iterable[Read], writes: Iterable[Write]) -> None:
    """Raise a UserError naming both paths if any write would replace, or land inside, an input,
    or if two writes are the same path. Call before any output is created."""
    read_entries = _read_entries(reads)
    write_entries = [e for e in (_entry(w.label, w.path, w.tree) for w in writes) if e is not None]
    for write in write_entries:
        for read in read_entries:
            if _clash(write, read):
                raise UserError(f"{_message(write, read)}; choose another output path (nothing was written)",
                                write.shown)
    for i, first in enumerate(write_entries):
        for second in write_entries[i + 1:]:
            if first.resolved == second.resolved or (first.identity is not None and first.identity == second.identity):
                raise UserError(f"{first.label} and {second.label} ({second.shown}) are the same file; "
                                "give them different paths", first.shown)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` are one existing file (by resolved path or by device and inode)."""
    first, second = _entry("", a, False), _entry("", b, False)
    if first is None or second is None or not Path(a).exists():
        return False
    return first.resolved == second.resolved or (first.identity is not None and first.identity == second.identity)
