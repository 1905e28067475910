"""The compiled CPU Viterbi and k-best: ``viterbi_native.c`` built once per machine with the system C
compiler, cached, and called through ``ctypes``.

Eager PyTorch pays a kernel call and a pass over memory for every add, max and gather of every time step;
the C loops fuse them per sentence (on 2 cores: decode 1.5-7x faster than :func:`.viterbi.viterbi`,
k-best 2.4-4x faster than :func:`.viterbi.kbest`; see ``benchmarks/bench_crf.py``). Same results: the
same float32 sums in the same order.

The library goes to ``$NER_TOOLKIT_CACHE`` (default ``~/.cache/ner_toolkit``), named by a hash of the
source, compiler, flags and CPU, so an upgrade or another machine sharing the home directory builds its
own. ``NER_TOOLKIT_NATIVE=0`` turns it off. Without a compiler (or when the build fails) decoding falls
back to the PyTorch implementation, after one warning that says why.
"""

import ctypes
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from ... import native_build
from ...native_build import PARALLEL_WORK as _PARALLEL_WORK


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The loaded kernel, built on first use; ``None`` when turned off or not buildable (warned once)."""
    return native_build.load("PyTorch")


def usable(em: Tensor) -> bool:
    """Whether :func:`viterbi` can decode these emissions: CPU float32 outside ``torch.compile`` (a
    compiled graph keeps the PyTorch implementation, which it can trace), with the kernel built."""
    return (em.device.type == "cpu" and em.dtype == torch.float32 and not torch.compiler.is_compiling()
            and library() is not None)


def _inputs(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> list:
    """The C arguments for the inputs (contiguous copies where needed, kept alive by the caller)."""
    return [x.contiguous() for x in (em, mask.to(torch.bool), start, end, trans)]  # bool: one byte a position


def _threads(batch: int, seq_len: int, num_tags: int, k: int = 1) -> int:
    return torch.get_num_threads() if batch * seq_len * num_tags * num_tags * k >= _PARALLEL_WORK else 1


def _check(status: int, seq_len: int, num_tags: int) -> None:
    if status != 0:
        raise MemoryError(f"Viterbi scratch memory for T={seq_len}, K={num_tags} could not be allocated")


def viterbi(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
    """Best paths ``(B, T)`` int64 (0 past each length) and their scores ``(B,)`` float32, from float32
    CPU ``em`` ``(B, T, K)``, length ``mask`` ``(B, T)`` and ``start``/``end`` ``(K,)``, ``trans`` ``(K, K)``."""
    lib = library()
    assert lib is not None, "check usable() first"
    batch, seq_len, num_tags = em.shape
    args = _inputs(em, mask, start, end, trans)
    paths = torch.empty(batch, seq_len, dtype=torch.int64)
    scores = torch.empty(batch, dtype=torch.float32)
    _check(lib.ner_viterbi_f32(*(x.data_ptr() for x in args), batch, seq_len, num_tags, paths.data_ptr(),
                               scores.data_ptr(), _threads(batch, seq_len, num_tags)), seq_len, num_tags)
    return paths, scores


def kbest(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The raw ``k`` best ranks per sentence: paths ``(B, k, T)`` int64 (each path's last tag repeated
    past its end; all 0 for a rank with no path) and scores ``(B, k)`` float32, best first, ``-inf`` for
    no path. Inputs as for :func:`viterbi`; :func:`.viterbi.legal_ranks` turns this into the result."""
    lib = library()
    assert lib is not None, "check usable() first"
    batch, seq_len, num_tags = em.shape
    args = _inputs(em, mask, start, end, trans)
    paths = torch.empty(batch, k, seq_len, dtype=torch.int64)
    scores = torch.empty(batch, k, dtype=torch.float32)
    _check(lib.ner_kbest_f32(*(x.data_ptr() for x in args), batch, seq_len, num_tags, k, paths.data_ptr(),
                             scores.data_ptr(), _threads(batch, seq_len, num_tags, k)), seq_len, num_tags)
    return paths, scores
