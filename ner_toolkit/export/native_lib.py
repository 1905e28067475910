"""The toolkit's compiled Viterbi and k-best (``model/crf/viterbi_native.c``) on numpy arrays, torch-free.

Built exactly as ``model/crf/native.py`` builds it (same source, compiler, flags and cache key, so both
share one cached library); ``NER_TOOLKIT_NATIVE=0`` turns it off. ``None`` from :func:`library` means
callers use the numpy implementation (:mod:`.numpy_crf`).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

SOURCE = Path(__file__).resolve().parent.parent / "model" / "crf" / "viterbi_native.c"
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
_PARALLEL_WORK = 1 << 18


def _cpu_signature() -> str:
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


def _compile(compiler: str, flags: list, target: Path) -> Optional[str]:
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        proc = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-pthread", str(SOURCE), "-o", tmp],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            lines = (proc.stderr + proc.stdout).strip().splitlines() or [f"{compiler} exited with {proc.returncode}"]
            return next((line for line in lines if "error" in line), lines[0])
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The loaded kernel, built on first use; ``None`` when turned off or not buildable (warned once)."""
    if os.environ.get("NER_TOOLKIT_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        warnings.warn("ner_toolkit: no C compiler found (set CC): Viterbi decoding uses the slower numpy "
                      "implementation", RuntimeWarning, stacklevel=2)
        return None
    source = SOURCE.read_bytes()
    compiler_path = shutil.which(compiler) or compiler
    try:
        stamp = str(os.stat(compiler_path).st_mtime_ns)
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
            pointers, sizes = [ctypes.c_void_p] * 5, [ctypes.c_int64] * 3
            lib.ner_viterbi_f32.argtypes = pointers + sizes + [ctypes.c_void_p] * 2 + [ctypes.c_int64]
            lib.ner_kbest_f32.argtypes = pointers + sizes + [ctypes.c_int64] + [ctypes.c_void_p] * 2 + [ctypes.c_int64]
            lib.ner_viterbi_f32.restype = lib.ner_kbest_f32.restype = ctypes.c_int
            return lib
        problems.append(problem)
    warnings.warn(f"ner_toolkit: could not build the C Viterbi ({problems[-1]}): decoding uses the slower "
                  "numpy implementation", RuntimeWarning, stacklevel=2)
    return None


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
