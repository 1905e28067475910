"""Subword-to-word pooling, torch-free: one ``POOLINGS`` table that the collator (``data.batching``), the
encoder (``model.encoder``) and the ONNX exporter (``export.onnx_export``) all read.

A pooling is a tuple of parts; each part is a *reader* that turns a word's subwords into one vector, and
the word's vector is the concatenation of its parts (so the encoder's output is ``len(parts)`` times its
hidden size, and the collator emits one (src, dst, weight) map per part). A new pooling mode is one entry
in ``POOLINGS`` (e.g. ``"first_mean": Pooling(("first", "mean"))``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: A reader maps the owned words of a batch (``first``: (N,) column of each word's first subword in its
#: window row; ``n``: (N,) its subword count) to map entries: ``repeats`` (N,) entries per word, ``cols``
#: (sum(repeats),) the columns read, ``weights`` (sum(repeats),) float32 factors, or None for all 1.0.
Reader = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]


def _first(first: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    return np.ones_like(n), first, None


def _last(first: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    return np.ones_like(n), first + n - 1, None


def _mean(first: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Word-major, subwords in order: the encoder's index_add sums them in this order.
    starts = np.cumsum(n) - n
    within = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(starts, n)
    return n, np.repeat(first, n) + within, np.repeat((1.0 / n).astype(np.float32), n)


READERS: dict[str, Reader] = {"first": _first, "last": _last, "mean": _mean}
#: Readers whose map carries weights the encoder must apply (the others' weights are all 1.0).
WEIGHTED = frozenset({"mean"})


@dataclass(frozen=True)
class Pooling:
    """A word's vector: the concatenation of one pooled vector per part (names in ``READERS``)."""

    parts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.parts or len(set(self.parts)) != len(self.parts) or not set(self.parts) <= set(READERS):
            raise ValueError(f"a pooling is distinct parts of {', '.join(READERS)}, got {self.parts!r}")

    @property
    def width(self) -> int:
        """Pooled vectors per word: the encoder's output width multiplier and the number of maps."""
        return len(self.parts)

    @property
    def weighted(self) -> tuple[bool, ...]:
        """Per part: whether the encoder multiplies the picked subwords by the map's weights."""
        return tuple(p in WEIGHTED for p in self.parts)


POOLINGS: dict[str, Pooling] = {
    "first": Pooling(("first",)),
    "last": Pooling(("last",)),
    "mean": Pooling(("mean",)),
    "first_last": Pooling(("first", "last")),
}
#: The most maps any pooling can have (the exported graph declares this many optional pool inputs).
MAX_PARTS = len(READERS)


def get_pooling(name: str) -> Pooling:
    """The table's entry for ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return POOLINGS[name]
    except KeyError:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {name!r}") from None
