"""The compiled Viterbi and k-best (``model/crf/viterbi_native.c``), torch-free: building, loading and the
one ``ctypes`` binding (:func:`viterbi`, :func:`kbest` on numpy arrays). ``model/crf/native.py`` (torch
tensors, as zero-copy numpy views) and ``export/numpy_crf.py`` (the ONNX runtime) both call it, so they
share one build, one cached library and one calling convention.

The library goes to ``$NER_TOOLKIT_CACHE`` (default ``~/.cache/ner_toolkit``), named by a hash of the
source, compiler, flags and CPU, so an upgrade or another machine sharing the home directory builds its
own. ``NER_TOOLKIT_NATIVE=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import sibling
from .interrupts import uninterruptible

SOURCE = Path(__file__).resolve().parent / "model" / "crf" / "viterbi_native.c"
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # -march=native is not known to every compiler
#: Below this many candidate scores (B*T*K*K) one thread decodes: starting another costs more.
PARALLEL_WORK = 1 << 18


def _cpu_signature() -> str:
    """The CPU's instruction-set flags (a library built with -march=native runs only where they match)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    if os.environ.get("NER_TOOLKIT_CACHE"):
        return Path(os.environ["NER_TOOLKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ner_toolkit"


@uninterruptible
def _compile(compiler: str, flags: list, target: Path) -> Optional[str]:
    """Build ``SOURCE`` into ``target`` atomically (concurrent builders each write a temporary file and
    rename it); the compiler's message on failure. A SIGTERM waits for the build (a second or so): one
    landing inside subprocess.run() as the compiler starts would leave it running to write its output
    after the clean-up (Ctrl-C reaches the compiler too, which ends it at once)."""
    tmp = sibling(target, "tmp")  # named before the compiler creates it, so that an interrupt removes it too
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-pthread", str(SOURCE), "-o", str(tmp)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            lines = (proc.stderr + proc.stdout).strip().splitlines() or [f"{compiler} exited with {proc.returncode}"]
            return next((line for line in lines if "error" in line), lines[0])
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass  # never made (the cache directory could not be), or already renamed into place


@functools.lru_cache(maxsize=None)
def library(fallback: str = "PyTorch") -> Optional[ctypes.CDLL]:
    """The loaded kernel, built on first use; ``None`` when turned off or not buildable (warned once per
    ``fallback``, the implementation the caller decodes with instead)."""
    return load(fallback)


def _threads(work: int, max_threads: Optional[int]) -> int:
    """One thread below :data:`PARALLEL_WORK` candidate scores; else ``max_threads`` (default: the
    cores this process may run on)."""
    if work < PARALLEL_WORK:
        return 1
    if max_threads is not None:
        return max(1, max_threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _args(em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray) -> list:
    """The C arguments: contiguous float32 scores and a one-byte bool mask (copies only where needed,
    kept alive by the caller)."""
    return [np.ascontiguousarray(em, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.bool_),
            np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32),
            np.ascontiguousarray(trans, dtype=np.float32)]


def _check(status: int, seq_len: int, num_tags: int) -> None:
    if status != 0:
        raise MemoryError(f"Viterbi scratch memory for T={seq_len}, K={num_tags} could not be allocated")


def viterbi(lib: ctypes.CDLL, em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray,
            trans: np.ndarray, max_threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Best paths (B, T) int64 (0 past each length) and their scores (B,) float32, from ``em`` (B, T, K),
    length ``mask`` (B, T), ``start``/``end`` (K,) and ``trans`` (K, K); ``lib``: from :func:`library`."""
    batch, seq_len, num_tags = em.shape
    args = _args(em, mask, start, end, trans)
    paths = np.empty((batch, seq_len), dtype=np.int64)
    scores = np.empty(batch, dtype=np.float32)
    _check(lib.ner_viterbi_f32(*(a.ctypes.data for a in args), batch, seq_len, num_tags, paths.ctypes.data,
                               scores.ctypes.data, _threads(batch * seq_len * num_tags * num_tags, max_threads)),
           seq_len, num_tags)
    return paths, scores


def kbest(lib: ctypes.CDLL, em: np.ndarray, mask: np.ndarray, start: np.ndarray, end: np.ndarray,
          trans: np.ndarray, k: int, max_threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The raw ``k`` best ranks per sentence: paths (B, k, T) int64 (each path's last tag repeated past its
    end; all 0 for a rank with no path) and scores (B, k) float32, best first, ``-inf`` for no path.
    Inputs as for :func:`viterbi`."""
    batch, seq_len, num_tags = em.shape
    args = _args(em, mask, start, end, trans)
    paths = np.empty((batch, k, seq_len), dtype=np.int64)
    scores = np.empty((batch, k), dtype=np.float32)
    _check(lib.ner_kbest_f32(*(a.ctypes.data for a in args), batch, seq_len, num_tags, k, paths.ctypes.data,
                             scores.ctypes.data, _threads(batch * seq_len * num_tags * num_tags * k, max_threads)),
           seq_len, num_tags)
    return paths, scores


def load(fallback: str) -> Optional[ctypes.CDLL]:
    """The kernel, built unless cached; ``None`` when turned off or not buildable, after a warning that
    decoding uses ``fallback`` (the caller's slower implementation). Callers memoise it."""
    if os.environ.get("NER_TOOLKIT_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        warnings.warn("ner_toolkit: no C compiler found (set CC): Viterbi decoding uses the slower "
                      f"{fallback} implementation", RuntimeWarning, stacklevel=3)
        return None
    source = SOURCE.read_bytes()
    compiler_path = shutil.which(compiler) or compiler
    try:
        stamp = str(os.stat(compiler_path).st_mtime_ns)  # an upgraded compiler builds anew
    except OSError:
        stamp = ""
    problems = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, compiler_path.encode(), stamp.encode(), " ".join(flags).encode(),
                                         platform.machine().encode(), _cpu_signature().encode()])).hexdigest()[:16]
        target = _cache_dir() / f"viterbi-{key}.so"
        problem = None if target.exists() else _compile(compiler, flags, target)
        if problem is None:
            try:
                lib = ctypes.CDLL(str(target))
            except OSError as exc:
                problems.append(str(exc))
                continue
            pointers, sizes = [ctypes.c_void_p] * 5, [ctypes.c_int64] * 3  # em, mask, start, end, trans; B, T, K
            lib.ner_viterbi_f32.argtypes = pointers + sizes + [ctypes.c_void_p] * 2 + [ctypes.c_int64]
            lib.ner_kbest_f32.argtypes = pointers + sizes + [ctypes.c_int64] + [ctypes.c_void_p] * 2 + [ctypes.c_int64]
            lib.ner_viterbi_f32.restype = lib.ner_kbest_f32.restype = ctypes.c_int
            return lib
        problems.append(problem)
    warnings.warn(f"ner_toolkit: could not build the C Viterbi ({problems[-1]}): decoding uses the slower "
                  f"{fallback} implementation", RuntimeWarning, stacklevel=3)
    return None
