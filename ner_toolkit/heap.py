"""Give the C heap's free pages back to the system (glibc's ``malloc_trim``) during long runs.

Training allocates and frees activations of ever-changing shapes. glibc keeps what is freed in its
heap, where it fragments, so resident memory creeps up over an epoch and across phases (dev scoring,
calibration, saving) although the tensors alive do not. ``malloc_trim(0)`` returns every whole free
page, not only the heap's top, at a cost of milliseconds. Measured with
``benchmarks/bench_train_memory.py`` (docs/benchmarks/speed-memory.md): a lower peak RSS at the same sentences/s.
Where the C library is not glibc (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

#: Batches between two trims in a training epoch: often enough to stop the creep, rare enough to cost nothing.
EVERY = 50


def _load() -> Optional[Callable[[int], int]]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _load()


def release_free_memory() -> None:
    """Return the heap's free pages to the system now (glibc only)."""
    if _TRIM is not None:
        _TRIM(0)


def trimming(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, giving free memory back after every ``every`` of them."""
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0:
            release_free_memory()
