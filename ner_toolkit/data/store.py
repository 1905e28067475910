"""Corpus-sized data in flat arrays: ragged rows of ints or strings, and encoded sentences.

A training set used to be one Python list per sentence and field (tokens, tags, word ids, subwords,
known tags), about 2 KB of objects per sentence: on 140,410 sentences that was most of what grew with
the corpus. Here each field is one flat ``array`` plus one offsets array (4 to 8 bytes per token), and
the per-sentence records the collator reads are built on demand, one batch at a time.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union, overload

from .windows import neighbour_context


class RaggedInts(Sequence[list[int]]):
    """Rows of ints (row ``i`` is ``values[starts[i]:starts[i + 1]]``); rows read back as new lists."""

    def __init__(self, rows: Iterable[Sequence[int]] = (), typecode: str = "i") -> None:
        self.values = array(typecode)
        self.starts = array("q", [0])
        for row in rows:
            self.append(row)

    def append(self, row: Sequence[int]) -> None:
        self.values.extend(row)
        self.starts.append(len(self.values))

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row_length(self, i: int) -> int:
        return self.starts[i + 1] - self.starts[i]

    @overload
    def __getitem__(self, i: int) -> list[int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[list[int], list[list[int]]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        return self.values[self.starts[i]: self.starts[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        values, starts = self.values, self.starts
        for i in range(len(self)):
            yield values[starts[i]: starts[i + 1]].tolist()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


class RaggedStrings(Sequence[list[str]]):
    """Rows of strings: each distinct string stored once (a corpus repeats its words and its dozen
    tags), rows as ids into that table. Rows read back as new lists of the shared string objects."""

    def __init__(self, rows: Iterable[Sequence[str]] = ()) -> None:
        self.table: list[str] = []
        self._index: dict[str, int] = {}
        self.ids = RaggedInts()
        for row in rows:
            self.append(row)

    def append(self, row: Sequence[str]) -> None:
        index, table = self._index, self.table
        ids = []
        for s in row:
            k = index.get(s)
            if k is None:
                k = index[s] = len(table)
                table.append(s)
            ids.append(k)
        self.ids.append(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def row_length(self, i: int) -> int:
        return self.ids.row_length(i)

    @overload
    def __getitem__(self, i: int) -> list[str]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[str]]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[list[str], list[list[str]]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return list(map(self.table.__getitem__, self.ids[i]))

    def __iter__(self) -> Iterator[list[str]]:
        get = self.table.__getitem__
        for ids in self.ids:
            yield list(map(get, ids))

    def strings(self) -> Iterator[str]:
        """Every string of every row, in order (no row lists built)."""
        return map(self.table.__getitem__, self.ids.values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


@dataclass(slots=True)
class Encoded:
    """One sentence as ids: word ids (T), subword ids per word (T non-empty lists, shared by every
    occurrence of the word: read-only), tag ids (T) or None."""

    word_ids: list[int]
    pieces: list[list[int]]
    tags: Optional[list[int]]
    index: int
    char_ids: Optional[list[list[int]]] = None  # character ids per word, with model.chars
    # Document context (model.encoder.context): subword ids of the neighbouring sentences, read by the
    # encoder around a sentence that fits one window, never labelled or pooled.
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    # Partial labels: the known tag per word as an id of the data scheme's tags (``data.schemes.
    # reading_tables``), its unknown id where unknown; None when the training data has no unknown tag.
    known: Optional[list[int]] = None

    def __len__(self) -> int:
        return len(self.word_ids)

    @property
    def num_pieces(self) -> int:
        return sum(len(p) for p in self.pieces)


class _Table:
    """Distinct int lists (one per distinct word: its subwords or characters) and their keys."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []
        self._by_id: dict[int, int] = {}  # id() of a caller's shared list -> key (it stays alive in rows)
        self._by_value: dict[tuple[int, ...], int] = {}

    def key(self, row: list[int]) -> int:
        k = self._by_id.get(id(row))
        if k is None:
            value = tuple(row)
            k = self._by_value.get(value)
            if k is None:
                k = self._by_value[value] = len(self.rows)
                self.rows.append(row)
            self._by_id[id(self.rows[k])] = k
        return k


class EncodedStore(Sequence[Encoded]):
    """Encoded sentences in flat arrays; ``store[i]`` builds sentence ``i``'s ``Encoded`` (index
    ``start_index + i``). Document context is cut from the neighbours when a sentence is read, so it
    costs no memory. Appending is the only mutation."""

    def __init__(self, start_index: int = 0, tags: bool = False, chars: bool = False, known: bool = False,
                 documents: Optional[Sequence[int]] = None, context: int = 0) -> None:
        self.start_index = start_index
        self.word_ids = RaggedInts()
        self.piece_keys = array("i")  # per word: its key in self.pieces
        self.pieces = _Table()
        self.piece_counts = array("i")  # per sentence: subwords of all its words
        self.tags = RaggedInts(typecode="h") if tags else None
        self.known = RaggedInts(typecode="h") if known else None
        self.char_keys = array("i") if chars else None
        self.chars = _Table()
        self.context = context
        self.documents = array("q", documents) if context > 0 and documents is not None else None
        self._widths: Optional[list[int]] = None  # widths(), kept until the next append

    def append(self, word_ids: Sequence[int], pieces: Sequence[list[int]], tags: Optional[Sequence[int]] = None,
               char_ids: Optional[Sequence[list[int]]] = None, known: Optional[Sequence[int]] = None) -> None:
        if (tags is None) != (self.tags is None) or (known is None) != (self.known is None) \
                or (char_ids is None) != (self.char_keys is None):
            raise ValueError("every sentence of a store has the same fields")
        self._widths = None
        self.word_ids.append(word_ids)
        key = self.pieces.key
        self.piece_keys.extend(key(p) for p in pieces)
        self.piece_counts.append(sum(len(p) for p in pieces))
        if self.tags is not None:
            self.tags.append(tags)  # type: ignore[arg-type]
        if self.known is not None:
            self.known.append(known)  # type: ignore[arg-type]
        if self.char_keys is not None:
            self.char_keys.extend(self.chars.key(c) for c in char_ids)  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.word_ids)

    def _pieces(self, i: int) -> list[list[int]]:
        s, e = self.word_ids.starts[i], self.word_ids.starts[i + 1]
        return list(map(self.pieces.rows.__getitem__, self.piece_keys[s:e]))

    def _flat(self, i: int) -> list[int]:
        return [p for word in self._pieces(i) for p in word]

    def _context(self, i: int) -> tuple[list[int], list[int]]:
        if self.context <= 0:
            return [], []
        return neighbour_context(i, len(self), self._flat, self.documents, self.context)

    @overload
    def __getitem__(self, i: int) -> Encoded: ...
    @overload
    def __getitem__(self, i: slice) -> list[Encoded]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[Encoded, list[Encoded]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        word_ids = self.word_ids[i]  # checks the range
        s, e = self.word_ids.starts[i], self.word_ids.starts[i + 1]
        char_ids = None
        if self.char_keys is not None:
            char_ids = list(map(self.chars.rows.__getitem__, self.char_keys[s:e]))
        left, right = self._context(i)
        return Encoded(word_ids, self._pieces(i), None if self.tags is None else self.tags[i], self.start_index + i,
                       char_ids, left, right, None if self.known is None else self.known[i])

    def __iter__(self) -> Iterator[Encoded]:
        for i in range(len(self)):
            yield self[i]

    def widths(self) -> list[int]:
        """Per sentence: the subwords of its single window, [CLS], [SEP] and context included (for
        batching by subword budget) without building the records; computed once, not every epoch."""
        if self._widths is None:
            self._widths = [n + 2 + sum(map(len, self._context(i))) for i, n in enumerate(self.piece_counts)]
        return self._widths


def piece_counts(items: Sequence[Encoded]) -> Sequence[int]:
    """Subwords per sentence, read from a store's array where there is one."""
    if isinstance(items, EncodedStore):
        return items.piece_counts
    return [x.num_pieces for x in items]


def widths(items: Sequence[Encoded]) -> Sequence[int]:
    """``EncodedStore.widths`` of a store or of a list of records."""
    if isinstance(items, EncodedStore):
        return items.widths()
    return [x.num_pieces + len(x.left) + len(x.right) + 2 for x in items]
