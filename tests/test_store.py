"""Flat-array corpus storage (``data.store``): rows in = rows out, and encoded sentences read back
exactly as the per-record encoding built them, in a few bytes per token."""
from __future__ import annotations

import random
import tracemalloc

import pytest

from ner_toolkit.data.batching import batch_indices, bucketed_batches, encode_sentences
from ner_toolkit.data.store import Encoded, EncodedStore, RaggedInts, RaggedStrings, widths
from ner_toolkit.data.vocab import CharVocab, Vocab
from ner_toolkit.data.windows import neighbour_context

WORDS = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", ".", "Peter", "Blackburn", "",
         "naïve", "BRUSSELS", "1996-08-22", "x" * 30]


class _Aligner:
    """Deterministic subwords (1-3 per word, from its characters), one shared list per distinct word
    as ``SubwordAligner`` gives."""

    def __init__(self) -> None:
        self.cache: dict[str, list[int]] = {}

    def pieces(self, sentences):
        for w in {w for s in sentences for w in s}:
            self.cache.setdefault(w, [3 + (ord(c) % 50) for c in (w or "?")[: 1 + len(w) % 3]])
        return [[self.cache[w] for w in s] for s in sentences]


def _random_rows(rng: random.Random, n: int) -> list[list[str]]:
    return [[rng.choice(WORDS) for _ in range(rng.choice([0, 1, 2, 5, 17]))] for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_ragged_rows_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    rows = _random_rows(rng, 60)
    strings = RaggedStrings(rows)
    ints = RaggedInts([[len(w) - 3 for w in r] for r in rows])  # negatives and zeros too
    assert len(strings) == len(ints) == len(rows)
    assert list(strings) == rows and [strings[i] for i in range(len(rows))] == rows
    assert strings[-1] == rows[-1] and strings[3:9] == rows[3:9] and strings[::-7] == rows[::-7]
    assert list(ints) == [[len(w) - 3 for w in r] for r in rows]
    assert [strings.row_length(i) for i in range(len(rows))] == [len(r) for r in rows]
    assert list(strings.strings()) == [w for r in rows for w in r]
    assert len(strings.table) == len({w for r in rows for w in r})  # each distinct string once
    with pytest.raises(IndexError):
        strings[len(rows)]
    with pytest.raises(IndexError):
        ints[-len(rows) - 1]


def test_rows_read_back_are_copies() -> None:
    """A caller that edits a row it read must not change the corpus."""
    strings = RaggedStrings([["a", "b"]])
    row = strings[0]
    row[0] = "z"
    assert strings[0] == ["a", "b"]


def add_context(items, documents, context) -> None:
    """Fill each record's ``left`` / ``right`` with the nearest ``context`` subwords of its document."""
    flat = [[i for word in item.pieces for i in word] for item in items]
    for n, item in enumerate(items):
        item.left, item.right = neighbour_context(n, len(items), flat.__getitem__, documents, context)


def _records(sentences, tags, chars, known, documents, context) -> list[Encoded]:
    """The reference: one record per sentence, context filled by ``add_context`` over the whole list."""
    aligner, vocab = _Aligner(), Vocab.build((w for s in sentences for w in s), 1, False)
    out = [Encoded(vocab.encode(s), aligner.pieces([s])[0], tags[i], i, chars.encode(s), known=known[i])
           for i, s in enumerate(sentences)]
    add_context(out, documents, context)
    return out


@pytest.mark.parametrize("seed,context", [(0, 0), (1, 3), (2, 8), (3, 40)])
def test_store_reads_back_what_per_record_encoding_builds(seed: int, context: int) -> None:
    rng = random.Random(seed)
    sentences = [s for s in _random_rows(rng, 80) if s]
    tags = [[rng.randrange(9) for _ in s] for s in sentences]
    known = [[rng.randrange(6) for _ in s] for s in sentences]
    documents = sorted(rng.randrange(6) for _ in sentences)
    chars = CharVocab.build((w for s in sentences for w in s), 1, 12)
    vocab = Vocab.build((w for s in sentences for w in s), 1, False)
    store = encode_sentences(_Aligner(), vocab, sentences, tags, chars=chars, documents=documents, context=context,
                             known=known)
    assert isinstance(store, EncodedStore) and len(store) == len(sentences)
    reference = _records(sentences, tags, chars, known, documents, context)
    assert list(store) == reference
    assert store[-2] == reference[-2] and store[5:9] == reference[5:9]
    assert list(widths(store)) == list(widths(reference))
    for shuffle in (False, True):
        for budget in (None, 40):
            ours = list(bucketed_batches(store, 7, shuffle, random.Random(seed), batch_tokens=budget))
            theirs = list(bucketed_batches(reference, 7, shuffle, random.Random(seed), batch_tokens=budget))
            assert ours == theirs
            assert len(batch_indices(store, 7, shuffle, random.Random(seed), batch_tokens=budget)) == len(ours)


def test_store_without_optional_fields_and_mixed_fields_refused() -> None:
    store = encode_sentences(_Aligner(), None, [["EU", "call"], ["Peter"]], start_index=10)
    assert [(e.word_ids, e.tags, e.char_ids, e.known, e.index) for e in store] == \
        [([0, 0], None, None, None, 10), ([0], None, None, None, 11)]
    with pytest.raises(ValueError, match="same fields"):
        store.append([1], [[5]], tags=[0])


def test_store_costs_a_few_bytes_per_token() -> None:
    """What a training set keeps after encoding: per-sentence Python lists cost over 100 bytes per
    token (a list and a pointer per field); the flat store must stay far below that."""
    rng = random.Random(0)
    sentences = [[rng.choice(WORDS) for _ in range(rng.randint(1, 30))] for _ in range(4000)]
    tags = [[rng.randrange(9) for _ in s] for s in sentences]
    tokens = sum(len(s) for s in sentences)
    vocab, aligner = Vocab.build((w for s in sentences for w in s), 1, False), _Aligner()
    aligner.pieces(sentences)  # the subword cache is the tokenizer's, not the store's
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = encode_sentences(aligner, vocab, sentences, tags)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store) == 4000
    assert kept / tokens < 24, f"{kept / tokens:.1f} bytes per token"
