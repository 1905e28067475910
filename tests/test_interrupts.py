"""A Ctrl-C or SIGTERM can arrive at any moment; CPython runs the handler at the main thread's next check
point (a function's start, the return of a call, a loop's back edge). The CLI's handlers raise there,
or hold the interrupt inside an uninterruptible step. Wherever it lands, a write must leave the old
file or the complete new one, and no temporary file, lock or half-moved directory beside it; and the
interrupt must not be lost.

Each test replays one operation with the CLI's SIGINT handler called at its 1st, 2nd, 3rd, ... check
point (found by tracing opcodes in every frame the operation runs: ours, pathlib, shutil, subprocess,
contextlib), until a replay passes its last check point uninterrupted, and checks the directory after
each.
"""
from __future__ import annotations

import dis
import gc
import os
import signal
import sys
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ner_toolkit import interrupts, native_build
from ner_toolkit.atomic import atomic_directory, atomic_write
from ner_toolkit.training.runlock import LOCK_NAME, run_lock


@pytest.fixture(autouse=True)
def cli_handlers():
    restore = interrupts.install()
    yield
    restore()


# After these instructions CPython 3.11 checks for pending signals (ceval's CHECK_EVAL_BREAKER); so it does
# at a frame's RESUME, its start or its resumption after a yield, which the tracer sees as a "call" event.
_CHECKED_AFTER = {dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "JUMP_BACKWARD") if name in dis.opmap}


class _InterruptAt:
    """A trace function that runs the SIGINT handler at the ``at``-th check point it sees, as CPython
    would for a Ctrl-C arriving just before it."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0
        self.fired = False
        self.last: dict = {}  # frame -> the opcode it last executed

    def __call__(self, frame, event: str, arg):
        if self.fired:
            return None
        if event == "call":
            frame.f_trace_opcodes = True
            self._check_point(frame)
        elif event == "opcode":
            if self.last.get(frame) in _CHECKED_AFTER:
                self._check_point(frame)
            self.last[frame] = frame.f_code.co_code[frame.f_lasti]
        return self

    def _check_point(self, frame) -> None:
        self.seen += 1
        if self.seen == self.at:
            self.fired = True
            sys.settrace(None)
            self.last.clear()
            signal.getsignal(signal.SIGINT)(signal.SIGINT, frame)  # raises, or holds it for later


def interrupted_everywhere(action: Callable[[], None], limit: int = 20000) -> Iterator[tuple[int, bool]]:
    """Run ``action`` once per check point it passes, interrupted there; yields the check point's number
    and whether the interrupt fired after each replay (the caller checks the state it left), and stops
    after the first replay with no interrupt, which every operation must reach."""
    for at in count(1):
        assert at <= limit, f"the operation passed more than {limit} check points"
        tracer = _InterruptAt(at)
        interrupted = False
        # No collections during a replay: Python code run by a collection's callbacks (hypothesis installs
        # one) would take the interrupt and have it swallowed as unraisable, which says nothing of ours.
        gc.disable()
        sys.settrace(tracer)
        try:
            action()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sys.settrace(None)
            gc.enable()
        assert interrupted == tracer.fired, f"the interrupt at check point {at} was lost"
        yield at, tracer.fired
        if not tracer.fired:
            return


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_an_interrupted_file_write_leaves_the_old_or_the_new_file_and_nothing_else(tmp_path, existing):
    target = tmp_path / "pred.txt"
    old, new = "old content\n", "new content\n" * 50

    def reset() -> None:
        target.unlink(missing_ok=True)
        if existing:
            target.write_text(old, encoding="utf-8")

    def write() -> None:
        with atomic_write(target) as fh:
            fh.write(new)

    reset()
    for at, fired in interrupted_everywhere(write):
        assert _listing(tmp_path) in ((["pred.txt"],) if existing else ([], ["pred.txt"])), f"interrupted at {at}"
        if target.exists():
            assert target.read_text(encoding="utf-8") in ((old, new) if fired else (new,)), f"interrupted at {at}"
        reset()
    assert at > 100  # the replays did cross the write's own lines, not only the test's


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_an_interrupted_directory_write_leaves_the_old_or_the_new_directory_and_nothing_else(tmp_path, existing):
    target = tmp_path / "model"
    old_files, new_files = {"weights": "old"}, {"weights": "new", "config.yaml": "x: 1\n"}

    def fill(directory: Path, files: dict) -> None:
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")

    def reset() -> None:
        if target.exists():
            for item in target.iterdir():
                item.unlink()
            target.rmdir()
        if existing:
            target.mkdir()
            fill(target, old_files)

    def write() -> None:
        with atomic_directory(target) as tmp:
            fill(tmp, new_files)

    reset()
    for at, fired in interrupted_everywhere(write):
        assert _listing(tmp_path) in ((["model"],) if existing else ([], ["model"])), f"interrupted at {at}"
        if target.exists():
            got = {p.name: p.read_text(encoding="utf-8") for p in target.iterdir()}
            assert got in ((old_files, new_files) if fired else (new_files,)), f"interrupted at {at}"
        reset()
    assert at > 100


def test_an_interrupted_run_lock_leaves_no_lock_and_no_directory_it_made(tmp_path):
    output = tmp_path / "runs" / "one"

    def run() -> None:
        with run_lock(output):
            assert (output / LOCK_NAME).read_text(encoding="utf-8").split()[0] == str(os.getpid())

    for at, _ in interrupted_everywhere(run):
        assert _listing(tmp_path) == [], f"interrupted at {at}: {list(tmp_path.rglob('*'))}"
    assert at > 100


def test_an_interrupted_kernel_build_leaves_no_temporary_library(tmp_path):
    # A stand-in compiler (the real one takes a second a run): writes its -o argument.
    compiler = tmp_path / "fake-cc"
    compiler.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho built > "$2"\n', encoding="utf-8")
    compiler.chmod(0o755)
    cache = tmp_path / "cache"
    target = cache / "viterbi.so"

    def build() -> None:
        assert native_build._compile(str(compiler), [], target) is None

    for at, fired in interrupted_everywhere(build, limit=50000):
        leftovers = [p.name for p in cache.iterdir() if p.name != "viterbi.so"] if cache.exists() else []
        assert leftovers == [], f"interrupted at {at}"
        assert fired or target.read_text() == "built\n"
        target.unlink(missing_ok=True)
    assert at > 100


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-hard-links"])
def test_the_lock_names_its_holder_and_a_second_taker_is_refused(tmp_path, monkeypatch, links):
    from ner_toolkit.errors import UserError
    from ner_toolkit.training import runlock

    if not links:  # a file system without hard links (FAT, some network shares): O_EXCL and a write
        def no_link(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(runlock.os, "link", no_link)
    path = runlock.acquire(tmp_path)
    assert path.read_text(encoding="utf-8").split()[0] == str(os.getpid())
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        runlock.acquire(tmp_path)  # this process is alive: refused, and the lock is left as it was
    assert _listing(tmp_path) == [LOCK_NAME]
    runlock.release(path)
    assert _listing(tmp_path) == []


def _raises_from(inner: BaseException, outer: Exception):
    def main(argv):
        try:
            raise inner
        except BaseException:
            raise outer
    return main


@pytest.mark.parametrize("inner, code, word", [(KeyboardInterrupt(), 130, "interrupted"),
                                               (interrupts.Terminated(), 143, "terminated")])
def test_an_interrupt_that_a_library_turned_into_another_error_still_ends_as_the_interrupt(capsys, inner, code,
                                                                                            word):
    from ner_toolkit.cli.guard import guard

    # An error raised while the interrupt unwinds: a clean-up that fails (shutil.rmtree closing a descriptor
    # twice: EBADF), or a library that wraps what interrupted it.
    for outer in (RuntimeError("PytorchStreamWriter failed writing file: unexpected pos"),
                  OSError(9, "Bad file descriptor")):
        assert guard(_raises_from(inner, outer), []) == code
        assert capsys.readouterr().err == f"{word}\n"


def test_an_error_with_no_interrupt_behind_it_is_still_a_bug_with_its_traceback():
    from ner_toolkit.cli.guard import guard

    with pytest.raises(RuntimeError, match="a real bug"):
        guard(_raises_from(ValueError("cause"), RuntimeError("a real bug")), [])
