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
  data.
- ``chars``: every non-whitespace character is a token (Chinese, Japanese, Thai and other text
  without spaces between words, as character-level corpora such as Resume NER are labelled).
"""
from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Optional, Sequence

Offsets = list[tuple[int, int]]
Tokenizer = Callable[[str], Offsets]
TOKENIZERS = ("whitespace", "conll", "chars")
MisalignedPolicy = Literal["expand", "skip", "error"]

_NON_SPACE = re.compile(r"\S+")
# The Treebank tokenizer rewrites double quotes as `` or '' in its output; the text holds any of these.
_QUOTE_TOKENS = ("``", "''", '"')


def _whitespace(text: str) -> Offsets:
    return [m.span() for m in _NON_SPACE.finditer(text)]


def _chars(text: str) -> Offsets:
    return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


_treebank: Any = None
_sentences: Any = None
# Punkt (NLTK's sentence splitter) untrained, with the abbreviations of news text that it would
# otherwise take for sentence ends; lower case, final period dropped, as Punkt stores them.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "col", "lt", "sgt", "capt", "rep", "sen",
    "gov", "pres", "rev", "hon", "messrs", "u.s", "u.k", "u.n", "e.u", "u.s.a", "inc", "corp", "co", "ltd",
    "plc", "bros", "dept", "univ", "assn", "vs", "etc", "approx", "no", "nos", "vol", "fig", "p", "pp", "ed",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m", "e.g",
    "i.e", "cf", "al", "est", "ave", "blvd", "rd", "ft", "mt", "ga", "fla", "calif", "mass", "ill", "wash",
}
# Dotted initials (F.C., N.J., F.B.I.) as Punkt types: abbreviations too, never sentence ends by themselves.
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
# A "sentence" that is only a list number ("3." of "3. Hever Golf Rose") belongs to the text after it.
_LIST_NUMBER = re.compile(r"\d{1,3}\.")
# Strings the Treebank rules split that CoNLL-2003 keeps whole: dash and star rules (---, **), currencies
# (C$, US$, HK$), ampersand names (S&P, AT&T) and "cannot". Joined back when their pieces touch.
_KEEP_WHOLE = re.compile(r"-{2,}|\*{2,}|[A-Z]{1,3}\$|[A-Z]{1,4}&[A-Z]{1,4}|[Cc]annot|CANNOT")
_KEEP_WHOLE_PIECES = 16  # the most tokens one such string is rejoined from (a longer dash rule: several)
# What may follow a sentence-final period that the Treebank rules split off.
_CLOSERS = frozenset(")]}>\"'") | frozenset(_QUOTE_TOKENS)


class _Abbreviations(set):
    """Punkt's abbreviation types: the list above, and any dotted initials."""

    def __contains__(self, word: object) -> bool:
        return super().__contains__(word) or (isinstance(word, str) and bool(_DOTTED.fullmatch(word)))


_ABBREVIATION_TYPES = _Abbreviations(_ABBREVIATIONS)


def _is_initials(token: str) -> bool:
    """``token`` is dotted initials with their final period: ``U.S.``, ``F.C.``."""
    return token.endswith(".") and bool(_DOTTED.fullmatch(token[:-1]))


def _rejoin(text: str, out: Offsets, first: int) -> None:
    """Join touching tokens ``out[first:]`` that together are one of ``_KEEP_WHOLE``, in place."""
    joined: Offsets = []
    i = first
    while i < len(out):
        last = i
        while last + 1 < len(out) and last - i + 1 < _KEEP_WHOLE_PIECES and out[last][1] == out[last + 1][0]:
            last += 1
        while last > i and not _KEEP_WHOLE.fullmatch(text, out[i][0], out[last][1]):
            last -= 1
        joined.append((out[i][0], out[last][1]))
        i = last + 1
    out[first:] = joined


def _sentence_spans(text: str) -> Offsets:
    spans: Offsets = []
    for start, end in _sentences.span_tokenize(text):
        if spans and _LIST_NUMBER.fullmatch(text[spans[-1][0]:spans[-1][1]]):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _conll(text: str) -> Offsets:
    """Treebank tokens of ``text``, aligned back to it.

    The Treebank rules split a period off only at the end of the string (so that ``U.S.`` and
    ``rep.`` stay whole), as CoNLL-2003 was tokenised one sentence at a time: Punkt cuts the text
    into sentences first. NLTK's output is the text's characters except for double quotes it
    rewrites (`` or ''), so each token is found at the cursor, after whitespace.
    """
    global _treebank, _sentences
    if _treebank is None:
        from nltk.tokenize import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

        parameters = PunktParameters()
        parameters.abbrev_types = _ABBREVIATION_TYPES
        _treebank, _sentences = NLTKWordTokenizer(), PunktSentenceTokenizer(parameters)
    out: Offsets = []
    for sent_start, sent_end in _sentence_spans(text):
        sentence = text[sent_start:sent_end]
        first = len(out)
        pos = 0
        for token in _treebank.tokenize(sentence):
            while pos < len(sentence) and sentence[pos].isspace():
                pos += 1
            if sentence.startswith(token, pos):
                end = pos + len(token)
            elif token in _QUOTE_TOKENS and sentence.startswith(_QUOTE_TOKENS, pos):
                end = pos + next(len(q) for q in _QUOTE_TOKENS if sentence.startswith(q, pos))
            else:
                # A rewrite this alignment does not know: the characters up to the next place the
                # token is found become tokens of their own (whitespace-split), never lost.
                found = sentence.find(token, pos)
                gap_end = found if found >= 0 else len(sentence)
                out.extend((sent_start + pos + s, sent_start + pos + e)
                           for s, e in _whitespace(sentence[pos:gap_end]))
                pos = gap_end
                if found < 0:
                    continue
                end = found + len(token)
            out.append((sent_start + pos, sent_start + end))
            pos = end
        # Characters the tokenizer did not return: tokens of their own, never lost.
        out.extend((sent_start + pos + s, sent_start + pos + e) for s, e in _whitespace(sentence[pos:]))
        _rejoin(text, out, first)
        # The Treebank rules split the final period off before closing brackets and quotes too:
        # "(U.S.)" -> ( U.S . ). The period of dotted initials stays with them: ( U.S. ), as in CoNLL-2003
        # (which splits other abbreviations there: Co . ").
        closers = len(out)
        while closers > first and text[slice(*out[closers - 1])] in _CLOSERS:
            closers -= 1
        period, word = closers - 1, closers - 2
        if (closers < len(out) and word >= first and text[slice(*out[period])] == "."
                and out[word][1] == out[period][0] and _is_initials(text[out[word][0]:out[period][1]])):
            out[word:closers] = [(out[word][0], out[period][1])]
    return out


_BY_NAME: dict[str, Tokenizer] = {"whitespace": _whitespace, "conll": _conll, "chars": _chars}


def get_tokenizer(name: str) -> Tokenizer:
    """The word tokeniser called ``name`` (one of ``TOKENIZERS``): text -> token offsets."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown word tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}") from None


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
