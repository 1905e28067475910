"""Tagging schemes: one frozen :class:`Scheme` per scheme in one :data:`SCHEMES` table.

Tags are ``"O"`` or ``"PREFIX-TYPE"``; the type may itself contain ``-`` (we split on the first one).
Spans are ``(type, start, end)`` with ``end`` exclusive. A scheme is the role each of its prefixes plays
(a chunk's first, later, last token, a single-token chunk) and whether its begin prefix opens every chunk;
every rule below is written once against those fields, so a new scheme is one entry of the table.

Reading (:func:`to_spans`) follows conlleval, each prefix read as its role's conlleval letter, so every scheme
and illegal sequences read as the CoNLL scorer reads them. Writing (:func:`from_spans`) produces the unique legal
encoding, so ``is_legal`` is "re-encoding the reading gives back the same tags". Pure Python, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

Span = tuple[str, int, int]
UNKNOWN = "?"  # the default data.unknown_tag: partial labels' tag for a token nobody annotated
# Roles, spelled as the conlleval letters they read as (a chunk's first, later, closing token; a single one).
BEGIN, INSIDE, END, SINGLE, OUTSIDE = "B", "I", "E", "S", "O"


class SchemeError(ValueError):
    """A tag, tag sequence or scheme name the user has to fix; the message says how."""


@dataclass(frozen=True)
class Scheme:
    """One tag scheme. Equal (and hashed) by ``name`` alone: a scheme is its table entry."""

    name: str
    aliases: tuple[str, ...] = field(default=(), compare=False)
    begin: str = field(default="B", compare=False)    # prefix of a chunk's first token
    inside: str = field(default="I", compare=False)   # prefix of a later token (not the last, with ``end``)
    end: Optional[str] = field(default=None, compare=False)     # last token of a longer chunk; None: chunks
    single: Optional[str] = field(default=None, compare=False)  # end implicitly and ``single`` is None too
    # IOB1: chunks open with ``inside``; ``begin`` opens only one that touches a chunk of the same type
    begin_only_touching: bool = field(default=False, compare=False)
    internal: bool = field(default=False, compare=False)  # may be the model's internal (CRF) scheme
    # Strict evaluation: the seqeval.scheme class that reads this scheme's tags once each prefix is written
    # as its role's letter, and the scheme to convert to first where seqeval has no strict reading of it.
    seqeval: str = field(default="IOB2", compare=False)
    strict_via: Optional[str] = field(default=None, compare=False)
    # tag -> (role, type), filled by _parse: datasets repeat a few tags millions of times
    parsed: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.end is None) != (self.single is None) or len(set(self.prefixes) - {OUTSIDE}) != len(self.prefixes):
            raise ValueError(f"scheme {self.name}: `end` and `single` come together; prefixes are distinct, not O")

    def __reduce__(self) -> tuple:  # pickled by name: a copy sent to another process is the table's entry
        return get_scheme, (self.name,)

    @property
    def closes(self) -> bool:
        """Whether every chunk ends with an explicit prefix (``end`` or ``single``)."""
        return self.end is not None

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The prefixes in canonical label order: begin, inside[, end, single]."""
        return (self.begin, self.inside) + ((self.end, self.single) if self.closes else ())  # type: ignore[operator]

    @property
    def roles(self) -> dict[str, str]:
        """prefix -> role (``BEGIN``, ``INSIDE``, ``END``, ``SINGLE``), ``O`` -> ``OUTSIDE``."""
        return {OUTSIDE: OUTSIDE, **dict(zip(self.prefixes, (BEGIN, INSIDE, END, SINGLE)))}

    def __str__(self) -> str:  # messages name the scheme
        return self.name


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("IOB1", begin_only_touching=True, strict_via="BIO"),
    Scheme("BIO", aliases=("IOB2",), internal=True),
    Scheme("BIOES", aliases=("IOBES",), end="E", single="S", internal=True, seqeval="IOBES"),
    Scheme("BMES", inside="M", end="E", single="S", seqeval="IOBES"),
    Scheme("BILOU", aliases=("BIOUL",), end="L", single="U", internal=True, seqeval="IOBES"),
)}
_BY_NAME = {alias: s for s in SCHEMES.values() for alias in (s.name,) + s.aliases}
_ALL_PREFIXES = tuple(dict.fromkeys(p for s in SCHEMES.values() for p in s.prefixes))


def scheme_names(internal_only: bool = False) -> tuple[str, ...]:
    """The scheme names a config or CLI accepts (canonical names, then aliases); ``internal_only``: those a
    model can use inside its CRF."""
    chosen = [s for s in SCHEMES.values() if s.internal or not internal_only]
    return tuple(s.name for s in chosen) + tuple(a for s in chosen for a in s.aliases)


def get_scheme(name: Union[str, Scheme]) -> Scheme:
    """The table's scheme for ``name`` (case-insensitive, aliases too); a Scheme is returned as it is, so a
    public function can take either at its boundary."""
    if isinstance(name, Scheme):
        return name
    scheme = _BY_NAME.get(str(name).strip().upper())
    if scheme is None:
        raise SchemeError(f'unknown tagging scheme "{name}"; use one of {", ".join(scheme_names())}')
    return scheme


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``; no validation (see :func:`tag_problem`)."""
    prefix, _, type_ = tag.partition("-")
    return prefix, type_


def tag_problem(tag: str) -> Optional[str]:
    """None if ``tag`` fits some scheme, else a one-line reason with the fix."""
    if tag == "O":
        return None
    if not tag:
        return 'empty tag; use "O" for tokens outside any entity'
    if tag == UNKNOWN:
        return (f'tag "{tag}" marks a token nobody annotated (partial labels, data.unknown_tag), which only '
                "training data may hold; give its tag")
    prefix, dash, type_ = tag.partition("-")
    if not dash:
        return (f'tag "{tag}" has no "PREFIX-" part; write entity tags as B-{tag}, I-{tag}, ... '
                f'and use "O" outside entities')
    if prefix not in _ALL_PREFIXES:
        return (f'tag "{tag}" has unknown prefix "{prefix}"; entity tags start with one of '
                f'{", ".join(_ALL_PREFIXES)} followed by "-", or use "O"')
    if not type_:
        return f'tag "{tag}" has an empty entity type; write it as {prefix}-TYPE, e.g. {prefix}-PER'
    return None


def entity_type_problem(label: str) -> Optional[str]:
    """None if ``label`` can name an entity type (a character span's label: its tokens become
    ``B-label``, ``I-label``), else a one-line reason with the fix. ``O``, the unknown tag and whole
    tags (``B-LOC``) are tag syntax, not types: they would silently become types ``O``, ``B-LOC``."""
    if label == "O":
        return 'label "O" is not an entity type: text outside every span is O already; leave the span out'
    if label == UNKNOWN:
        return (f'label "{label}" is not an entity type (it is the tag of unannotated tokens, which character '
                "spans cannot mark); name the span's type or leave it out")
    prefix, dash, type_ = label.partition("-")
    if dash and type_ and prefix in _ALL_PREFIXES:
        return f'label "{label}" is a tag, not an entity type; write the type alone ("{type_}")'
    return tag_problem(f"B-{label}")


def _parse(tag: str, scheme: Scheme) -> tuple[str, str]:
    """``(role, type)`` of ``tag`` in ``scheme``, validated; remembered in ``scheme.parsed`` (bounded)."""
    known = scheme.parsed.get(tag)
    if known is not None:
        return known
    problem = tag_problem(tag)
    if problem is not None:
        raise SchemeError(problem)
    prefix, type_ = split_tag(tag)
    role = scheme.roles.get(prefix)
    if role is None:
        raise SchemeError(
            f'tag "{tag}" does not belong to the {scheme.name} scheme (prefixes {", ".join(scheme.prefixes)}); '
            f"set the right scheme or leave it unset to auto-detect")
    if len(scheme.parsed) >= 8192:  # a bound for files with endless distinct tags
        scheme.parsed.clear()
    scheme.parsed[tag] = (role, type_)
    return role, type_


def detect_scheme(sequences: Iterable[Sequence[str]]) -> Scheme:
    """Guess the scheme of tag sequences (BIO for all-O data); raises SchemeError on malformed tags.

    The fewest prefixes that cover the ones seen win (BIO before BIOES, BILOU by its L- and U-); between
    equals, the scheme whose chunk openings the data follows (IOB1 opens with I-, BIO with B-), then a
    scheme whose begin prefix opens every chunk, then the table's order."""
    seen: set[str] = set()
    opened: dict[str, int] = {}  # prefix -> how many chunks it opens (a tag that cannot continue the last)
    for n, tags in enumerate(sequences, 1):
        prev_type: Optional[str] = None
        for tag in tags:
            problem = tag_problem(tag)
            if problem is not None:
                raise SchemeError(f"sequence {n}: {problem}")
            prefix, type_ = split_tag(tag)
            if prefix != OUTSIDE:
                seen.add(prefix)
                if type_ != prev_type:
                    opened[prefix] = opened.get(prefix, 0) + 1
            prev_type = None if prefix == OUTSIDE else type_
    order = list(SCHEMES.values())
    fits = [s for s in order if seen <= set(s.prefixes)]
    if not fits:
        table = "; ".join(f"{s.name}: {' '.join(s.prefixes)}" for s in order)
        raise SchemeError(f"tags mix the prefixes {', '.join(p + '-' for p in sorted(seen))}, which no one scheme "
                          f"uses together ({table}); rewrite the data in one scheme")

    def misfits(s: Scheme) -> int:  # chunks opened with a prefix that does not open one in ``s``
        openers = {s.inside if s.begin_only_touching else s.begin, s.single}
        return sum(count for prefix, count in opened.items() if prefix not in openers)

    return min(fits, key=lambda s: (len(s.prefixes), misfits(s), s.begin_only_touching, order.index(s)))


def _chunk_ends(prev_role: str, role: str, prev_type: str, type_: str) -> bool:
    """conlleval's endOfChunk, over roles."""
    if prev_role in (END, SINGLE):
        return True
    if prev_role in (BEGIN, INSIDE) and role in (BEGIN, SINGLE, OUTSIDE):
        return True
    return prev_role != OUTSIDE and prev_type != type_


def _chunk_starts(prev_role: str, role: str, prev_type: str, type_: str) -> bool:
    """conlleval's startOfChunk, over roles."""
    if role in (BEGIN, SINGLE):
        return True
    if prev_role in (OUTSIDE, END, SINGLE) and role in (INSIDE, END):
        return True
    return role != OUTSIDE and prev_type != type_


def to_spans(tags: Sequence[str], scheme: Union[Scheme, str]) -> list[Span]:
    """Spans of ``tags`` read the conlleval way (lenient: illegal sequences are read, not rejected)."""
    scheme = get_scheme(scheme)
    spans: list[Span] = []
    start: Optional[int] = None
    prev_role, prev_type = OUTSIDE, ""
    parsed = scheme.parsed
    for i, tag in enumerate(tags):
        role, type_ = parsed.get(tag) or _parse(tag, scheme)
        if start is not None and _chunk_ends(prev_role, role, prev_type, type_):
            spans.append((prev_type, start, i))
            start = None
        if _chunk_starts(prev_role, role, prev_type, type_):
            start = i
        prev_role, prev_type = role, type_
    if start is not None:
        spans.append((prev_type, start, len(tags)))
    return spans


def as_roles(tags: Sequence[str], scheme: Union[Scheme, str]) -> list[str]:
    """``tags`` with each prefix written as its role's conlleval letter (BMES ``M-X`` -> ``I-X``, BILOU
    ``L-X`` -> ``E-X``): what conlleval and seqeval read. Illegal sequences stay as they are."""
    scheme = get_scheme(scheme)
    out = []
    for tag in tags:
        role, type_ = _parse(tag, scheme)
        out.append(OUTSIDE if role == OUTSIDE else f"{role}-{type_}")
    return out


def from_spans(spans: Sequence[Span], length: int, scheme: Union[Scheme, str]) -> list[str]:
    """Legal tags in ``scheme`` for non-overlapping ``spans`` over ``length`` tokens."""
    scheme = get_scheme(scheme)
    tags = ["O"] * length
    prev_end, prev_type = -1, None
    for type_, start, end in sorted(spans, key=lambda s: s[1]):
        if not type_ or not 0 <= start < end <= length:
            raise ValueError(f"invalid span {(type_, start, end)!r} for a sentence of {length} tokens")
        if start < prev_end:
            raise ValueError(f"span {(type_, start, end)!r} overlaps the previous span")
        if scheme.closes and end - start == 1:
            prefixes = [scheme.single]
        else:
            touching = start == prev_end and type_ == prev_type
            prefixes = [scheme.inside] * (end - start)
            prefixes[0] = scheme.inside if scheme.begin_only_touching and not touching else scheme.begin
            if scheme.closes:
                prefixes[-1] = scheme.end
        tags[start:end] = [f"{prefix}-{type_}" for prefix in prefixes]
        prev_end, prev_type = end, type_
    return tags


def convert(tags: Sequence[str], src: Union[Scheme, str], dst: Union[Scheme, str]) -> list[str]:
    """Re-encode ``tags`` from scheme ``src`` to ``dst``; spans are preserved exactly."""
    return from_spans(to_spans(tags, src), len(tags), dst)


def is_legal(tags: Sequence[str], scheme: Union[Scheme, str]) -> bool:
    """True if ``tags`` is a well-formed sequence in ``scheme`` (malformed or foreign tags: False)."""
    try:
        spans = to_spans(tags, scheme)
    except SchemeError:
        return False
    # Every scheme has exactly one legal encoding per span set, so legal == canonical.
    return from_spans(spans, len(tags), scheme) == list(tags)


def repair(tags: Sequence[str], scheme: Union[Scheme, str]) -> tuple[list[str], bool]:
    """Legal re-encoding of the conlleval reading of ``tags``; the bool says whether anything changed."""
    fixed = from_spans(to_spans(tags, scheme), len(tags), scheme)
    return fixed, fixed != list(tags)


def labels_for_types(types: Iterable[str], scheme: Union[Scheme, str]) -> list[str]:
    """Canonical label list: "O", then for each type (sorted) the scheme's prefixes in order."""
    scheme = get_scheme(scheme)
    labels = ["O"]
    for type_ in sorted(set(types)):
        if not type_:
            raise SchemeError("empty entity type; every entity tag needs a type, e.g. B-PER")
        labels.extend(f"{prefix}-{type_}" for prefix in scheme.prefixes)
    return labels


def _step_allowed(scheme: Scheme, prev: Optional[tuple[str, str]], cur: Optional[tuple[str, str]]) -> bool:
    """Whether ``prev -> cur`` (``(role, type)``) may occur in a legal sequence; ``prev`` None = start,
    ``cur`` None = end."""
    if scheme.closes:
        if prev is not None and prev[0] in (BEGIN, INSIDE):
            # An open chunk must continue with the same type until its end prefix.
            return cur is not None and cur[0] in (INSIDE, END) and cur[1] == prev[1]
        return cur is None or cur[0] in (OUTSIDE, BEGIN, SINGLE)
    if cur is None:
        return True  # unclosed chunks may end anywhere
    # The role that only follows a chunk of its type: I- (BIO), or IOB1's B-, which splits touching chunks.
    if cur[0] != (BEGIN if scheme.begin_only_touching else INSIDE):
        return True
    return prev is not None and prev[0] in (BEGIN, INSIDE) and prev[1] == cur[1]


def allowed_transitions(labels: Sequence[str], scheme: Union[Scheme, str]
                        ) -> tuple[list[bool], list[bool], list[list[bool]]]:
    """``(start_allowed[K], end_allowed[K], trans_allowed[from][to])`` for legal sequences in ``scheme``."""
    scheme = get_scheme(scheme)
    parsed = [_parse(label, scheme) for label in labels]
    start = [_step_allowed(scheme, None, p) for p in parsed]
    end = [_step_allowed(scheme, p, None) for p in parsed]
    trans = [[_step_allowed(scheme, a, b) for b in parsed] for a in parsed]
    return start, end, trans


def segment_continues(labels: Sequence[str], scheme: Union[Scheme, str]) -> list[list[bool]]:
    """``continues[i][j]``: label ``j`` right after label ``i`` extends the same entity (the CRF's span
    confidences use it to find where a predicted entity ends)."""
    scheme = get_scheme(scheme)
    parsed = [_parse(label, scheme) for label in labels]
    return [[a[0] in (BEGIN, INSIDE) and b[0] in (INSIDE, END) and a[1] == b[1] for b in parsed] for a in parsed]


def reading_tables(labels: Sequence[str], internal: Union[Scheme, str], user: Union[Scheme, str]
                   ) -> tuple[list[str], list[list[bool]], list[list[list[bool]]]]:
    """How a canonical path reads in the user's scheme, one position at a time, for partial labels.

    Returns ``(user_tags[U], first[U][K], pair[U][K][K])``: ``first[u][j]`` says that canonical label
    ``j`` at a sentence's first position reads as user tag ``u``; ``pair[u][i][j]`` that ``j`` after ``i``
    reads as ``u``. With a closing scheme inside (BIOES, BILOU), every scheme's tag at a position depends
    on that position's canonical label and the one before it at most (IOB1's B- marks a chunk that touches
    one of the same type), so these tables say exactly which legal canonical paths agree with a sentence's
    known tags. Illegal pairs are read too (the CRF's constraints exclude them anyway). An unclosed scheme
    inside (BIO) cannot express a closing scheme's reading (an I- reads by the label after it): SchemeError."""
    internal, user = get_scheme(internal), get_scheme(user)
    if user.closes and not internal.closes:
        # An I- label reads as E- or I- depending on the label *after* it: no pair table says that.
        closers = sorted(s.name for s in SCHEMES.values() if s.internal and s.closes)
        raise SchemeError(f"partial labels in {user.name} need the {' or '.join(closers)} tag scheme inside the "
                          f"model (data.tag_scheme)")
    user_tags = labels_for_types({split_tag(label)[1] for label in labels if label != OUTSIDE}, user)  # every user tag
    index = {tag: u for u, tag in enumerate(user_tags)}
    K, U = len(labels), len(user_tags)
    first = [[False] * K for _ in range(U)]
    pair = [[[False] * K for _ in range(K)] for _ in range(U)]

    def opened(label: str) -> list[str]:  # a chunk's beginning before a label inside or at its end
        role, type_ = _parse(label, internal)
        return [f"{internal.begin}-{type_}"] if role in (INSIDE, END) else []

    def closed(label: str) -> list[str]:  # the rest of the chunk after a label that leaves it open
        role, type_ = _parse(label, internal)
        return [f"{internal.end}-{type_}"] if internal.closes and role in (BEGIN, INSIDE) else []

    # Each pair is read inside a legal window (its chunks opened and closed around it), as it reads
    # within a whole legal path: cut short, B- I- would be read the conlleval way (as a whole chunk).
    for j, cur in enumerate(labels):
        first[index[convert([cur] + closed(cur), internal, user)[0]]][j] = True
        for i, prev in enumerate(labels):
            left = opened(prev)
            window = left + [prev, cur] + closed(cur)
            pair[index[convert(window, internal, user)[len(left) + 1]]][i][j] = True
    return user_tags, first, pair


def tag_runs(tags: Sequence[str], unknown_tag: str) -> list[tuple[int, list[str]]]:
    """``(offset, tags)`` of each maximal stretch of known tags (not ``unknown_tag``) of one sentence."""
    runs: list[tuple[int, list[str]]] = []
    for i, tag in enumerate(tags):
        if tag == unknown_tag:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == i:
            runs[-1][1].append(tag)
        else:
            runs.append((i, [tag]))
    return runs


def each_known_run(sentences: Iterable[Sequence[str]], unknown_tag: str) -> Iterator[list[str]]:
    """The stretches of known tags of every sentence (a partially labelled one has several), one at a
    time: a corpus-sized list of them is a list per sentence."""
    return (run for tags in sentences for _, run in tag_runs(tags, unknown_tag))


def known_runs(sentences: Iterable[Sequence[str]], unknown_tag: str) -> list[list[str]]:
    """``each_known_run`` as a list (for callers that read the runs more than once)."""
    return list(each_known_run(sentences, unknown_tag))
