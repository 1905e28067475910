"""Ctrl-C and SIGTERM as exceptions, held back inside the few steps that must not be cut in two.

CPython runs a signal handler in the main thread at its next check point (a call, a loop's back edge),
which can fall between any two steps of a commit (move the old model aside, move the new one in,
delete the old) or of a clean-up (release the lock, remove the directories made for it). A function
marked ``@uninterruptible`` holds an interrupt that lands inside it and raises it as it returns. As in
Trio, the handler decides by the frames it interrupted; everything else is interrupted where it is. Only the handlers ``install()`` sets (the CLI's) hold interrupts back; a
library caller keeps Python's own.
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Optional, TypeVar

__all__ = ["Terminated", "install", "uninterruptible", "handler"]

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that every pending ``finally`` (temporary files of the
    write in progress, the output directory's lock) runs before the process exits with 143."""


_HOLDING: set = set()  # code objects whose frames hold interrupts back (the wrapper's)
_pending: Optional[int] = None  # the signal held back, raised when the marked function returns


def _held(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` runs inside an uninterruptible function (its own or a caller's frame is one)."""
    while frame is not None:
        if frame.f_code in _HOLDING:
            return True
        frame = frame.f_back
    return False


def _raise_for(signum: int) -> None:
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def handler(signum: int, frame: Optional[FrameType]) -> None:
    """The SIGINT / SIGTERM handler ``install()`` sets: raise, or hold inside an uninterruptible step."""
    global _pending
    if _held(frame):
        _pending = signum
        return
    _raise_for(signum)


def _deliver(caller: Optional[FrameType]) -> None:
    """Raise the held interrupt, unless ``caller`` is itself inside an outer uninterruptible step."""
    global _pending
    if _pending is None or _held(caller):
        return
    signum, _pending = _pending, None
    _raise_for(signum)


def uninterruptible(fn: F) -> F:
    """Run ``fn`` with Ctrl-C and SIGTERM held back; one that arrived is raised as it returns (or
    raises). Keep such functions short: a held interrupt waits for them."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            if _pending is not None:  # no check point between this test and the return
                _deliver(sys._getframe(1))
    return wrapper  # type: ignore[return-value]


# Every wrapper shares one code object: marking it marks them all.
_HOLDING.add(uninterruptible(lambda: None).__code__)


def install() -> Callable[[], None]:
    """Set ``handler`` for SIGINT and SIGTERM (main thread only); returns what puts the previous ones back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers belong to the main thread
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            if old is not None:  # None: the previous handler was not set from Python
                signal.signal(sig, old)
    return restore
