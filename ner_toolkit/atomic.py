"""Atomic file and directory writes, and resource faults as user errors.

A crash, Ctrl-C, SIGTERM or full disk in the middle of a write must never leave a truncated
model, vocabulary or prediction file behind: everything is written to a temporary
sibling first and renamed into place only once complete (a rename within one
directory is atomic on POSIX and Windows). A write that fails for a reason the user can
fix (no space left, file too large, read-only file system, permission denied) ends as a
``WriteFault`` (a ``UserError``) naming the final path and the reason, with the temporary
file removed and the previous complete file kept.

A character device or FIFO given as the target (``/dev/null``, a named pipe) is written
through as it is, never replaced by a regular file.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

from ner_toolkit.errors import PathLike, UserError, causes
from ner_toolkit.interrupts import uninterruptible

__all__ = ["atomic_write", "atomic_directory", "guarded_stdout", "WriteFault", "write_fault", "is_stream", "sibling"]

_MODES = {"w", "wt", "wb"}
# The faults of a write that the user can fix (and that say nothing about a bug in the toolkit).
FAULTS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
          errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
          errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded",
          errno.EIO: "input/output error"}
# Libraries that write from native code report the OS error in their message (safetensors: "os error 28").
_OS_ERROR = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


class WriteFault(UserError):
    """A write that failed for a resource reason (disk full, read-only, ...), naming the final path."""

    def __init__(self, reason: str, path: PathLike) -> None:
        super().__init__(f"cannot write: {reason}; free space or choose a writable path "
                         "(the previous file, if any, is kept)", path)
        self.reason = reason


def write_fault(exc: BaseException) -> Optional[str]:
    """The user-facing reason when ``exc`` (or what caused it) is a resource fault of a write, else None."""
    for current in causes(exc):
        if isinstance(current, WriteFault):
            return current.reason
        if isinstance(current, OSError) and current.errno in FAULTS:
            return FAULTS[current.errno]
        match = _OS_ERROR.search(str(current))
        if match and int(match.group(1) or match.group(2)) in FAULTS:
            return FAULTS[int(match.group(1) or match.group(2))]
    return None


def is_stream(path: PathLike) -> bool:
    """Whether ``path`` is an existing character device, FIFO or socket (written through, never replaced)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Recording:
    """A file handle that remembers what interrupted a write: torch.save's C++ writer turns a failed
    write (disk full) and a signal raised inside it (Ctrl-C, SIGTERM) alike into a bare "unexpected pos"
    RuntimeError, which hides the cause."""

    def __init__(self, handle: IO) -> None:
        self._handle = handle
        self.error: Optional[BaseException] = None

    def write(self, data: Any) -> Any:
        try:
            return self._handle.write(data)
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except BaseException as exc:
            self.error = exc
            raise

    def reraise_interrupt(self) -> None:
        """Re-raise a Ctrl-C or SIGTERM that a native writer swallowed, so that it still stops the process."""
        if self.error is not None and not isinstance(self.error, Exception):
            raise self.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> "_Recording":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._handle.close()  # a buffered handle writes its last block here
        except OSError as error:
            self.error = error
            raise

    def __iter__(self) -> Iterator:
        return iter(self._handle)


def _raise_as_fault(exc: BaseException, handle: Optional[_Recording], path: PathLike) -> None:
    """What a failed write re-raises instead of ``exc``: the Ctrl-C or SIGTERM a native writer swallowed, or a
    ``WriteFault`` naming ``path`` for a resource fault. Returns when ``exc`` itself should propagate."""
    if handle is not None:
        handle.reraise_interrupt()
    if isinstance(exc, WriteFault):
        return
    reason = write_fault(exc)
    if reason is None and handle is not None and handle.error is not None:
        reason = write_fault(handle.error)
    if reason is not None:
        raise WriteFault(reason, path) from None


STDOUT = "<stdout>"


@contextmanager
def guarded_stdout() -> Iterator[IO]:
    """Route ``sys.stdout`` through a recording handle for the block and flush it at the end, so that a
    fault of standard output itself (redirected to a full disk) becomes a ``WriteFault`` naming
    ``<stdout>``, while faults of other files pass unchanged and a closed pipe stays a BrokenPipeError."""
    real = sys.stdout
    handle = _Recording(real)
    sys.stdout = handle  # type: ignore[assignment]
    try:
        yield handle  # type: ignore[misc]
        handle.flush()
    except OSError as exc:
        reason = write_fault(exc)
        if reason is not None and exc is handle.error:
            raise WriteFault(reason, STDOUT) from None
        raise
    finally:
        sys.stdout = real


@contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"`` (binary, ``encoding`` ignored).
    On any exception the temporary file is removed and ``path`` is left untouched; a resource
    fault (disk full, ...) becomes a ``WriteFault`` naming ``path``. A device or FIFO at ``path``
    is opened and written directly.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write supports modes {sorted(_MODES)}, not {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise UserError("cannot write: it is a directory; choose a file path", path)
    if is_stream(target):
        yield from _write_through(target, mode, encoding)
        return
    directory = target.parent
    # The name is chosen, and its removal armed, before the file exists: a Ctrl-C or SIGTERM landing
    # right after the file is created (as mkstemp() returns, say) must not leave it behind.
    tmp = sibling(target, "tmp")
    handle: Optional[_Recording] = None
    try:
        handle = _Recording(_open_new(tmp, mode, encoding, path))
        with handle:
            # The file is created 0600; a normal open() would honour the umask.
            os.chmod(tmp, _file_mode(target))
            yield handle  # type: ignore[misc]
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        if isinstance(exc, _NotCreated):
            raise  # nothing of ours to remove (the name, if taken, is someone else's)
        # BaseException too: a Ctrl-C or SIGTERM must not leave a stray temporary file behind.
        _unlink_quietly(tmp)
        _raise_as_fault(exc, handle, path)
        raise
    _fsync_directory(directory)


def _write_through(target: Path, mode: str, encoding: Optional[str]) -> Iterator[IO]:
    handle: Optional[_Recording] = None
    try:
        handle = _Recording(open(target, mode, encoding=None if "b" in mode else encoding))
        with handle:
            yield handle  # type: ignore[misc]
    except BaseException as exc:
        _raise_as_fault(exc, handle, target)
        raise


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary sibling directory; on success it becomes ``path``.

    An existing directory at ``path`` is replaced only once the new one is complete
    (old renamed aside, new renamed in, old deleted). Missing parent directories are
    created. On failure the temporary directory is removed and ``path`` is untouched; a
    resource fault while filling it becomes a ``WriteFault`` naming ``path``.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError("cannot write a directory here: a file of that name exists; choose another path", path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write: {_reason(parent, e)}; choose a writable path", path) from None
    tmp = sibling(target, "tmp")  # named before it exists, as in atomic_write
    try:
        _try_create(lambda: os.mkdir(tmp, 0o777), path)  # mkdir honours the umask, as a user's would
        yield tmp
        _swap_in(tmp, target)
    except BaseException as exc:
        if isinstance(exc, _NotCreated):
            raise  # nothing of ours to remove
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_as_fault(exc, None, path)
        raise
    _fsync_directory(parent)


@uninterruptible
def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``, moving an existing ``target`` aside first and deleting it last.
    An interrupt waits for the swap (the CLI's handlers); under another's it still leaves either the old
    or the new directory at ``target`` and nothing aside."""
    old = sibling(target, "old")
    try:
        if target.exists():
            os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if os.path.lexists(old):
            if os.path.lexists(target):
                shutil.rmtree(old, ignore_errors=True)  # the new one is in place: finish the clean-up
            else:
                os.rename(old, target)  # put the previous directory back before reporting
        raise


def sibling(target: Path, tag: str) -> Path:
    """A fresh name beside ``target`` for a temporary file or directory: ``.NAME.TAG`` + 16 hex digits.

    With 64 random bits the name can be picked, and its clean-up armed, before anything is created; a
    clean-up that runs before creation removes nothing, and never another writer's file.
    """
    return target.parent / f".{target.name}.{tag}{secrets.token_hex(8)}"


class _NotCreated(UserError):
    """The temporary file or directory could not be created: there is nothing of ours to remove."""


def _try_create(create: Callable[[], Any], path: PathLike) -> Any:
    """``create()``, its OSError (no such directory, not writable, ...) as a user error naming ``path``."""
    try:
        return create()
    except OSError as e:
        raise _NotCreated(f"cannot write: {_reason(Path(path).parent, e)}; choose a writable path", path) from None


def _open_new(tmp: Path, mode: str, encoding: Optional[str], path: PathLike) -> IO:
    """Create ``tmp`` and open it in ``mode``; its own function so that atomic_write's one ``try``
    covers everything from the moment the name is chosen."""
    fd = _try_create(lambda: _create_file(tmp), path)
    # On failure io.open closes the descriptor it was given; closing it here too could close another's.
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)


def _create_file(path: Path) -> int:
    """Create ``path`` (0600) for writing; raises FileExistsError rather than open someone else's file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o600)


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
