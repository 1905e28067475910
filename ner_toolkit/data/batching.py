"""From token lists to padded arrays: subword alignment, long-sentence windows, bucketing, collate.

THE collator, torch-free: it emits numpy arrays, which ``Batch.to(device)`` turns into tensors for PyTorch
and which the ONNX runtime (``export.runtime``) feeds to onnxruntime as they are.

Every word gets exactly one encoder position to pool from ("its owner window"), so a sentence of
any length yields exactly one vector per word: long sentences are split into overlapping windows
of whole words, and each word is read from the window where it has the most context on both sides.
A word the tokenizer maps to no subword at all (a lone control or zero-width character) is given
the tokenizer's unknown token, so it still has a vector and a prediction.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Generic, Iterator, Optional, Sequence, TypeVar

import numpy as np

from ..schema import here
from .pooling import READERS, get_pooling
from .vocab import CharVocab, Vocab
from .store import Encoded, EncodedStore, piece_counts, widths
from .windows import SubwordAligner, fit_context, plan_windows

if TYPE_CHECKING:
    import torch

    from ..config import EncoderConfig

__all__ = ["Batch", "Collator", "Encoded", "SubwordAligner", "batch_indices", "bucketed_batches", "encode_sentences",
           "make_collator", "micro_batches", "plan_windows"]

# Sentences aligned per tokenizer call: one call for all unseen words of the chunk (fast), and only a
# chunk's per-word lists alive at once (a corpus-sized list of them was tens of MB at 140k sentences).
ALIGN_CHUNK = 8192
A = TypeVar("A")  # np.ndarray from the collator, torch.Tensor after Batch.to


def encode_sentences(
    aligner: SubwordAligner,
    vocab: Optional[Vocab],
    sentences: Sequence[Sequence[str]],
    tags: Optional[Sequence[Sequence[int]]] = None,
    start_index: int = 0,
    chars: Optional[CharVocab] = None,
    documents: Optional[Sequence[int]] = None,
    context: int = 0,
    known: Optional[Sequence[Sequence[int]]] = None,
) -> EncodedStore:
    """``sentences`` as ids, in flat arrays (``store[i]`` is sentence ``i``'s ``Encoded``). With
    ``context`` > 0, each sentence also gets up to ``context`` subwords of the sentences before and
    after it that share its ``documents`` id (all of them when None)."""
    store = EncodedStore(start_index, tags is not None, chars is not None, known is not None, documents, context)
    for first in range(0, len(sentences), ALIGN_CHUNK):
        chunk = sentences[first: first + ALIGN_CHUNK]
        for i, (tokens, p) in enumerate(zip(chunk, aligner.pieces(chunk)), first):
            store.append(vocab.encode(tokens) if vocab is not None else [0] * len(tokens), p,
                         None if tags is None else tags[i], None if chars is None else chars.encode(tokens),
                         None if known is None else known[i])
    return store


@dataclass
class Batch(Generic[A]):
    """B sentences of at most T words, encoded in W windows of S subwords: numpy arrays from the
    collator (``Batch[np.ndarray]``), tensors after :meth:`to` (``Batch[torch.Tensor]``).

    input_ids, attention_mask: (W, S) int64. pools: one (src, dst, weight) triple per part of the
    pooling (``data.pooling.POOLINGS``); src (P,) int64 indexes the flattened (W*S) encoder output, dst
    (P,) int64 the flattened (B*T) word grid, weight (P,) float32. word_ids, tags, known: (B, T) int64;
    mask: (B, T) bool; lengths: (B,) int64; char_ids: (B, T, L) int64; indices: input positions.
    """

    input_ids: A
    attention_mask: A
    pools: list[tuple[A, A, A]]
    word_ids: A
    mask: A
    tags: Optional[A]
    lengths: A
    indices: list[int]
    char_ids: Optional[A] = None  # (B, T, L) character ids, 0-padded, with model.chars
    known: Optional[A] = None  # (B, T) known-tag ids (partial labels; see Encoded.known)

    def to(self, device: "torch.device") -> "Batch[torch.Tensor]":
        """The same batch as tensors on ``device`` (numpy arrays are wrapped without a copy first)."""
        import torch

        def move(x: Any) -> Any:
            if x is None:
                return None
            return (torch.from_numpy(x) if isinstance(x, np.ndarray) else x).to(device, non_blocking=True)

        return Batch(move(self.input_ids), move(self.attention_mask),
                     [(move(s), move(d), move(w)) for s, d, w in self.pools],
                     move(self.word_ids), move(self.mask), move(self.tags), move(self.lengths), self.indices,
                     move(self.char_ids), move(self.known))


def _padded(rows: Sequence[Sequence[int]], mask: np.ndarray, fill: int = 0) -> np.ndarray:
    """``rows`` left-aligned in an int64 array of ``mask``'s shape (``mask``: where each row's values go)."""
    out = np.full(mask.shape, fill, dtype=np.int64)
    out[mask] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(mask.sum()))
    return out


class Collator:
    """Turns a list of ``Encoded`` into a ``Batch`` of numpy arrays (windows, pooling maps, padding)."""

    def __init__(self, cls_id: int, sep_id: int, pad_id: int, max_length: int, stride: int, pooling: str,
                 pad_multiple: int = 1) -> None:
        """``pooling``: a name in ``data.pooling.POOLINGS``. ``pad_multiple``: the word and subword axes are
        padded up to a multiple of it (never past ``max_length`` subwords). Every new (B, T) shape leaves
        the allocator its own free blocks; with rounding a training epoch sees a few shapes instead of
        hundreds (peak RSS on CoNLL-2003: 1.8 GB at 1, 1.0 GB at 16). Padding is masked, so the results
        are the same up to float rounding."""
        self.parts = get_pooling(pooling).parts
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be at least 1, got {pad_multiple}")
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.max_length, self.pad_multiple = max_length, pad_multiple
        self.content = max_length - 2  # room for [CLS] and [SEP]
        self.stride = stride
        self.pooling = pooling

    def __call__(self, items: Sequence[Encoded]) -> Batch[np.ndarray]:
        T = self._round(max(len(x) for x in items))
        rows: list[list[int]] = []
        # One entry per pooled word (row, column of its first subword, subwords, word-grid cell), in
        # batch order; the readers of the pooling turn them into maps at once.
        owned_row: list[int] = []
        owned_first: list[int] = []
        owned_n: list[int] = []
        owned_dst: list[int] = []
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
                r = len(rows)
                for t in range(s, e):
                    if owner is None or owner[t] == w:
                        owned_row.append(r)
                        owned_first.append(len(row))
                        owned_n.append(lengths[t])
                        owned_dst.append(b * T + t)
                    row.extend(item.pieces[t])
                row.extend(right)
                row.append(self.sep_id)
                rows.append(row)
        S = min(self._round(max(len(r) for r in rows)), self.max_length)
        row_lengths = np.array([len(r) for r in rows], dtype=np.int64)
        attention = np.arange(S)[None, :] < row_lengths[:, None]
        input_ids = _padded(rows, attention, self.pad_id)
        row_a, first_a = np.array(owned_row, dtype=np.int64), np.array(owned_first, dtype=np.int64)
        n_a, dst_a = np.array(owned_n, dtype=np.int64), np.array(owned_dst, dtype=np.int64)
        pools = []
        for part in self.parts:
            repeats, cols, weights = READERS[part](first_a, n_a)
            if weights is None:
                weights = np.ones(len(cols), dtype=np.float32)
            pools.append((np.repeat(row_a, repeats) * S + cols, np.repeat(dst_a, repeats), weights))
        lengths_a = np.array([len(x) for x in items], dtype=np.int64)
        mask = np.arange(T)[None, :] < lengths_a[:, None]
        word_ids = _padded([x.word_ids for x in items], mask)
        tags = None
        if all(x.tags is not None for x in items):
            tags = _padded([x.tags for x in items], mask)  # type: ignore[misc]
        char_ids = None
        if items[0].char_ids is not None:
            words = [c for x in items for c in x.char_ids]  # type: ignore[union-attr]
            char_lengths = np.array([len(c) for c in words], dtype=np.int64)
            per_word = _padded(words, np.arange(int(char_lengths.max()))[None, :] < char_lengths[:, None])
            char_ids = np.zeros((len(items), T, per_word.shape[1]), dtype=np.int64)
            char_ids[mask] = per_word
        known = None
        if all(x.known is not None for x in items):  # padding is masked out: any id does there
            known = _padded([x.known for x in items], mask)  # type: ignore[misc]
        return Batch(input_ids, attention.astype(np.int64), pools, word_ids, mask, tags, lengths_a,
                     [x.index for x in items], char_ids, known)

    def _round(self, n: int) -> int:
        return -(-n // self.pad_multiple) * self.pad_multiple


def _cut(order: list[int], width: Sequence[int], batch_size: int, batch_tokens: Optional[int]) -> list[list[int]]:
    """Consecutive batches of ``order`` (sorted by length): ``batch_size`` sentences each, or as many as fit
    in ``batch_tokens`` padded subwords (a longer sentence alone forms a batch: nothing is dropped)."""
    if batch_tokens is None:
        return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in order:
        if current and max(widest, width[i]) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, widest = [], 0
        current.append(i)
        widest = max(widest, width[i])
    if current:
        batches.append(current)
    return batches


def batch_indices(items: Sequence[Encoded], batch_size: int, shuffle: bool, rng: Optional[random.Random] = None,
                  bucket_factor: int = 50, batch_tokens: Optional[int] = None) -> list[list[int]]:
    """The batches of ``bucketed_batches`` as positions in ``items``, without building any record."""
    sizes = piece_counts(items)
    width = widths(items) if batch_tokens is not None else sizes
    order = list(range(len(items)))
    if not shuffle:
        order.sort(key=lambda i: -sizes[i])
        return _cut(order, width, batch_size, batch_tokens)
    assert rng is not None, "shuffling needs a seeded random.Random"
    rng.shuffle(order)
    chunk = batch_size * bucket_factor
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c: c + chunk], key=sizes.__getitem__)
        batches.extend(_cut(part, width, batch_size, batch_tokens))
    rng.shuffle(batches)
    return batches


def bucketed_batches(items: Sequence[Encoded], batch_size: int, shuffle: bool, rng: Optional[random.Random] = None,
                     bucket_factor: int = 50, batch_tokens: Optional[int] = None) -> Iterator[list[Encoded]]:
    """Batches of similar-length sentences (little padding), of ``batch_size`` sentences or, with
    ``batch_tokens``, of at most that many padded subwords. Each batch's records are built as it is
    reached (from a store: nothing per sentence lives longer than its batch).

    With ``shuffle``: the data is shuffled, cut into chunks of ``bucket_factor`` batches, sorted by
    length inside each chunk, batched, and the batches shuffled, so every epoch sees new batch mixes.
    Without: sorted by length (decreasing) over the whole list, for fast, deterministic evaluation.
    """
    for batch in batch_indices(items, batch_size, shuffle, rng, bucket_factor, batch_tokens):
        yield [items[i] for i in batch]


def micro_batches(records: Sequence[Encoded], collate: "Collator",
                  max_subwords: Optional[int]) -> list[tuple[Sequence[Encoded], Batch[np.ndarray]]]:
    """``records`` collated as one ``Batch``, or, when its padded subwords (W * S) exceed ``max_subwords``,
    as consecutive halves (recursively) that each fit or hold one sentence; each part with its records.
    A batch of 32 sentences holding a corpus's one 113-word sentence is padded to 32 x 128 words: run
    whole, that one batch sets the epoch's peak memory. Parts stay in input (length-sorted) order."""
    batch = collate(records)
    if max_subwords is None or len(records) == 1 or batch.input_ids.size <= max_subwords:
        return [(records, batch)]
    half = len(records) // 2
    return micro_batches(records[:half], collate, max_subwords) + micro_batches(records[half:], collate, max_subwords)


def make_collator(tokenizer: Any, limit: int, cfg: "EncoderConfig",
                  pad_multiple: int = 1) -> tuple[SubwordAligner, Collator]:
    """The aligner and collator for an encoder whose windows hold at most ``limit`` subwords (its
    position embeddings): window size from the config or that limit; ``pad_multiple``: see ``Collator``."""
    max_length = min(cfg.max_length or limit, limit)
    if max_length < 4:
        raise here(cfg).error(f"`model.encoder.max_length` must be at least 4, got {max_length}", "max_length")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # A word never needs more than a window (minus [CLS]/[SEP]); capping keeps every word in one window.
    aligner = SubwordAligner(tokenizer, max(1, min(cfg.max_subwords_per_word, max_length - 2)))
    return aligner, Collator(cls_id, sep_id, pad_id, max_length, cfg.stride, cfg.pooling, pad_multiple)
