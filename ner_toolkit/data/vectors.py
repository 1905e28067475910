"""Pretrained word vectors (GloVe / word2vec / fastText text, plain or gzip) matched to a ``Vocab``.

The training vocabulary's rows take the file's vectors (and then train, unless ``model.words.freeze``). With
``extend``, every other word of the file (its first ``max_words`` rows: these files list words by frequency)
gets a row too, kept at its pretrained vector in float16: a test word that training never saw still reads
its vector instead of ``<unk>``, and the model directory keeps those rows, so prediction never needs the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch

from .vocab import PAD_ID, Vocab, _open_binary
from ..errors import PathLike, UserError

__all__ = ["PretrainedVectors", "load_vectors", "vector_coverage"]

_INIT_STD = 0.1


@dataclass
class PretrainedVectors:
    """What a vectors file gives a vocabulary."""

    matrix: torch.Tensor  # (vocab.trained, d) float32: a row per training word; N(0, 0.1) where not found, pad 0
    found: torch.Tensor  # (vocab.trained,) bool: the rows that received a pretrained vector
    words: list[str]  # with extend: the file's words the training vocabulary lacks, in file order
    extra: torch.Tensor  # (len(words), d) float16: their vectors

    @property
    def extra_bytes(self) -> int:
        return self.extra.numel() * self.extra.element_size()


def load_vectors(path: PathLike, vocab: Vocab, dim: Optional[int] = None, extend: bool = False,
                 max_words: Optional[int] = None) -> PretrainedVectors:
    """Read pretrained vectors for the training words of ``vocab`` (and, with ``extend``, for the file's
    other words among its first ``max_words`` rows; all when None), streaming the file.

    Accepts GloVe text (``word v1 ... vd``) and word2vec/fastText text (first line ``count dim``), plain or
    gzip-compressed. A vocabulary word takes the vector of the same word, else of its lowercase form; words
    not found keep a N(0, 0.1) row drawn from a generator seeded with 0; the ``<pad>`` row is zero. An extra
    word is stored as ``vocab`` looks it up (lower-cased for a lowercase vocabulary); of two file words that
    read the same, the first (more frequent) one is kept.
    """
    trained = vocab.words[: vocab.trained]
    exact = {word: i for i, word in enumerate(trained) if i != PAD_ID}
    by_lower: dict[str, list[int]] = {}
    for word, i in exact.items():
        by_lower.setdefault(word.lower(), []).append(i)
    # 2 = exact match, 1 = lowercase match, 0 = none; a better match overrides a worse one
    # whatever order the file lists them in, and the first of equals wins.
    quality = [0] * len(trained)
    matrix: Optional[torch.Tensor] = None
    extra = _Rows()
    extra_words: list[str] = []
    taken: set[str] = set()
    d = 0
    header: Optional[tuple[int, int]] = None  # word2vec (count, line number of the header)
    rows = 0

    for number, raw in enumerate(_open_binary(path, "vectors file"), start=1):
        fields = raw.split()  # bytes.split: ASCII whitespace, tolerates word2vec's trailing space
        if not fields:
            continue
        if header is not None and rows == 0 and len(fields) != d + 1:
            # Rows longer than the header's size would otherwise be skipped as "words with spaces", all of them.
            raise UserError(f"the word2vec header gives {d} dimensions but the first row (line {number}) has "
                            f"{len(fields) - 1} values; fix the header to 'COUNT DIM'", path, header[1])
        if matrix is None:
            d, is_header = _dimension(fields, path, number)
            if dim is not None and d != dim:
                raise UserError(
                    f"vectors have {d} dims but model.words.dim is {dim}; set model.words.dim: {d} "
                    f"or use {dim}-dimensional vectors",
                    path,
                    number,
                )
            generator = torch.Generator().manual_seed(0)
            matrix = torch.empty(len(trained), d).normal_(0.0, _INIT_STD, generator=generator)
            extra = _Rows(d)
            if is_header:
                header = (int(fields[0]), number)
                continue
        rows += 1
        if len(fields) < d + 1:
            raise UserError(
                f"row has {len(fields) - 1} values, expected {d}; fix or drop this row "
                "(binary word2vec files are not supported: convert them to text)",
                path,
                number,
            )
        if len(fields) > d + 1:
            # A word with spaces inside (GloVe 840B has some): no CoNLL token can match it.
            continue
        # Invalid UTF-8 in a word (it happens in web-crawled vector files) cannot match a token either.
        word = fields[0].decode("utf-8", errors="replace")
        targets = []
        i = exact.get(word)
        if i is not None and quality[i] < 2:
            targets.append((i, 2))
        targets.extend((j, 1) for j in by_lower.get(word, ()) if quality[j] < 1 and j != i)
        key = word.lower() if vocab.lowercase else word  # as the vocabulary looks it up
        new = extend and (max_words is None or rows <= max_words) and key not in exact and key not in taken
        if targets or new:
            row = _parse_row(fields[1:], path, number)
            for j, q in targets:
                matrix[j] = torch.from_numpy(row)
                quality[j] = q
            if new:
                taken.add(key)
                extra_words.append(key)
                extra.append(row)

    if matrix is None or (header is not None and rows == 0):
        raise UserError("the vectors file holds no vectors; check that it is a GloVe or word2vec text file", path)
    if header is not None and rows != header[0]:
        raise UserError(f"the word2vec header announces {header[0]} vectors but the file has {rows} rows "
                        "(truncated or edited?); fix the header's count or the file", path, header[1])
    matrix[PAD_ID] = 0.0
    return PretrainedVectors(matrix, torch.tensor([q > 0 for q in quality], dtype=torch.bool), extra_words,
                             torch.from_numpy(extra.array()))


class _Rows:
    """A growing float16 (n, d) array: the extra rows of a 400,000-word file in half the memory of float32.
    Grown and trimmed in place (``ndarray.resize``: a realloc), so the peak is the rows plus at most half."""

    def __init__(self, d: int = 0) -> None:
        self.data = np.empty((1024 if d else 0, d), dtype=np.float16)
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self.data):
            self.data.resize((len(self.data) * 3 // 2, self.data.shape[1]), refcheck=False)
        self.data[self.n] = row
        self.n += 1

    def array(self) -> np.ndarray:
        self.data.resize((self.n, self.data.shape[1]), refcheck=False)
        return self.data


def vector_coverage(tokens: Iterable[str], vocab: Vocab, found: torch.Tensor) -> tuple[int, int]:
    """``(covered, total)``: how many of ``tokens`` (running text, repeats counted) map to a vocabulary
    row with a pretrained vector: a training row that ``found`` marks, or a pretrained-only row.
    Out-of-vocabulary tokens (``<unk>``) count as not covered."""
    ids = torch.tensor(vocab.encode(list(tokens)), dtype=torch.long)
    if not len(ids):
        return 0, 0
    has = torch.cat([found, torch.ones(len(vocab) - len(found), dtype=torch.bool)])
    return int(has[ids].sum()), len(ids)


def _dimension(fields: list[bytes], path: PathLike, number: int) -> tuple[int, bool]:
    """The vector size from the first row, and whether that row is a word2vec ``count dim`` header."""
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        d = int(fields[1])
        if d < 1:
            raise UserError("the word2vec header gives 0 dimensions; fix the header to 'COUNT DIM'", path, number)
        return d, True
    if len(fields) < 2:
        raise UserError(
            "first row has a word but no values; expected 'word v1 ... vd' (GloVe) or 'COUNT DIM' (word2vec)",
            path,
            number,
        )
    return len(fields) - 1, False


def _parse_row(values: list[bytes], path: PathLike, number: int) -> np.ndarray:
    """(d,) float32 from the row's values (numpy parses the bytes in C: 400,000 rows of 50 in ~2 s)."""
    try:
        row = np.array(values, dtype=np.float32)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise UserError(
            f"value {bad.decode('utf-8', 'replace')!r} is not a number; fix or drop this row", path, number
        ) from None
    if not np.isfinite(row).all():
        raise UserError("row holds an infinite or NaN value; fix or drop this row", path, number)
    return row


def _is_number(value: bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
