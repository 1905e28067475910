"""Word and character vocabularies (torch-free: the ONNX runtime reads them too). Pretrained vectors: ``vectors``."""
from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional, Sequence

from ner_toolkit.atomic import atomic_write
from ner_toolkit.errors import PathLike, UserError

__all__ = ["PAD", "UNK", "Vocab", "CharVocab"]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_SPECIALS = (PAD, UNK)
# The CoNLL reader splits columns on ASCII whitespace only, so only these can never
# occur inside a token (and would break the one-word-per-line vocabulary file).
_WHITESPACE = frozenset(" \t\n\r\f\v")
_GZIP_MAGIC = b"\x1f\x8b"


class Vocab:
    """A fixed word list mapping tokens to ids; ``<pad>`` is 0 and ``<unk>`` (out of vocabulary) is 1.

    ``words``: the training vocabulary (the embedding rows that train). ``pretrained``: words only a vectors
    file had, with ids after them (rows that keep their pretrained vector: ``model.words.vectors_words: all``).
    With ``lowercase=True`` tokens are lowercased before lookup, so ``words`` should hold lowercase forms (as
    ``build`` produces). A cased vocabulary with pretrained words looks a token up as it is, then lower-cased:
    uncased vectors files (GloVe) hold lowercase forms only, and an unseen "Kuznetsov" reads "kuznetsov".
    """

    def __init__(self, words: Sequence[str], lowercase: bool = False, pretrained: Sequence[str] = ()) -> None:
        if tuple(words[:2]) != _SPECIALS:
            raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self._words = [*words, *pretrained]
        self.trained = len(words)
        self._index = {word: i for i, word in enumerate(self._words)}
        if len(self._index) != len(self._words):
            raise ValueError("a vocabulary may not hold the same word twice")
        self.lowercase = lowercase
        self._fold = bool(pretrained) and not lowercase

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

    def with_pretrained(self, words: Sequence[str]) -> "Vocab":
        """This training vocabulary followed by ``words`` (pretrained-only words; none already here)."""
        return Vocab(self._words[: self.trained], self.lowercase, words)

    @property
    def words(self) -> list[str]:
        """All words, in id order (the pretrained-only words last)."""
        return list(self._words)

    @property
    def pretrained_words(self) -> list[str]:
        """The words after the training vocabulary: rows that keep their pretrained vector."""
        return self._words[self.trained:]

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, token: str) -> bool:
        return self.lookup(token) != UNK_ID or token == UNK

    def lookup(self, token: str) -> int:
        """The id of ``token``; ``UNK_ID`` when it is out of vocabulary."""
        return self.encode([token])[0]

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """The ids of ``tokens``."""
        index = self._index
        if self._fold:
            get = index.get
            return [get(t) if t in index else get(t.lower(), UNK_ID) for t in tokens]
        if self.lowercase:
            return [index.get(t.lower(), UNK_ID) for t in tokens]
        return [index.get(t, UNK_ID) for t in tokens]

    def save(self, path: PathLike, pretrained_path: Optional[PathLike] = None) -> None:
        """Write the training words one per line (UTF-8), atomically; the pretrained-only words, when there
        are any, to ``pretrained_path`` (ids continue after the training words)."""
        _save_words(self._words[: self.trained], path)
        if self.pretrained_words:
            if pretrained_path is None:
                raise ValueError("this vocabulary has pretrained-only words: give pretrained_path")
            _save_words(self.pretrained_words, pretrained_path)

    @classmethod
    def load(cls, path: PathLike, lowercase: bool, pretrained_path: Optional[PathLike] = None) -> "Vocab":
        """Read files written by ``save`` (``pretrained_path`` when given and present); a damaged file is a
        UserError naming the line."""
        words = _load_words(path, _SPECIALS)
        if len(words) < len(_SPECIALS):
            raise UserError(f"vocabulary file has {len(words)} line(s), needs {PAD!r} and {UNK!r} first; {_FIX}", path)
        pretrained: list[str] = []
        if pretrained_path is not None and os.path.exists(pretrained_path):
            pretrained = _load_words(pretrained_path, ())
            clash = set(words).intersection(pretrained)
            if clash:
                raise UserError(f"repeats word {sorted(clash)[0]!r} of {os.path.basename(path)}; {_FIX}",
                                pretrained_path)
        return cls(words, lowercase=lowercase, pretrained=pretrained)

    def __repr__(self) -> str:
        extra = f", pretrained={len(self) - self.trained}" if self.trained < len(self) else ""
        return f"Vocab(size={len(self)}, lowercase={self.lowercase}{extra})"


_FIX = "restore the model directory's vocabulary files or train again"


def _save_words(words: Sequence[str], path: PathLike) -> None:
    for word in words:
        if not word or _WHITESPACE.intersection(word):
            raise ValueError(f"cannot save word {word!r}: empty or contains whitespace")
    with atomic_write(path) as handle:
        handle.write("\n".join(words) + "\n")


def _load_words(path: PathLike, first: tuple[str, ...]) -> list[str]:
    """One word per line; the file must start with the words ``first``."""
    words: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(_open_binary(path, "vocabulary file"), start=1):
        try:
            word = raw.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"invalid UTF-8 in vocabulary file; {_FIX}", path, number) from None
        if number <= len(first) and word != first[number - 1]:
            raise UserError(
                f"expected {first[number - 1]!r} on line {number}, found {word!r}; "
                f"this is not a vocabulary file or it is corrupt; {_FIX}",
                path,
                number,
            )
        if not word or _WHITESPACE.intersection(word):
            raise UserError(f"word {word!r} is empty or contains whitespace; {_FIX}", path, number)
        if word in seen:
            raise UserError(f"word {word!r} repeats line {seen[word]}; {_FIX}", path, number)
        seen[word] = number
        words.append(word)
    return words


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
