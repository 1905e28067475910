"""Raw text -> documents -> SOP pairs -> masked examples -> padded batches.

Everything random here draws from a ``random.Random`` the caller seeds (by seed, epoch and example),
so an example's masking depends on nothing but its identity: an exactly resumed run masks the same
subwords without any RNG state in the checkpoint.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from ..data.conll import Sentence, is_docstart, read_conll
from ..errors import UserError

WORD_START = "\u2581"   # SentencePiece's "▁": the piece begins a whitespace word
CONTINUATION = "##"     # WordPiece: the piece continues the word before it
IGNORE = -100           # label of positions that are not predicted (torch's cross-entropy default)
CORPUS_FORMATS: tuple[str, ...] = ("auto", "text", "conll")  # how a corpus file is read (auto: detect_format)


# --------------------------------------------------------------------------- reading


def detect_format(path: Path) -> str:
    """``conll`` when the file starts with -DOCSTART-, or its first 200 non-blank lines (at least 3) all have
    the same number (>= 2) of columns and the last column holds tags (``O``, ``B-PER``, ``?``; empty after
    a tab, as partial labels are written); ``text`` when lines differ in word count, or hold one word, or
    are fewer than 3. Raw text whose lines all have the same number of words would read as a token
    column (11 of 12 words dropped): when the last words are not tags it cannot tell, and says so."""
    from ..data.schemes import tag_problem

    counts: set[int] = set()
    seen = 0
    tags = True  # every last column so far is a tag
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if not fields:
                continue
            if seen == 0 and fields[0] == "-DOCSTART-":
                return "conll"
            if line.rstrip(" \r\n\f\v").endswith("\t"):
                fields.append("")  # word<TAB>: an empty label column
            counts.add(len(fields))
            tags = tags and (not fields[-1] or fields[-1] == "?" or tag_problem(fields[-1]) is None)
            seen += 1
            if len(counts) > 1:
                return "text"
            if seen >= 200:
                break
    if seen < 3 or min(counts) < 2:
        return "text"
    if tags:
        return "conll"
    raise UserError(f"cannot tell raw text from CoNLL columns: each of the first {seen} lines has {min(counts)} "
                    "words and the last is not a tag; give the format (ner-pretrain tokenizer --format text|conll, "
                    "or data.format in the config)", path)


def read_documents(files: Sequence[str], fmt: str = "auto", token_column: int = 0,
                   formats: Optional[list[str]] = None) -> list[list[str]]:
    """Documents (lists of sentences, each a string) of every file in order.

    Text: one sentence per line, blank lines between documents. CoNLL: a sentence is its token column
    joined by spaces; -DOCSTART- lines separate documents (a file without them is one document).
    A document never spans two files. ``formats``, when given, receives each file's format as read.
    """
    documents: list[list[str]] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UserError("data file not found; check `data.files`", name)
        kind = detect_format(path) if fmt == "auto" else fmt
        if formats is not None:
            formats.append(kind)
        current: list[str] = []
        for sentence in (_conll_sentences(path, token_column) if kind == "conll" else _text_sentences(path)):
            if sentence is None:
                if current:
                    documents.append(current)
                current = []
            else:
                current.append(sentence)
        if current:
            documents.append(current)
    return documents


def iter_sentences(files: Sequence[str], fmt: str = "auto", token_column: int = 0) -> Iterator[str]:
    """Every sentence of ``files`` (streamed; for vocabulary training)."""
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UserError("input file not found; check the path", name)
        kind = detect_format(path) if fmt == "auto" else fmt
        for sentence in (_conll_sentences(path, token_column) if kind == "conll" else _text_sentences(path)):
            if sentence is not None:
                yield sentence


def _text_sentences(path: Path) -> Iterator[Optional[str]]:
    """Sentences of a text file; None at each document boundary (a blank line)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                text = line.strip()
                yield text if text else None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}); convert the file to UTF-8", path) from None


def _conll_sentences(path: Path, token_column: int) -> Iterator[Optional[str]]:
    """Sentences of a CoNLL file (its token column); None at each -DOCSTART-."""
    for item in read_conll(path, token_column=token_column, label_column=token_column):
        if isinstance(item, Sentence):
            yield " ".join(item.tokens)
        elif is_docstart(item):
            yield None


# --------------------------------------------------------------------------- SOP pairs


@dataclass
class Pair:
    """Two consecutive segments of one document: ``a`` then ``b`` as read (label 0) or swapped (label 1)."""

    a: list[int]
    b: list[int]
    label: int
    document: int

    def __len__(self) -> int:
        return len(self.a) + len(self.b) + 3


def make_pairs(document: Sequence[Sequence[int]], index: int, max_seq_length: int, short_seq_prob: float,
               rng: random.Random) -> list[Pair]:
    """SOP pairs of one document (subword ids per sentence), ALBERT's ``create_instances_from_document``
    without its random-document fallback: a chunk of one sentence is split inside the sentence instead,
    so no pair ever holds text of two documents."""
    budget = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    sentences: list[list[int]] = []
    for ids in document:
        if len(ids) > budget:  # cut into pieces of half a pair, in order: truncation would lose them
            half = max(1, budget // 2)
            sentences.extend(list(ids[i:i + half]) for i in range(0, len(ids), half))
        elif ids:
            sentences.append(list(ids))
    pairs: list[Pair] = []
    target = _target(budget, short_seq_prob, rng)
    chunk: list[list[int]] = []
    length = 0
    for i, ids in enumerate(sentences):
        chunk.append(ids)
        length += len(ids)
        if i == len(sentences) - 1 or length >= target:
            pair = _split(chunk, index, budget, rng)
            if pair is not None:
                pairs.append(pair)
            chunk, length, target = [], 0, _target(budget, short_seq_prob, rng)
    return pairs


def _target(budget: int, short_seq_prob: float, rng: random.Random) -> int:
    return rng.randint(2, budget) if rng.random() < short_seq_prob else budget


def _split(chunk: list[list[int]], index: int, budget: int, rng: random.Random) -> Optional[Pair]:
    if len(chunk) >= 2:
        cut = rng.randint(1, len(chunk) - 1)
        a = [t for s in chunk[:cut] for t in s]
        b = [t for s in chunk[cut:] for t in s]
    elif len(chunk[0]) >= 2:
        cut = rng.randint(1, len(chunk[0]) - 1)
        a, b = chunk[0][:cut], chunk[0][cut:]
    else:
        return None  # a one-subword document has no order to predict
    while len(a) + len(b) > budget:  # ALBERT's truncate_seq_pair: the longer side, front or back at random
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]
    if rng.random() < 0.5:
        return Pair(b, a, 1, index)
    return Pair(a, b, 0, index)


# --------------------------------------------------------------------------- masking


@dataclass
class Vocabulary:
    """What masking needs of a tokenizer: special ids, the [MASK] id, word starts, random candidates."""

    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    starts_word: list[bool]   # per id: the piece begins a word (whole-word masking)
    regular: list[int]        # ids a random replacement draws from (no specials)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "Vocabulary":
        missing = [name for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id")
                   if getattr(tokenizer, name) is None]
        if missing:
            raise UserError(f"the tokenizer has no {', '.join(m[:-9] for m in missing)} token: MLM + SOP need "
                            "[CLS], [SEP], <pad> and [MASK] (a `ner-pretrain tokenizer` vocabulary has them)",
                            getattr(tokenizer, "name_or_path", "tokenizer") or "tokenizer")
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        sentencepiece = any(p.startswith(WORD_START) for p in pieces if p)
        wordpiece = not sentencepiece and any(p.startswith(CONTINUATION) for p in pieces if p)
        if sentencepiece:
            starts = [bool(p) and p.startswith(WORD_START) for p in pieces]
        elif wordpiece:
            starts = [not (p or "").startswith(CONTINUATION) for p in pieces]
        else:  # no marker: every subword is its own word
            starts = [True] * len(pieces)
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id,
                   starts, [i for i in range(len(pieces)) if i not in special])


@dataclass(frozen=True)
class Masking:
    probability: float = 0.15
    mask: float = 0.8
    random: float = 0.1
    max_ngram: int = 3
    whole_words: bool = True
    max_predictions: Optional[int] = None


def words_of(ids: Sequence[int], offset: int, vocab: Vocabulary, whole_words: bool) -> list[list[int]]:
    """Positions (``offset`` + index) of each word of one segment; a segment's first subword always starts one."""
    words: list[list[int]] = []
    for i, token in enumerate(ids):
        if not words or not whole_words or vocab.starts_word[token]:
            words.append([offset + i])
        else:
            words[-1].append(offset + i)
    return words


def choose_ngrams(segments: Sequence[list[list[int]]], n_tokens: int, masking: Masking,
                  rng: random.Random) -> list[list[list[int]]]:
    """ALBERT's n-gram choice: words of n-grams (n in 1..max_ngram, p(n) ∝ 1/n, never across segments)
    until ``probability`` of the ``n_tokens`` subwords are chosen; returns each n-gram's words."""
    budget = max(1, round(n_tokens * masking.probability))
    if masking.max_predictions is not None:
        budget = min(budget, masking.max_predictions)
    weights = [1.0 / n for n in range(1, masking.max_ngram + 1)]
    starts = [(s, w) for s, words in enumerate(segments) for w in range(len(words))]
    rng.shuffle(starts)
    covered: set[tuple[int, int]] = set()
    chosen: list[list[list[int]]] = []
    count = 0
    for s, w in starts:
        if count >= budget:
            break
        words = segments[s]
        room = min(masking.max_ngram, len(words) - w)
        n = rng.choices(range(1, room + 1), weights[:room])[0]
        # Too long for what is left of the budget: shorter n-grams from the same start (ALBERT does this).
        while n > 1 and count + sum(len(x) for x in words[w:w + n]) > budget:
            n -= 1
        size = sum(len(x) for x in words[w:w + n])
        if count + size > budget or any((s, w + k) in covered for k in range(n)):
            continue
        covered.update((s, w + k) for k in range(n))
        chosen.append(words[w:w + n])
        count += size
    return chosen


@dataclass
class Example:
    """One masked pair: ``input_ids``, ``token_type_ids`` and ``labels`` (IGNORE where not predicted), length S."""

    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[int]
    sop_label: int


def mask_pair(pair: Pair, vocab: Vocabulary, masking: Masking, rng: random.Random) -> Example:
    """``[CLS] a [SEP] b [SEP]`` with n-gram masking: of the chosen subwords ``mask`` -> [MASK],
    ``random`` -> a random regular subword, the rest kept; each is predicted."""
    ids = [vocab.cls_id, *pair.a, vocab.sep_id, *pair.b, vocab.sep_id]
    types = [0] * (len(pair.a) + 2) + [1] * (len(pair.b) + 1)
    segments = [words_of(pair.a, 1, vocab, masking.whole_words),
                words_of(pair.b, len(pair.a) + 2, vocab, masking.whole_words)]
    labels = [IGNORE] * len(ids)
    inputs = list(ids)
    for ngram in choose_ngrams(segments, len(pair.a) + len(pair.b), masking, rng):
        for word in ngram:
            for position in word:
                labels[position] = ids[position]
                r = rng.random()
                if r < masking.mask:
                    inputs[position] = vocab.mask_id
                elif r < masking.mask + masking.random:
                    inputs[position] = rng.choice(vocab.regular)
    return Example(inputs, types, labels, pair.label)


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Padded tensors: input_ids, token_type_ids, attention_mask, mlm_labels (B, S); sop_labels (B,)."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    mlm_labels: torch.Tensor
    sop_labels: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.token_type_ids,
                                                                  self.attention_mask, self.mlm_labels,
                                                                  self.sop_labels)))

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(examples), width), dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        types[row, :n] = torch.tensor(e.token_type_ids)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return Batch(ids, types, attention, labels, torch.tensor([e.sop_label for e in examples], dtype=torch.long))


def plan_batches(lengths: Sequence[int], batch_size: int, batch_tokens: Optional[int],
                 rng: random.Random) -> list[list[int]]:
    """Indices of one epoch's batches: shuffled, sorted by length within windows of 50 batches (little
    padding), then the batches shuffled. With ``batch_tokens`` a batch holds as many pairs as fit
    ``count * longest <= batch_tokens`` (a longer pair alone when even one does not fit)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    per_window = 50 * (batch_size if batch_tokens is None else max(1, batch_tokens // max(1, max(lengths, default=1))))
    batches: list[list[int]] = []
    for start in range(0, len(order), per_window):
        window = sorted(order[start:start + per_window], key=lambda i: lengths[i])
        if batch_tokens is None:
            batches.extend(window[i:i + batch_size] for i in range(0, len(window), batch_size))
            continue
        current: list[int] = []
        for i in window:
            if current and (len(current) + 1) * max(lengths[i], lengths[current[-1]]) > batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps of an epoch of ``batches`` (the last, partial accumulation is a step too)."""
    return math.ceil(batches / accumulate)
