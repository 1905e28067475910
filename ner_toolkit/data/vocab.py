"""Word vocabulary and pretrained word vectors (GloVe / word2vec text, plain or gzip)."""
from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional, Sequence

import torch

from ner_toolkit.atomic import atomic_write
from ner_toolkit.errors import PathLike, UserError

__all__ = ["PAD", "UNK", "Vocab", "CharVocab", "load_vectors", "vector_coverage"]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_SPECIALS = (PAD, UNK)
# The CoNLL reader splits columns on ASCII whitespace only, so only these can never
# occur inside a token (and would break the one-word-per-line vocabulary file).
_WHITESPACE = frozenset(" \t\n\r\f\v")
_GZIP_MAGIC = b"\x1f\x8b"
_INIT_STD = 0.1


class Vocab:
    """A fixed word list mapping tokens to ids; ``<pad>`` is 0 and ``<unk>`` (out of vocabulary) is 1.

    With ``lowercase=True`` tokens are lowercased before lookup, so ``words`` should
    hold lowercase forms (as ``build`` produces).
    """

    def __init__(self, words: Sequence[str], lowercase: bool = False) -> None:
        if tuple(words[:2]) != _SPECIALS:
            raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self._words = list(words)
        self._index = {word: i for i, word in enumerate(self._words)}
        if len(self._index) != len(self._words):
            raise ValueError("a vocabulary may not hold the same word twice")
        self.lowercase = lowercase

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        min_freq: int = 1,
        lowercase: bool = False,
        max_size: Optional[int] = None,
    ) -> "Vocab":
        """Count ``tokens`` and keep those seen ``min_freq`` times or more.

        Order is deterministic: frequency descending, then the word. ``max_size``
        bounds ``len(vocab)``, the two special entries included.
        """
        if max_size is not None and max_size < len(_SPECIALS):
            raise ValueError(f"max_size must be at least {len(_SPECIALS)} (room for {PAD} and {UNK}), got {max_size}")
        counts = Counter(token.lower() for token in tokens) if lowercase else Counter(tokens)
        for special in _SPECIALS:
            counts.pop(special, None)  # a literal "<unk>" in a corpus maps to the UNK id anyway
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max_size - len(_SPECIALS)]
        return cls([*_SPECIALS, *kept], lowercase=lowercase)

    @property
    def words(self) -> list[str]:
        """All words, in id order."""
        return list(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, token: str) -> bool:
        return (token.lower() if self.lowercase else token) in self._index

    def lookup(self, token: str) -> int:
        """The id of ``token``; ``UNK_ID`` when it is out of vocabulary."""
        return self._index.get(token.lower() if self.lowercase else token, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """The ids of ``tokens``."""
        index, lower = self._index, self.lowercase
        return [index.get(t.lower() if lower else t, UNK_ID) for t in tokens]

    def save(self, path: PathLike) -> None:
        """Write one word per line (UTF-8), atomically."""
        for word in self._words:
            if not word or _WHITESPACE.intersection(word):
                raise ValueError(f"cannot save word {word!r}: empty or contains whitespace")
        with atomic_write(path) as handle:
            handle.write("\n".join(self._words) + "\n")

    @classmethod
    def load(cls, path: PathLike, lowercase: bool) -> "Vocab":
        """Read a file written by ``save``; a damaged file is a UserError naming the line."""
        words: list[str] = []
        seen: dict[str, int] = {}
        fix = "restore the model directory's vocabulary file or train again"
        for number, raw in enumerate(_open_binary(path, "vocabulary file"), start=1):
            try:
                word = raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"invalid UTF-8 in vocabulary file; {fix}", path, number) from None
            if number <= len(_SPECIALS) and word != _SPECIALS[number - 1]:
                raise UserError(
                    f"expected {_SPECIALS[number - 1]!r} on line {number}, found {word!r}; "
                    f"this is not a vocabulary file or it is corrupt; {fix}",
                    path,
                    number,
                )
            if not word or _WHITESPACE.intersection(word):
                raise UserError(f"word {word!r} is empty or contains whitespace; {fix}", path, number)
            if word in seen:
                raise UserError(f"word {word!r} repeats line {seen[word]}; {fix}", path, number)
            seen[word] = number
            words.append(word)
        if len(words) < len(_SPECIALS):
            raise UserError(f"vocabulary file has {len(words)} line(s), needs {PAD!r} and {UNK!r} first; {fix}", path)
        return cls(words, lowercase=lowercase)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, lowercase={self.lowercase})"


def load_vectors(path: PathLike, vocab: Vocab, dim: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read pretrained vectors for the words of ``vocab``, streaming the file.

    Accepts GloVe text (``word v1 ... vd``) and word2vec/fastText text (first line
    ``count dim``), plain or gzip-compressed. A vocabulary word takes the vector of
    the same word, else of its lowercase form. Words not found keep a N(0, 0.1) row
    drawn from a generator seeded with 0; the ``<pad>`` row is zero.

    Returns ``(matrix, found)``: a float32 tensor of shape ``(len(vocab), d)`` and a bool
    tensor ``(len(vocab),)`` marking the rows that received a pretrained vector.
    """
    exact = {word: i for i, word in enumerate(vocab.words) if i != PAD_ID}
    by_lower: dict[str, list[int]] = {}
    for word, i in exact.items():
        by_lower.setdefault(word.lower(), []).append(i)
    # 2 = exact match, 1 = lowercase match, 0 = none; a better match overrides a worse one
    # whatever order the file lists them in, and the first of equals wins.
    quality = [0] * len(vocab)
    matrix: Optional[torch.Tensor] = None
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
            matrix = torch.empty(len(vocab), d).normal_(0.0, _INIT_STD, generator=generator)
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
        if targets:
            row = _parse_row(fields[1:], path, number)
            for j, q in targets:
                matrix[j] = row
                quality[j] = q

    if matrix is None or (header is not None and rows == 0):
        raise UserError("the vectors file holds no vectors; check that it is a GloVe or word2vec text file", path)
    if header is not None and rows != header[0]:
        raise UserError(f"the word2vec header announces {header[0]} vectors but the file has {rows} rows "
                        "(truncated or edited?); fix the header's count or the file", path, header[1])
    matrix[PAD_ID] = 0.0
    return matrix, torch.tensor([q > 0 for q in quality], dtype=torch.bool)


def vector_coverage(tokens: Iterable[str], vocab: Vocab, found: torch.Tensor) -> tuple[int, int]:
    """``(covered, total)``: how many of ``tokens`` (running text, repeats counted) map to a vocabulary
    row with a pretrained vector. Out-of-vocabulary tokens (``<unk>``) count as not covered."""
    ids = torch.tensor(vocab.encode(list(tokens)), dtype=torch.long)
    return int(found[ids].sum()) if len(ids) else 0, len(ids)


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


def _parse_row(values: list[bytes], path: PathLike, number: int) -> torch.Tensor:
    try:
        row = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise UserError(
            f"value {bad.decode('utf-8', 'replace')!r} is not a number; fix or drop this row", path, number
        ) from None
    if not torch.isfinite(row).all():
        raise UserError("row holds an infinite or NaN value; fix or drop this row", path, number)
    return row


def _is_number(value: bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _open_binary(path: PathLike, what: str) -> Iterator[bytes]:
    """Yield the raw lines of ``path``, gunzipping it when it is gzip-compressed."""
    if os.path.isdir(path):
        raise UserError(f"is a directory, not a {what}; pass the path of a file", path)
    try:
        handle: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"no such {what}; check the path", path) from None
    except OSError as e:
        raise UserError(f"cannot read the {what} ({e.strerror}); check the path and its permissions", path) from None
    with handle:
        # Detect gzip by its magic bytes, not the name: renamed files are common.
        compressed = handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        stream: BinaryIO = gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle
        number = 0
        try:
            for number, line in enumerate(stream, start=1):
                yield line
        except (gzip.BadGzipFile, EOFError, OSError) as e:
            if compressed:
                raise UserError(
                    f"the gzip {what} is damaged or truncated ({e}); download or compress it again", path, number + 1
                ) from None
            raise UserError(f"cannot read the {what} ({e}); check the disk and the file", path, number + 1) from None


class CharVocab:
    """Characters seen in training words: id 0 pads, 1 is unknown, then one id per character.

    Saved as a JSON list (any character, line separators included, survives a round trip).
    """

    CACHE_WORDS = 500_000  # distinct words remembered by encode (bounded on endless prediction streams)

    def __init__(self, chars: Sequence[str], max_length: int) -> None:
        self.chars = list(chars)
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}
        self.max_length = max_length
        self._words: dict[str, list[int]] = {}

    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int, max_length: int) -> "CharVocab":
        counts = Counter(c for token in tokens for c in token)
        return cls(sorted(c for c, n in counts.items() if n >= min_freq), max_length)

    def __len__(self) -> int:
        return len(self.chars) + 2

    def encode(self, tokens: Sequence[str]) -> list[list[int]]:
        """Character ids per token, the first ``max_length`` characters (never empty: an empty token is UNK).

        A word's list is computed once and shared by its every occurrence (read-only): a corpus repeats
        its words, so this is both faster and smaller than a list per token."""
        cache = self._words
        out = []
        for token in tokens:
            ids = cache.get(token)
            if ids is None:
                if len(cache) >= self.CACHE_WORDS:
                    cache.clear()
                ids = cache[token] = [self.index.get(c, UNK_ID) for c in token[: self.max_length]] or [UNK_ID]
            out.append(ids)
        return out

    def save(self, path: PathLike) -> None:
        import json

        with atomic_write(path) as fh:
            fh.write(json.dumps({"max_length": self.max_length, "chars": self.chars}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "CharVocab":
        import json

        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(list(raw["chars"]), int(raw["max_length"]))
        except FileNotFoundError:
            raise UserError("missing char vocabulary; copy the model directory whole or re-train", path) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"corrupted char vocabulary: {exc}", path) from None
