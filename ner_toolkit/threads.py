"""How many CPU threads torch uses: the one ``--threads`` / ``num_threads`` knob of every command, and the
default it takes when not set.

Why not torch's default (one thread per core): torch's OpenMP threads meet at a barrier after every
parallel operation, so one thread that the scheduler parks behind another busy process stalls all the
others, and the tagger's many small operations hit that barrier thousands of times a second. On a
2-core machine with two busy processes, the quickstart's training took 2x (and in the report that
started this, 15x) as long with torch's default as with one thread. The default here is the cores that
are *free*: all cores minus the CPU time other processes used in a window before the command starts
working (``/proc/stat`` minus this process's own time; the window is this module's import to the call,
i.e. the command's own start-up, so it costs nothing), at least 1. ``benchmarks/bench_threads.py``
measures it against fixed settings and OpenMP wait policies (docs/threads.md): within 10 % of the best
setting in every row, where torch's default took up to 5x as long. libgomp's own wait policy is kept:
``OMP_WAIT_POLICY=PASSIVE`` cost 40 % on an idle machine.

Torch-free, so the CLI imports it (and starts the window) before torch.
"""
from __future__ import annotations

import os
import time
from typing import Optional

__all__ = ["AUTO", "cpu_cores", "free_cores", "resolve", "apply"]

AUTO = 0  # --threads 0 / num_threads null: the free cores
MIN_WINDOW_S = 0.25  # the shortest sampling window; a shorter one is topped up by sleeping


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_seconds() -> Optional[float]:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``'s first line, idle and iowait
    excluded; steal included: a VM's host using the core is contention too); None off Linux."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _sample() -> tuple[float, Optional[float], float]:
    return time.monotonic(), _busy_seconds(), _own_seconds()


_START = _sample()  # at import: the start of the window the first free_cores() call reads


def free_cores(since: Optional[tuple[float, Optional[float], float]] = None) -> int:
    """The cores not kept busy by other processes, rounded, at least 1: ``cpu_cores()`` minus the other
    processes' CPU use between ``since`` (default: this module's import) and now. Off Linux, all cores."""
    start = since or _START
    wait = MIN_WINDOW_S - (time.monotonic() - start[0])
    if wait > 0:
        time.sleep(wait)
    end = _sample()
    cores = cpu_cores()
    if start[1] is None or end[1] is None:
        return cores
    others = (end[1] - start[1]) - (end[2] - start[2])  # all busy time minus this process's own
    return max(1, min(cores, round(cores - others / (end[0] - start[0]))))


def resolve(requested: Optional[int]) -> int:
    """The thread count to use: ``requested`` when given and > 0; else ``OMP_NUM_THREADS`` when the user
    set it (a positive integer: the variable's usual meaning is kept); else :func:`free_cores`."""
    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return free_cores()


def apply(requested: Optional[int]) -> int:
    """Set torch's intra-op threads to :func:`resolve` of ``requested``; returns the count set."""
    import torch

    threads = resolve(requested)
    torch.set_num_threads(threads)
    return threads

