"""The guard every command runs under, in one place: a user error is one ``error: PATH[:LINE]: ...`` line
and exit 2 (never a traceback), Ctrl-C / SIGTERM end as 130 / 143 with one word, a reader that went away
(``... | head``) ends quietly with stdout silenced, the toolkit's Python warnings are one ``warning:`` line;
anything else is a bug and keeps its traceback. ``exit_process`` ends a console script without the
interpreter's teardown of torch.

Imported by the command table (``cli/__init__.py``), never by a command module.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import Any, Callable, NoReturn, Optional, Sequence

from ..errors import UserError, causes, one_line_logging
from ..interrupts import Terminated
from ..interrupts import install as install_interrupt_handlers

__all__ = ["guard", "exit_process"]


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """The toolkit's own Python warnings (e.g. the CRF package's, which cannot import ``errors``) as one
    ``warning: ...`` line like every other; anything else goes to ``show`` (Python's format)."""
    def show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                     line: Optional[str] = None) -> None:
        text = str(message)
        if text.startswith("ner_toolkit: "):
            print(f"warning: {text[len('ner_toolkit: '):]}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def guard(main: Callable[[list[str]], int], argv: Optional[Sequence[str]]) -> int:
    """Run ``main`` on ``argv`` (default: ``sys.argv[1:]``) and return the process's exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    restore_handlers = install_interrupt_handlers()
    from ..atomic import guarded_stdout

    try:
        # guarded_stdout: stdout on a full disk is one error line, also for its last flush.
        # one_line_logging: the library's warnings and progress on stderr, one line each, as always.
        with warnings.catch_warnings(), guarded_stdout(), one_line_logging():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return main(list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        return _interrupted(exc)
    except BrokenPipeError:
        # `predict.py ... | head`: the reader has gone; end quietly, as `yes | head` does.
        _silence_stdout()
        return 141
    except OSError as exc:
        from ..atomic import write_fault

        reason = write_fault(exc)
        if reason is None:
            return _interrupted_behind(exc)
        # A fault on a path no atomic write owns (a directory that cannot be created): still the
        # user's to fix, still one line.
        print(str(UserError(f"cannot write: {reason}", exc.filename)), file=sys.stderr)
        return 2
    except Exception as exc:
        return _interrupted_behind(exc)
    finally:
        restore_handlers()


def _interrupted(exc: BaseException) -> int:
    print("interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated", file=sys.stderr)
    return 130 if isinstance(exc, KeyboardInterrupt) else 143


def _interrupted_behind(exc: Exception) -> int:
    """A Ctrl-C or SIGTERM that code on its way out turned into another error (a clean-up's EBADF) still
    ends as the interrupt it was; anything else is a bug and is re-raised with its traceback."""
    for cause in causes(exc):
        if isinstance(cause, (KeyboardInterrupt, Terminated)):
            return _interrupted(cause)
    raise exc


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` as the interpreter would, less its teardown of every module
    (about a second once torch and transformers are loaded, and nothing of ours is left in it): other
    threads are joined, atexit handlers run and the standard streams are flushed, then ``os._exit``."""
    import atexit

    # What the interpreter does first at exit: run the hooks that stop executor pools (torch.compile's
    # compile workers among them), then join the other non-daemon threads. Joining before the hooks
    # would wait forever on an idle pool's workers.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the guard has reported stdout faults; nothing to add
            pass
    os._exit(code)
