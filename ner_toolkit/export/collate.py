"""Torch-free inputs for the exported graph: vocabularies, subword alignment, windows and pooling maps.

A numpy twin of ``data.batching`` (``encode_sentences``, ``Collator``, unshuffled ``bucketed_batches``; words
and characters are looked up by the torch-free ``data.vocab`` itself): the same index computations, so
``NumpyCollator(items)`` holds exactly the values of ``Collator(items)`` (tests/test_export.py compares them on
random sentences). Subword alignment, windows and context come from the torch-free ``data.windows``, shared
with ``data.batching``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..data.vocab import CharVocab, Vocab
from ..data.windows import SubwordAligner, add_context, fit_context, plan_windows


@dataclass
class Encoded:
    """``data.batching.Encoded``."""

    word_ids: list[int]
    pieces: list[list[int]]
    index: int
    char_ids: Optional[list[list[int]]] = None
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.word_ids)

    @property
    def num_pieces(self) -> int:
        return sum(len(p) for p in self.pieces)


def encode_sentences(aligner: SubwordAligner, vocab: Optional[Vocab], sentences: Sequence[Sequence[str]],
                     chars: Optional[CharVocab] = None, documents: Optional[Sequence[int]] = None,
                     context: int = 0) -> list[Encoded]:
    """``data.batching.encode_sentences`` without tags."""
    pieces = aligner.pieces(sentences)
    out = []
    for i, (tokens, p) in enumerate(zip(sentences, pieces)):
        word_ids = vocab.encode(tokens) if vocab is not None else [0] * len(tokens)
        out.append(Encoded(word_ids, p, i, None if chars is None else chars.encode(tokens)))
    if context > 0:
        add_context(out, documents, context)
    return out


@dataclass
class NumpyBatch:
    """``data.batching.Batch`` as numpy arrays (int64 ids, float32 weights, bool mask)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    pools: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    word_ids: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    indices: list[int]
    char_ids: Optional[np.ndarray] = None


class NumpyCollator:
    """``data.batching.Collator`` producing numpy arrays."""

    def __init__(self, cls_id: int, sep_id: int, pad_id: int, max_length: int, stride: int, pooling: str) -> None:
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.content = max_length - 2
        self.stride = stride
        self.pooling = pooling

    def __call__(self, items: Sequence[Encoded]) -> NumpyBatch:
        T = max(len(x) for x in items)
        rows: list[list[int]] = []
        kinds = ("first", "last") if self.pooling == "first_last" else (self.pooling,)
        maps: dict[str, tuple[list, list, list]] = {k: ([], [], []) for k in kinds}
        for b, item in enumerate(items):
            lengths = [len(p) for p in item.pieces]
            left: list[int] = []
            right: list[int] = []
            if sum(lengths) <= self.content:
                windows, owner = [(0, len(lengths))], None
                left, right = fit_context(item.left, item.right, self.content - sum(lengths))
            else:
                windows, owner = plan_windows(lengths, self.content, self.stride)
            for w, (s, e) in enumerate(windows):
                row = [self.cls_id] + left
                for t in range(s, e):
                    first = len(row)
                    row.extend(item.pieces[t])
                    if owner is not None and owner[t] != w:
                        continue
                    n = lengths[t]
                    dst = b * T + t
                    r = len(rows)
                    for kind in kinds:
                        src_l, dst_l, w_l = maps[kind]
                        if kind == "mean":
                            src_l.extend((r, first + j) for j in range(n))
                            dst_l.extend([dst] * n)
                            w_l.extend([1.0 / n] * n)
                        else:
                            src_l.append((r, first if kind == "first" else first + n - 1))
                            dst_l.append(dst)
                            w_l.append(1.0)
                row.extend(right)
                row.append(self.sep_id)
                rows.append(row)
        S = max(len(r) for r in rows)
        input_ids = np.array([r + [self.pad_id] * (S - len(r)) for r in rows], dtype=np.int64)
        row_lengths = np.array([len(r) for r in rows], dtype=np.int64)
        attention = (np.arange(S)[None, :] < row_lengths[:, None]).astype(np.int64)
        pools = []
        for kind in kinds:
            src_l, dst_l, w_l = maps[kind]
            pools.append((np.array([r * S + c for r, c in src_l], dtype=np.int64),
                          np.array(dst_l, dtype=np.int64), np.array(w_l, dtype=np.float32)))
        lengths_a = np.array([len(x) for x in items], dtype=np.int64)
        mask = np.arange(T)[None, :] < lengths_a[:, None]
        word_ids = np.array([x.word_ids + [0] * (T - len(x)) for x in items], dtype=np.int64)
        char_ids = None
        if items[0].char_ids is not None:
            L = max(len(c) for x in items for c in x.char_ids)  # type: ignore[union-attr]
            pad_word = [0] * L
            char_ids = np.array([[c + [0] * (L - len(c)) for c in x.char_ids] + [pad_word] * (T - len(x))  # type: ignore[union-attr]
                                 for x in items], dtype=np.int64)
        return NumpyBatch(input_ids, attention, pools, word_ids, mask, lengths_a, [x.index for x in items], char_ids)


def sorted_batches(items: Sequence[Encoded], batch_size: int) -> list[list[Encoded]]:
    """``data.batching.bucketed_batches(items, batch_size, shuffle=False)``: longest first."""
    order = sorted(range(len(items)), key=lambda i: -items[i].num_pieces)
    return [[items[i] for i in order[s: s + batch_size]] for s in range(0, len(order), batch_size)]
