"""Raw text <-> tokens with character offsets, and character spans <-> token spans.

Offsets are Python string indices (Unicode code points), end exclusive: ``text[start:end]`` is the
token. Tokens never hold whitespace and never overlap; every non-whitespace character of a text
belongs to exactly one token, so no character is dropped between raw text and the model.

Word tokenisers (the model directory's ``data.word_tokenizer`` names the one it was trained with):

- ``whitespace``: maximal runs of non-whitespace (Unicode whitespace, as ``str.split``).
- ``conll``: Penn-Treebank style, as CoNLL-2003 is tokenised: punctuation split off, clitics
  (``'s``, ``n't``, ``'re``) separate, abbreviations (``U.S.``), numbers (``3.5``, ``1,234``) and
  hyphenated words kept whole, and what CoNLL-2003 keeps whole that plain Treebank rules split
  (``F.C.``, a leading list number ``3.``, ``C$``, ``S&P``, ``cannot``, ``---``). NLTK's
  ``NLTKWordTokenizer`` (the improved Treebank tokenizer) does the splitting; it needs no downloaded
  data. Deterministic whatever the machine's load: see ``data.treebank``.
- ``chars``: every non-whitespace character is a token (Chinese, Japanese, Thai and other text
  without spaces between words, as character-level corpora such as Resume NER are labelled).
"""
from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Optional, Sequence

from ner_toolkit.data.treebank import conll_offsets

Offsets = list[tuple[int, int]]
Tokenizer = Callable[[str], Offsets]
TOKENIZERS = ("whitespace", "conll", "chars")
MisalignedPolicy = Literal["expand", "skip", "error"]

_NON_SPACE = re.compile(r"\S+")


def _whitespace(text: str) -> Offsets:
    return [m.span() for m in _NON_SPACE.finditer(text)]


def _chars(text: str) -> Offsets:
    return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


_BY_NAME: dict[str, Tokenizer] = {"whitespace": _whitespace, "conll": conll_offsets, "chars": _chars}


def check_tokenizer(name: str, auto: bool = True) -> str:
    """``name`` when it is one of ``TOKENIZERS`` (or ``auto``: detect it), else a ValueError naming them.
    For a Python caller's argument: config values are checked by the schema, CLI options by argparse."""
    if name in TOKENIZERS or (auto and name == "auto"):
        return name
    raise ValueError(f"unknown word tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


def get_tokenizer(name: str) -> Tokenizer:
    """The word tokeniser called ``name`` (one of ``TOKENIZERS``): text -> token offsets."""
    return _BY_NAME[check_tokenizer(name, auto=False)]


def tokenize(text: str, name: str) -> tuple[list[str], Offsets]:
    """Tokens of ``text`` and their character offsets."""
    offsets = get_tokenizer(name)(text)
    return [text[s:e] for s, e in offsets], offsets


def join_tokens(tokens: Sequence[str]) -> tuple[str, Offsets]:
    """A text for pre-tokenised input: the tokens joined by single spaces, and each token's offsets."""
    offsets: Offsets = []
    pos = 0
    for token in tokens:
        offsets.append((pos, pos + len(token)))
        pos += len(token) + 1
    return " ".join(tokens), offsets


def _unsegmented(ch: str) -> bool:
    """A character of a script written without spaces between words (CJK, kana, Thai, Lao, ...)."""
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"))


def detect_tokenizer(samples: Iterable[str]) -> str:
    """``chars`` when most letters of ``samples`` (tokens or texts) belong to scripts written without
    spaces, else ``conll``: the ``auto`` choice of ``data.word_tokenizer``."""
    unsegmented = letters = 0
    for sample in samples:
        for ch in sample:
            if ch.isalpha():
                letters += 1
                unsegmented += _unsegmented(ch)
        if letters >= 20000:
            break
    return "chars" if letters and unsegmented * 2 > letters else "conll"


def token_spans_to_chars(spans: Iterable[tuple[str, int, int]], offsets: Offsets) -> list[tuple[str, int, int]]:
    """Token spans ``(label, first token, after last token)`` as character spans ``(label, start, end)``."""
    return [(label, offsets[s][0], offsets[e - 1][1]) for label, s, e in spans]


@dataclass
class Alignment:
    """Character spans aligned to tokens: the token spans kept and what happened to the others."""

    spans: list[tuple[str, int, int]] = field(default_factory=list)    # (label, first token, end token)
    expanded: list[tuple[str, int, int]] = field(default_factory=list)  # char spans widened to token edges
    skipped: list[tuple[str, int, int, str]] = field(default_factory=list)  # (label, start, end, why)


def align_spans(spans: Sequence[tuple[int, int, str]], offsets: Offsets, policy: MisalignedPolicy,
                text: str) -> Alignment:
    """Map character spans ``(start, end, label)`` onto tokens.

    Whitespace at a span's edges is trimmed (no token holds it). A span whose trimmed edges fall on
    token edges is aligned. One that starts or ends inside a token is misaligned: ``expand`` widens
    it to the tokens it touches (recorded in ``expanded``), ``skip`` leaves it out (recorded in
    ``skipped``); ``error`` is the caller's to raise from ``skipped``/``expanded``, so both are
    recorded the same way. A span that covers no token, or that overlaps a span kept before it
    (flat tagging holds one label per token), is always skipped with its reason. Spans are kept
    in order of start (longer first on ties).
    """
    if any(not 0 <= start <= end <= len(text) for start, end, _ in spans):
        raise ValueError(f"span offsets must satisfy 0 <= start <= end <= {len(text)} (the text's length)")
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    token_ends = [e for _, e in offsets]  # increasing: a binary search finds a span's first token
    result = Alignment()
    taken = [False] * len(offsets)
    for start, end, label in sorted(spans, key=lambda s: (s[0], -s[1])):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        first = bisect.bisect_right(token_ends, start) if start < end else 0
        last = first
        while last < len(offsets) and offsets[last][0] < end:
            last += 1
        if start >= end or first >= last:
            result.skipped.append((label, start, end, "covers no token"))
            continue
        exact = start in starts and end in ends
        if not exact and policy != "expand":
            result.skipped.append((label, start, end, "does not fall on token boundaries"))
            continue
        if any(taken[first:last]):
            result.skipped.append((label, start, end, "overlaps another span"))
            continue
        if not exact:  # recorded only when kept: a span is either expanded or skipped, never both
            result.expanded.append((label, start, end))
        taken[first:last] = [True] * (last - first)
        result.spans.append((label, first, last))
    return result


def bio_tags(spans: Iterable[tuple[str, int, int]], length: int) -> list[str]:
    """BIO tags for non-overlapping token spans ``(label, first, end)``."""
    tags = ["O"] * length
    for label, first, end in spans:
        tags[first] = f"B-{label}"
        for i in range(first + 1, end):
            tags[i] = f"I-{label}"
    return tags


@dataclass
class Document:
    """One text (a document, a sentence, a line) with its tokens: what raw-text and JSONL readers yield.

    ``text`` is the original string; ``offsets[i]`` locates ``tokens[i]`` in it. Pre-tokenised input
    gets the tokens joined by single spaces as its text. ``labels``: gold tags per token (BIO when
    they came from character spans), None when unlabelled. ``entities``: gold character spans
    ``(label, start, end)`` as given (after whitespace trimming), for scoring by exact offsets.
    ``line``: where it starts in its file (1-based; 0 in memory). ``fields``: the input object's other
    keys (an id, metadata), carried to the output unchanged.
    """

    text: str
    tokens: list[str]
    offsets: Offsets
    labels: Optional[list[str]] = None
    entities: Optional[list[tuple[str, int, int]]] = None
    line: int = 0
    fields: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_text(cls, text: str, tokenizer: str, line: int = 0, fields: Optional[dict] = None) -> "Document":
        tokens, offsets = tokenize(text, tokenizer)
        return cls(text, tokens, offsets, line=line, fields=dict(fields or {}))

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], labels: Optional[Sequence[str]] = None, line: int = 0,
                    fields: Optional[dict] = None) -> "Document":
        text, offsets = join_tokens(tokens)
        return cls(text, list(tokens), offsets, None if labels is None else list(labels), line=line,
                   fields=dict(fields or {}))
