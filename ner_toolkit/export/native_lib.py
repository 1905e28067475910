"""The toolkit's compiled Viterbi and k-best (``model/crf/viterbi_native.c``) on numpy arrays, torch-free.

Built by ``native_build.load``, as ``model/crf/native.py``'s is (one cached library for both);
``NER_TOOLKIT_NATIVE=0`` turns it off. ``None`` from :func:`library` means
callers use the numpy implementation (:mod:`.numpy_crf`).
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import Optional

import numpy as np

from .. import native_build
from ..native_build import PARALLEL_WORK as _PARALLEL_WORK


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The loaded kernel, built on first use; ``None`` when turned off or not buildable (warned once)."""
    return native_build.load("numpy")


def _threads(work: int) -> int:
    if work < _PARALLEL_WORK:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _args(em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray) -> list:
    return [np.ascontiguousarray(em, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.bool_),
            np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32),
            np.ascontiguousarray(trans, dtype=np.float32)]


def _check(status: int, seq_len: int, num_tags: int) -> None:
    if status != 0:
        raise MemoryError(f"Viterbi scratch memory for T={seq_len}, K={num_tags} could not be allocated")


def viterbi(em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray,
            trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best paths (B, T) int64 (0 past each length) and scores (B,) float32; the library must exist."""
    lib = library()
    assert lib is not None, "check library() first"
    batch, seq_len, num_tags = em.shape
    args = _args(em, mask, start, end, trans)
    paths = np.empty((batch, seq_len), dtype=np.int64)
    scores = np.empty(batch, dtype=np.float32)
    _check(lib.ner_viterbi_f32(*(a.ctypes.data for a in args), batch, seq_len, num_tags, paths.ctypes.data,
                               scores.ctypes.data, _threads(batch * seq_len * num_tags * num_tags)),
           seq_len, num_tags)
    return paths, scores


def kbest(em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray,
          k: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw k best ranks: paths (B, k, T) int64 (last tag repeated past each end), scores (B, k) float32."""
    lib = library()
    assert lib is not None, "check library() first"
    batch, seq_len, num_tags = em.shape
    args = _args(em, mask, start, end, trans)
    paths = np.empty((batch, k, seq_len), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    _check(lib.ner_kbest_f32(*(a.ctypes.data for a in args), batch, seq_len, num_tags, k, paths.ctypes.data,
                             scores.ctypes.data, _threads(batch * seq_len * num_tags * num_tags * k)),
           seq_len, num_tags)
    return paths, scores
