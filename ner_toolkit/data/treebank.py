"""The ``conll`` word tokeniser: Penn-Treebank rules as CoNLL-2003 was tokenised (NLTK's Punkt cuts
sentences, its ``NLTKWordTokenizer`` splits words), aligned back to the text's characters.

The same text gives the same tokens on any machine under any load. NLTK runs each regular expression
under a 5 s wall-clock limit (``nltk.redos``), so a long document failed with TimeoutError on a busy
host, or after a pause. Here NLTK's own patterns (constants, not the caller's) run without that limit,
and the work of one call is bounded by length instead: a text longer than ``PIECE`` characters is cut
into pieces of at most that many, at the last paragraph break, sentence end, line break or space of
each (in that order of preference, within its second half), and a run of non-space characters that
fills a whole piece is one token, never handed to NLTK.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Optional

Offsets = list[tuple[int, int]]

PIECE = 10_000  # characters handed to NLTK at once: milliseconds of work, and a bound on any backtracking
_NON_SPACE = re.compile(r"\S+")
_SPACE = re.compile(r"\s")
_PARAGRAPH = re.compile(r"\n[^\S\n]*(\n)")  # cut at the blank line's own line break
_LINE = re.compile(r"\n")
# A sentence end: . ! or ? and closing quotes or brackets, then the space to cut at.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(\s)")


def _whitespace(text: str) -> Offsets:
    return [m.span() for m in _NON_SPACE.finditer(text)]


# The Treebank tokenizer rewrites double quotes as `` or '' in its output; the text holds any of these.
_QUOTE_TOKENS = ("``", "''", '"')


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


def _sentence_spans(sentences: Any, text: str) -> Offsets:
    spans: Offsets = []
    for start, end in sentences.span_tokenize(text):
        if spans and _LIST_NUMBER.fullmatch(text[spans[-1][0]:spans[-1][1]]):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _conll_piece(text: str) -> Offsets:
    """Treebank tokens of ``text`` (at most ``PIECE`` characters), aligned back to it.

    The Treebank rules split a period off only at the end of the string (so that ``U.S.`` and
    ``rep.`` stay whole), as CoNLL-2003 was tokenised one sentence at a time: Punkt cuts the text
    into sentences first. NLTK's output is the text's characters except for double quotes it
    rewrites (`` or ''), so each token is found at the cursor, after whitespace.
    """
    treebank, sentences = _tokenizers()
    out: Offsets = []
    for sent_start, sent_end in _sentence_spans(sentences, text):
        sentence = text[sent_start:sent_end]
        first = len(out)
        pos = 0
        for token in treebank.tokenize(sentence):
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


_cached: Optional[tuple[Any, Any]] = None


def _untimed(value: Any) -> Any:
    """``value`` with every NLTK wall-clock-limited pattern in it (alone, or in lists and tuples of
    (pattern, replacement) pairs) rewrapped without the limit; anything else as it is."""
    from nltk import redos

    if isinstance(value, redos.TimedPattern):
        return redos.compile(value, timeout=None)
    if isinstance(value, (list, tuple)):
        items = [_untimed(v) for v in value]
        return type(value)(items) if any(a is not b for a, b in zip(items, value)) else value
    return value


def _untimed_class(cls: type) -> type:
    """A subclass of ``cls`` whose class-level NLTK patterns run without the wall-clock limit."""
    attrs: dict[str, Any] = {"__slots__": ()}
    for name in dir(cls):
        if not name.startswith("__"):
            value = getattr(cls, name)
            wrapped = _untimed(value)
            if wrapped is not value:
                attrs[name] = wrapped
    return type(f"Untimed{cls.__name__}", (cls,), attrs)


def _tokenizers() -> tuple[Any, Any]:
    """NLTK's word and sentence tokenisers (built once), every pattern they run free of the wall-clock limit."""
    global _cached
    if _cached is not None:
        return _cached
    from nltk.tokenize import NLTKWordTokenizer, punkt
    from nltk.tokenize.punkt import PunktLanguageVars, PunktParameters, PunktSentenceTokenizer, PunktToken

    parameters = PunktParameters()
    parameters.abbrev_types = _ABBREVIATION_TYPES
    try:
        from nltk import redos  # noqa: F401  (an NLTK without redos has no limit: nothing to lift)
    except ImportError:
        _cached = NLTKWordTokenizer(), PunktSentenceTokenizer(parameters)
        return _cached
    non_punct = _untimed(punkt._re_non_punct)

    class Token(_untimed_class(PunktToken)):  # type: ignore[misc]
        __slots__ = ()

        @property
        def is_non_punct(self) -> bool:  # NLTK's reads a module-level pattern
            return bool(non_punct.search(self.type))

    language = _untimed_class(PunktLanguageVars)()
    # NLTK compiles these two on first use and keeps them in the instance: compiled now, kept untimed.
    language._re_word_tokenizer = _untimed(language._word_tokenizer_re())
    language._re_period_context = _untimed(language.period_context_re())
    _cached = (_untimed_class(NLTKWordTokenizer)(),
               _untimed_class(PunktSentenceTokenizer)(parameters, lang_vars=language, token_cls=Token))
    return _cached


def conll_offsets(text: str) -> Offsets:
    """Token offsets of ``text`` by the ``conll`` rules, piece by piece (see the module's docstring)."""
    out: Offsets = []
    for start, end, one_token in _pieces(text):
        if one_token:
            out.append((start, end))
        else:
            out.extend((start + s, start + e) for s, e in _conll_piece(text[start:end]))
    return out


def _pieces(text: str, limit: int = PIECE) -> Iterator[tuple[int, int, bool]]:
    """(start, end, one token) spans that tile ``text``: pieces of at most ``limit`` characters that end
    at whitespace, and runs of non-space characters that fill a window of ``limit``, each one token."""
    start = 0
    while len(text) - start > limit:
        cut = _cut(text, start, start + limit)
        if cut is None:  # the window holds no whitespace: a long run starts at (or just after) start
            run = _NON_SPACE.search(text, start)
            assert run is not None
            if run.start() > start:
                yield start, run.start(), False
            yield run.start(), run.end(), True
            start = run.end()
            continue
        yield start, cut, False
        start = cut
    if start < len(text):
        yield start, len(text), False


def _cut(text: str, start: int, end: int) -> Optional[int]:
    """Where to end the piece that starts at ``start``: a whitespace position in ``(start, end]``, the last
    of the most preferred kind found in the window's second half (else the last whitespace at all)."""
    half = start + (end - start) // 2
    for pattern, group in ((_PARAGRAPH, 1), (_SENTENCE_END, 1), (_LINE, 0), (_SPACE, 0)):
        last = None
        for match in pattern.finditer(text, half, end + 1):
            if pattern is not _SENTENCE_END or not _is_abbreviation(text, max(start, match.start() - 40),
                                                                   match.start()):
                last = match.start(group)
        if last is not None and last > start:
            return last
    last = max((m.start() for m in _SPACE.finditer(text, start + 1, end + 1)), default=None)
    return last


def _is_abbreviation(text: str, start: int, end: int) -> bool:
    """The word that ends at ``end`` (looked for from ``start``) is an abbreviation or an initial ("Mr",
    "U.S", "J"): its period ends no sentence."""
    words = text[start:end].split()
    word = words[-1].lstrip("\"'(\u201c\u2018[").lower() if words else ""
    return len(word) <= 1 or word in _ABBREVIATION_TYPES
