"""The compiled CPU Viterbi and k-best on torch tensors: ``viterbi_native.c`` built once per machine with the
system C compiler, cached, and called through the one ``ctypes`` binding of ``native_build`` (the ONNX
runtime calls the same one on numpy arrays). Tensors cross as zero-copy numpy views.

Eager PyTorch pays a kernel call and a pass over memory for every add, max and gather of every time step;
the C loops fuse them per sentence (on 2 cores: decode 1.5-7x faster than :func:`.viterbi.viterbi`,
k-best 2.4-4x faster than :func:`.viterbi.kbest`; see ``benchmarks/bench_crf.py``). Same results: the
same float32 sums in the same order.

The library goes to ``$NER_TOOLKIT_CACHE`` (default ``~/.cache/ner_toolkit``), named by a hash of the
source, compiler, flags and CPU, so an upgrade or another machine sharing the home directory builds its
own. ``NER_TOOLKIT_NATIVE=0`` turns it off. Without a compiler (or when the build fails) decoding falls
back to the PyTorch implementation, after one warning that says why.
"""

from typing import Tuple

import torch
from torch import Tensor

from ... import native_build
from ...native_build import library

__all__ = ["library", "usable", "viterbi", "kbest"]


def usable(em: Tensor) -> bool:
    """Whether :func:`viterbi` can decode these emissions: CPU float32 outside ``torch.compile`` (a
    compiled graph keeps the PyTorch implementation, which it can trace), with the kernel built."""
    return (em.device.type == "cpu" and em.dtype == torch.float32 and not torch.compiler.is_compiling()
            and library() is not None)


def _arrays(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> list:
    """numpy views of the CPU inputs (no copy; the binding makes contiguous ones where needed)."""
    return [x.detach().numpy() for x in (em, mask.to(torch.bool), start, end, trans)]


def viterbi(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor) -> Tuple[Tensor, Tensor]:
    """Best paths ``(B, T)`` int64 (0 past each length) and their scores ``(B,)`` float32, from float32
    CPU ``em`` ``(B, T, K)``, length ``mask`` ``(B, T)`` and ``start``/``end`` ``(K,)``, ``trans`` ``(K, K)``."""
    lib = library()
    assert lib is not None, "check usable() first"
    paths, scores = native_build.viterbi(lib, *_arrays(em, mask, start, end, trans), torch.get_num_threads())
    return torch.from_numpy(paths), torch.from_numpy(scores)


def kbest(em: Tensor, mask: Tensor, start: Tensor, end: Tensor, trans: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The raw ``k`` best ranks per sentence: paths ``(B, k, T)`` int64 (each path's last tag repeated
    past its end; all 0 for a rank with no path) and scores ``(B, k)`` float32, best first, ``-inf`` for
    no path. Inputs as for :func:`viterbi`; :func:`.viterbi.legal_ranks` turns this into the result."""
    lib = library()
    assert lib is not None, "check usable() first"
    paths, scores = native_build.kbest(lib, *_arrays(em, mask, start, end, trans), k, torch.get_num_threads())
    return torch.from_numpy(paths), torch.from_numpy(scores)
