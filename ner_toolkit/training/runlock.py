"""One run per output directory: ``OUTPUT_DIR/.lock`` holds the writer's PID and host.

Created with O_CREAT|O_EXCL, so two runs racing for one directory cannot both win. A lock left by a
process that no longer exists on this host is taken over with a warning; one held by a live process
(or by another host, which we cannot probe) is a user error.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..atomic import sibling
from ..errors import UserError, warn
from ..interrupts import uninterruptible

LOCK_NAME = ".lock"


def _holder(path: Path) -> tuple[Optional[int], str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").split()
    except FileNotFoundError:
        return None, ""
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, text[1] if len(text) > 1 else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _missing(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist yet, deepest first."""
    out = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        out.append(d)
    return out


@uninterruptible
def acquire(directory: Path) -> Path:
    """Take ``directory/.lock`` for this process; raises UserError while another live run holds it.
    An interrupt waits for it (it makes directories and files that the caller's clean-up must find)."""
    if directory.exists() and not directory.is_dir():
        raise UserError("the output directory is a file; choose another --output-dir", directory)
    path = directory / LOCK_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory ({exc.strerror}); choose another --output-dir",
                        directory) from None
    host = socket.gethostname()
    for _ in range(3):  # a stale lock removed between our attempts: try again
        try:
            _create_with(path, f"{os.getpid()} {host}\n")
        except FileExistsError:
            pid, holder_host = _holder(path)
            if pid is not None and (holder_host not in ("", host) or _alive(pid)):
                where = f" on {holder_host}" if holder_host not in ("", host) else ""
                raise UserError(f"another train.py (pid {pid}{where}) is writing to this output directory; "
                                "wait for it or choose another --output-dir", path)
            warn(f"taking over a stale lock (pid {pid} is no longer running)", path)
            path.unlink(missing_ok=True)
            continue
        return path
    raise UserError("could not take the lock; another run keeps recreating it", path)


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, or raise FileExistsError. The text is written to a temporary
    file first and hard-linked into place, so that the lock never exists empty: one interrupted
    between its creation and its first write would name no process, and no run could tell it is
    ours to remove. File systems without hard links fall back to O_EXCL and a write."""
    tmp = sibling(path, "tmp")  # named before it exists, so that an interrupt anywhere removes it
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
    finally:
        tmp.unlink(missing_ok=True)


def release(path: Path) -> None:
    try:
        pid, _ = _holder(path)
    except OSError:
        return  # no lock of ours can be there (its directory is a file, or it cannot be read)
    if pid == os.getpid():  # never remove a lock another run took over
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(directory: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock for the ``with`` body, released on success, errors and KeyboardInterrupt alike.
    Directories made only to hold the lock are removed again when the run wrote nothing into them
    (a run that fails its checks leaves nothing behind)."""
    if not enabled:
        yield
        return
    created = _missing(directory)
    path = directory / LOCK_NAME
    try:
        # Inside the try: a lock taken just before an interrupt is released too (release() removes
        # only a lock naming this process).
        acquire(directory)
        yield
    finally:
        _clean_up(path, created)


@uninterruptible
def _clean_up(path: Path, created: list[Path]) -> None:
    """Release the lock and remove the directories made for it while still empty; an interrupt waits."""
    release(path)
    for d in created:
        try:
            d.rmdir()  # only succeeds when empty
        except FileNotFoundError:
            continue  # an interrupt came before mkdir() got this deep
        except OSError:
            break
