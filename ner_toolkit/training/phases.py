"""Where a training run's wall time goes outside its epochs (``train.py --profile-startup``).

The trainer records each phase it runs (reading, model build, subword encoding, dev scoring, saving,
plotting, ...) into ``PHASES``; ``report()`` is the table ``--profile-startup`` prints. "start-up" is
the time from the process's start to the trainer's entry: the interpreter and the imports.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator, Optional

from ..heap import release_free_memory

log = logging.getLogger(__name__)

TRAINING = "training epochs"  # the phase the target leaves out: everything else is overhead


def process_age() -> Optional[float]:
    """Seconds since this process started (Linux: from /proc), None where that is not known."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


class Phases:
    """Wall seconds per named phase, in first-seen order; ``marks``: moments (seconds since the run began)."""

    def __init__(self) -> None:
        self.verbose = False  # train.py --profile-startup
        self._runs = 0
        self.seconds: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.began = time.perf_counter()
        self.startup: Optional[float] = None

    def reset(self) -> None:
        """A run begins (``train()``): only a process's first run has a start-up (``--seeds`` runs several)."""
        self.seconds, self.marks = {}, {}
        self.began = time.perf_counter()
        self.startup = process_age() if self._runs == 0 else None  # in clock ticks (10 ms): that coarse
        self._runs += 1

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``; as it ends, give the heap's free pages back, so that the next
        phase's peak does not stack on what this one freed (dev scoring, calibration, saving, plotting)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)
            release_free_memory()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def mark(self, name: str) -> None:
        """Record the first time ``name`` happens (e.g. the first training step); with ``verbose``, print
        the table so far then (a script can stop the run there)."""
        if name in self.marks:
            return
        self.marks[name] = time.perf_counter() - self.began
        if self.verbose:
            log.info(f"profile: {name} at {self.marks[name] + (self.startup or 0.0):.2f} s:\n{self.report()}")

    def report(self) -> str:
        """A table: start-up, every phase, what no phase covered, the total and the overhead."""
        total = time.perf_counter() - self.began
        rows = []
        if self.startup is not None:
            rows.append(("start-up (interpreter, imports)", self.startup))
        rows += list(self.seconds.items())
        rows.append(("other", total - sum(self.seconds.values())))
        wall = total + (self.startup or 0.0)
        lines = ["| phase | seconds | share |", "|---|---:|---:|"]
        lines += [f"| {name} | {sec:.2f} | {sec / wall:.0%} |" for name, sec in rows]
        lines.append(f"| **wall so far** | {wall:.2f} | 100% |")
        overhead = wall - self.seconds.get(TRAINING, 0.0)
        lines.append(f"| **wall outside the epochs** | {overhead:.2f} | {overhead / wall:.0%} |")
        for name, at in self.marks.items():
            lines.append(f"| {name} (at) | {at + (self.startup or 0.0):.2f} | |")
        return "\n".join(lines)


PHASES = Phases()
