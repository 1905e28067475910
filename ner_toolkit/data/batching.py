"""From token lists to padded tensors: subword alignment, long-sentence windows, bucketing, collate.

Every word gets exactly one encoder position to pool from ("its owner window"), so a sentence of
any length yields exactly one vector per word: long sentences are split into overlapping windows
of whole words, and each word is read from the window where it has the most context on both sides.
A word the tokenizer maps to no subword at all (a lone control or zero-width character) is given
the tokenizer's unknown token, so it still has a vector and a prediction.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import torch

from ..schema import here
from .vocab import CharVocab, Vocab
from .store import Encoded, EncodedStore, piece_counts, widths
from .pooling import POOLINGS
from .windows import SubwordAligner, fit_context, plan_windows

if TYPE_CHECKING:
    from ..config import EncoderConfig

# Sentences aligned per tokenizer call: one call for all unseen words of the chunk (fast), and only a
# chunk's per-word lists alive at once (a corpus-sized list of them was tens of MB at 140k sentences).
ALIGN_CHUNK = 8192


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
class Batch:
    """Padded tensors for B sentences of at most T words, encoded in W windows of S subwords.

    input_ids, attention_mask: (W, S). pools: one or two (src, dst, weight) triples; src (P,) indexes
    the flattened (W*S) encoder output, dst (P,) the flattened (B*T) word grid, weight (P,) float.
    word_ids, tags: (B, T) long; mask: (B, T) bool; lengths: (B,) long; indices: input positions.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pools: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    word_ids: torch.Tensor
    mask: torch.Tensor
    tags: Optional[torch.Tensor]
    lengths: torch.Tensor
    indices: list[int]
    char_ids: Optional[torch.Tensor] = None  # (B, T, L) character ids, 0-padded, with model.chars
    known: Optional[torch.Tensor] = None  # (B, T) known-tag ids (partial labels; see Encoded.known)

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask),
                     [(move(s), move(d), move(w)) for s, d, w in self.pools],
                     move(self.word_ids), move(self.mask), move(self.tags), move(self.lengths), self.indices,
                     move(self.char_ids), move(self.known))


class Collator:
    """Turns a list of ``Encoded`` into a ``Batch`` (windows, pooling maps, padding)."""

    def __init__(self, cls_id: int, sep_id: int, pad_id: int, max_length: int, stride: int, pooling: str,
                 pad_multiple: int = 1) -> None:
        """``pad_multiple``: the word and subword axes are padded up to a multiple of it (never past
        ``max_length`` subwords). Every new (B, T) shape leaves the allocator its own free blocks; with
        rounding a training epoch sees a few shapes instead of hundreds (peak RSS on CoNLL-2003: 1.8 GB
        at 1, 1.0 GB at 16). Padding is masked, so the results are the same up to float rounding."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be at least 1, got {pad_multiple}")
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.max_length, self.pad_multiple = max_length, pad_multiple
        self.content = max_length - 2  # room for [CLS] and [SEP]
        self.stride = stride
        self.pooling = pooling

    def __call__(self, items: Sequence[Encoded]) -> Batch:
        T = self._round(max(len(x) for x in items))
        rows: list[list[int]] = []
        kinds = ("first", "last") if self.pooling == "first_last" else (self.pooling,)
        maps = {k: ([], [], []) for k in kinds}
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
                    r = len(rows)  # (row, column) pairs are flattened once S is known
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
        # One tensor construction per field (padded Python lists), not one per row: collate stays a
        # small fraction of a prediction step.
        S = min(self._round(max(len(r) for r in rows)), self.max_length)
        input_ids = torch.tensor([r + [self.pad_id] * (S - len(r)) for r in rows], dtype=torch.long)
        row_lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        attention = (torch.arange(S)[None, :] < row_lengths[:, None]).long()
        pools = []
        for kind in kinds:
            src_l, dst_l, w_l = maps[kind]
            pools.append((torch.tensor([r * S + c for r, c in src_l], dtype=torch.long),
                          torch.tensor(dst_l, dtype=torch.long), torch.tensor(w_l, dtype=torch.float32)))
        lengths_t = torch.tensor([len(x) for x in items], dtype=torch.long)
        mask = torch.arange(T)[None, :] < lengths_t[:, None]
        word_ids = torch.tensor([x.word_ids + [0] * (T - len(x)) for x in items], dtype=torch.long)
        tags = None
        if all(x.tags is not None for x in items):
            tags = torch.tensor([x.tags + [0] * (T - len(x)) for x in items], dtype=torch.long)  # type: ignore[operator]
        char_ids = None
        if items[0].char_ids is not None:
            L = max(len(c) for x in items for c in x.char_ids)  # type: ignore[union-attr]
            pad_word = [0] * L
            char_ids = torch.tensor([[c + [0] * (L - len(c)) for c in x.char_ids] + [pad_word] * (T - len(x))  # type: ignore[union-attr]
                                     for x in items], dtype=torch.long)
        known = None
        if all(x.known is not None for x in items):  # padding is masked out: any id does there
            known = torch.tensor([x.known + [0] * (T - len(x)) for x in items], dtype=torch.long)  # type: ignore[operator]
        return Batch(input_ids, attention, pools, word_ids, mask, tags, lengths_t, [x.index for x in items], char_ids,
                     known)


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
                  max_subwords: Optional[int]) -> list[tuple[Sequence[Encoded], Batch]]:
    """``records`` collated as one ``Batch``, or, when its padded subwords (W * S) exceed ``max_subwords``,
    as consecutive halves (recursively) that each fit or hold one sentence; each part with its records.
    A batch of 32 sentences holding a corpus's one 113-word sentence is padded to 32 x 128 words: run
    whole, that one batch sets the epoch's peak memory. Parts stay in input (length-sorted) order."""
    batch = collate(records)
    if max_subwords is None or len(records) == 1 or batch.input_ids.numel() <= max_subwords:
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
