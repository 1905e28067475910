"""Atomic file and directory writes.

A crash, Ctrl-C or full disk in the middle of a write must never leave a truncated
model, vocabulary or prediction file behind: everything is written to a temporary
sibling first and renamed into place only once complete (a rename within one
directory is atomic on POSIX and Windows).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

from ner_toolkit.errors import PathLike, UserError

__all__ = ["atomic_write", "atomic_directory"]

_MODES = {"w", "wt", "wb"}


@contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (binary, ``encoding`` ignored).
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write supports modes {sorted(_MODES)}, not {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise UserError("cannot write: it is a directory; choose a file path", path)
    directory = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp", dir=directory)
    except OSError as e:
        raise UserError(f"cannot write: {_reason(directory, e)}; choose a writable path", path) from None
    tmp = Path(tmp_name)
    try:
        handle = os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with handle:
            # mkstemp creates the file 0600; a normal open() would honour the umask.
            os.chmod(tmp, _file_mode(target))
            yield handle
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        # BaseException too: a Ctrl-C must not leave a stray temporary file behind.
        _unlink_quietly(tmp)
        raise
    _fsync_directory(directory)


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory; on success it becomes ``path``.

    An existing directory at ``path`` is replaced only once the new one is complete
    (old renamed aside, new renamed in, old deleted). Missing parent directories are
    created. On failure the temporary directory is removed and ``path`` is untouched.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError("cannot write a directory here: a file of that name exists; choose another path", path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=parent))
    except OSError as e:
        raise UserError(f"cannot write: {_reason(parent, e)}; choose a writable path", path) from None
    try:
        # mkdtemp creates the directory 0700; a normal mkdir() would honour the umask.
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_directory(parent)


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``, moving an existing ``target`` aside first and deleting it last."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old", dir=target.parent))
    # mkdtemp reserved a unique name; the rename below needs it free again.
    old.rmdir()
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)  # put the previous directory back before reporting
        raise
    shutil.rmtree(old, ignore_errors=True)


def _reason(directory: Path, error: OSError) -> str:
    """A short, user-facing explanation of why ``directory`` cannot take a new file."""
    shown = os.fspath(directory) or "."
    if isinstance(error, FileNotFoundError):
        return f"directory {shown} does not exist"
    if isinstance(error, PermissionError):
        return f"directory {shown} is not writable"
    if isinstance(error, NotADirectoryError):
        return f"{shown} is not a directory"
    return f"{shown}: {error.strerror or error}"


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """Keep the permissions of a file being replaced; otherwise what open() would give."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort, as not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
