"""Command lines: ``train.py`` / ``ner-train``, ``predict.py`` / ``ner-predict``, ``ner-evaluate``.

This module holds what every command shares (the error guard, the parser); each command is a
module of its own (``train``, ``predict``, ``evaluate``) with a ``run(argv)``.

User errors end with exit code 2 and one line ``error: PATH:LINE: ...`` on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings
from typing import Any, Callable, NoReturn, Optional, Sequence

from ..errors import UserError, causes, one_line_logging
from ..interrupts import Terminated
from ..interrupts import install as install_interrupt_handlers



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


def _guard(main: Callable[[list[str]], int], argv: Optional[Sequence[str]]) -> int:
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: same one-line format, exit 2
        raise UserError(f"{message} (see --help)", self.prog)


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    from .train import run

    return _guard(run, argv)


def predict_main(argv: Optional[Sequence[str]] = None) -> int:
    from .predict import run

    return _guard(run, argv)


def evaluate_main(argv: Optional[Sequence[str]] = None) -> int:
    from .evaluate import run

    return _guard(run, argv)


def serve_main(argv: Optional[Sequence[str]] = None) -> int:
    from .serve import run

    return _guard(run, argv)


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    from .export import run

    return _guard(run, argv)


def select_main(argv: Optional[Sequence[str]] = None) -> int:
    from .select import run

    return _guard(run, argv)


def pretrain_main(argv: Optional[Sequence[str]] = None) -> int:
    from .pretrain import run

    return _guard(run, argv)


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


def _console(main: Callable[[Optional[Sequence[str]]], int]) -> Callable[[], None]:
    return lambda: exit_process(main(None))


train_console, predict_console, evaluate_console = _console(train_main), _console(predict_main), _console(evaluate_main)
serve_console, export_console = _console(serve_main), _console(export_main)
select_console, pretrain_console = _console(select_main), _console(pretrain_main)
