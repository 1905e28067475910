"""Tagging schemes: IOB1, BIO (IOB2), BIOES (IOBES) and BMES.

Tags are ``"O"`` or ``"PREFIX-TYPE"``; the type may itself contain ``-`` (we split on the first one).
Spans are ``(type, start, end)`` with ``end`` exclusive.

Reading (:func:`to_spans`) follows conlleval, so every scheme, and illegal sequences too, read the way the
CoNLL scorer reads them. Writing (:func:`from_spans`) always produces the unique legal encoding, which is why
``is_legal`` can be defined as "re-encoding the reading gives back the same tags". Pure Python, no torch.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Iterator, Optional, Sequence

SCHEMES: tuple[str, ...] = ("IOB1", "BIO", "BIOES", "BMES")
Span = tuple[str, int, int]

_ALIASES = {"IOB2": "BIO", "IOBES": "BIOES"}
# Prefixes in canonical label order for each scheme.
_PREFIXES: dict[str, tuple[str, ...]] = {
    "IOB1": ("B", "I"),
    "BIO": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
}
_ALL_PREFIXES = ("B", "I", "E", "S", "M")
UNKNOWN = "?"  # the default data.unknown_tag: partial labels' tag for a token nobody annotated


def scheme_names(internal_only: bool = False) -> tuple[str, ...]:
    """The scheme names a config or CLI accepts (canonical names, then aliases); ``internal_only``: those a
    model can use inside its CRF."""
    if internal_only:
        return ("BIO", "BIOES", "IOB2", "IOBES")
    return SCHEMES + tuple(_ALIASES)


class SchemeError(ValueError):
    """A tag, tag sequence or scheme name the user has to fix; the message says how."""


def normalize_scheme(name: str) -> str:
    """Canonical scheme name for ``name`` (case-insensitive; IOB2 -> BIO, IOBES -> BIOES)."""
    key = str(name).strip().upper()
    key = _ALIASES.get(key, key)
    if key not in SCHEMES:
        valid = ", ".join(SCHEMES + tuple(_ALIASES))
        raise SchemeError(f'unknown tagging scheme "{name}"; use one of {valid}')
    return key


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


@lru_cache(maxsize=8192)
def _parse(tag: str, scheme: str) -> tuple[str, str]:
    """Split and validate ``tag`` for ``scheme``; cached because datasets repeat a few tags millions of times."""
    problem = tag_problem(tag)
    if problem is not None:
        raise SchemeError(problem)
    prefix, type_ = split_tag(tag)
    if prefix != "O" and prefix not in _PREFIXES[scheme]:
        raise SchemeError(
            f'tag "{tag}" does not belong to the {scheme} scheme (prefixes {", ".join(_PREFIXES[scheme])}); '
            f"set the right scheme or leave it unset to auto-detect")
    return prefix, type_


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """Guess the scheme of tag sequences (BIO for all-O data); raises SchemeError on malformed tags."""
    seen: set[str] = set()
    i_starts = b_starts = 0
    for n, tags in enumerate(sequences, 1):
        prev_prefix, prev_type = "O", ""
        for tag in tags:
            problem = tag_problem(tag)
            if problem is not None:
                raise SchemeError(f"sequence {n}: {problem}")
            prefix, type_ = split_tag(tag)
            seen.add(prefix)
            # A chunk start is a tag that cannot continue the previous chunk; which prefix does it tells
            # IOB1 (starts with I-) from BIO (starts with B-).
            new_chunk = prev_prefix == "O" or prev_type != type_
            if new_chunk and prefix == "I":
                i_starts += 1
            elif new_chunk and prefix == "B":
                b_starts += 1
            prev_prefix, prev_type = prefix, type_
    if "M" in seen:
        if "I" in seen:
            raise SchemeError("tags mix I- and M- prefixes; BMES uses M- for inside tokens and BIO/BIOES use I-, "
                              "so rewrite the data in one scheme")
        return "BMES"
    if "E" in seen or "S" in seen:
        return "BIOES"
    return "IOB1" if i_starts > b_starts else "BIO"


def _chunk_ends(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    """conlleval's endOfChunk (I and M are the same thing here)."""
    if prev_prefix in ("E", "S"):
        return True
    if prev_prefix in ("B", "I") and prefix in ("B", "S", "O"):
        return True
    return prev_prefix != "O" and prev_type != type_


def _chunk_starts(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    """conlleval's startOfChunk (I and M are the same thing here)."""
    if prefix in ("B", "S"):
        return True
    if prev_prefix in ("O", "E", "S") and prefix in ("I", "E"):
        return True
    return prefix != "O" and prev_type != type_


def to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Spans of ``tags`` read the conlleval way (lenient: illegal sequences are read, not rejected)."""
    scheme = normalize_scheme(scheme)
    spans: list[Span] = []
    start: Optional[int] = None
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(tags):
        prefix, type_ = _parse(tag, scheme)
        if prefix == "M":
            prefix = "I"
        if start is not None and _chunk_ends(prev_prefix, prefix, prev_type, type_):
            spans.append((prev_type, start, i))
            start = None
        if _chunk_starts(prev_prefix, prefix, prev_type, type_):
            start = i
        prev_prefix, prev_type = prefix, type_
    if start is not None:
        spans.append((prev_type, start, len(tags)))
    return spans


def from_spans(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Legal tags in ``scheme`` for non-overlapping ``spans`` over ``length`` tokens."""
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    inside = "M" if scheme == "BMES" else "I"
    prev_end, prev_type = -1, None
    for type_, start, end in sorted(spans, key=lambda s: s[1]):
        if not type_ or not 0 <= start < end <= length:
            raise ValueError(f"invalid span {(type_, start, end)!r} for a sentence of {length} tokens")
        if start < prev_end:
            raise ValueError(f"span {(type_, start, end)!r} overlaps the previous span")
        if scheme == "IOB1":
            # IOB1 uses B- only to separate two touching chunks of the same type.
            first = "B" if (start == prev_end and type_ == prev_type) else "I"
            tags[start:end] = [f"{first}-{type_}"] + [f"I-{type_}"] * (end - start - 1)
        elif scheme == "BIO":
            tags[start:end] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            tags[start:end] = [f"B-{type_}"] + [f"{inside}-{type_}"] * (end - start - 2) + [f"E-{type_}"]
        prev_end, prev_type = end, type_
    return tags


def convert(tags: Sequence[str], src: str, dst: str) -> list[str]:
    """Re-encode ``tags`` from scheme ``src`` to ``dst``; spans are preserved exactly."""
    return from_spans(to_spans(tags, src), len(tags), dst)


def is_legal(tags: Sequence[str], scheme: str) -> bool:
    """True if ``tags`` is a well-formed sequence in ``scheme`` (malformed or foreign tags: False)."""
    scheme = normalize_scheme(scheme)
    try:
        spans = to_spans(tags, scheme)
    except SchemeError:
        return False
    # Every scheme has exactly one legal encoding per span set, so legal == canonical.
    return from_spans(spans, len(tags), scheme) == list(tags)


def repair(tags: Sequence[str], scheme: str) -> tuple[list[str], bool]:
    """Legal re-encoding of the conlleval reading of ``tags``; the bool says whether anything changed."""
    fixed = from_spans(to_spans(tags, scheme), len(tags), scheme)
    return fixed, fixed != list(tags)


def labels_for_types(types: Iterable[str], scheme: str) -> list[str]:
    """Canonical label list: "O", then for each type (sorted) the scheme's prefixes in order."""
    scheme = normalize_scheme(scheme)
    labels = ["O"]
    for type_ in sorted(set(types)):
        if not type_:
            raise SchemeError("empty entity type; every entity tag needs a type, e.g. B-PER")
        labels.extend(f"{prefix}-{type_}" for prefix in _PREFIXES[scheme])
    return labels


def _step_allowed(scheme: str, prev: Optional[tuple[str, str]], cur: Optional[tuple[str, str]]) -> bool:
    """Whether ``prev -> cur`` may occur in a legal sequence; ``prev`` None = start, ``cur`` None = end."""
    if scheme in ("BIOES", "BMES"):
        inside = "I" if scheme == "BIOES" else "M"
        if prev is not None and prev[0] in ("B", inside):
            # An open chunk must continue with the same type until its E-.
            return cur is not None and cur[0] in (inside, "E") and cur[1] == prev[1]
        return cur is None or cur[0] in ("O", "B", "S")
    if cur is None:
        return True  # BIO and IOB1 chunks may end anywhere
    if scheme == "BIO":
        continues = cur[0] == "I"
    else:  # IOB1: B- only separates two touching chunks of the same type
        continues = cur[0] == "B"
    if not continues:
        return True
    return prev is not None and prev[0] in ("B", "I") and prev[1] == cur[1]


def allowed_transitions(labels: Sequence[str], scheme: str) -> tuple[list[bool], list[bool], list[list[bool]]]:
    """``(start_allowed[K], end_allowed[K], trans_allowed[from][to])`` for legal sequences in ``scheme``."""
    scheme = normalize_scheme(scheme)
    parsed = [_parse(label, scheme) for label in labels]
    start = [_step_allowed(scheme, None, p) for p in parsed]
    end = [_step_allowed(scheme, p, None) for p in parsed]
    trans = [[_step_allowed(scheme, a, b) for b in parsed] for a in parsed]
    return start, end, trans


def segment_continues(labels: Sequence[str], scheme: str) -> list[list[bool]]:
    """``continues[i][j]``: label ``j`` right after label ``i`` extends the same entity (the CRF's span
    confidences use it to find where a predicted entity ends)."""
    scheme = normalize_scheme(scheme)
    parsed = [_parse(label, scheme) for label in labels]
    inside = {"BIO": ("I",), "IOB1": ("I",), "BIOES": ("I", "E"), "BMES": ("M", "E")}[scheme]
    open_ = {"BIO": ("B", "I"), "IOB1": ("B", "I"), "BIOES": ("B", "I"), "BMES": ("B", "M")}[scheme]
    return [[a[0] in open_ and b[0] in inside and a[1] == b[1] for b in parsed] for a in parsed]


def user_tags_for(labels: Sequence[str], internal: str, user: str) -> list[str]:
    """Every tag of scheme ``user`` over the entity types of the canonical ``labels`` (``O`` first): the
    alphabet of known tags in a partially labelled sentence."""
    types = sorted({split_tag(label)[1] for label in labels if label != "O"})
    return labels_for_types(types, user)


def reading_tables(labels: Sequence[str], internal: str, user: str
                   ) -> tuple[list[str], list[list[bool]], list[list[list[bool]]]]:
    """How a canonical path reads in the user's scheme, one position at a time, for partial labels.

    Returns ``(user_tags[U], first[U][K], pair[U][K][K])``: ``first[u][j]`` says that canonical label
    ``j`` at a sentence's first position reads as user tag ``u``; ``pair[u][i][j]`` that ``j`` after ``i``
    reads as ``u``. With BIOES (or BMES) inside, every scheme's tag at a position depends on that
    position's canonical label and the one before it at most (IOB1's B- marks a chunk that touches one of the same type), so these tables
    say exactly which legal canonical paths agree with a sentence's known tags. Illegal pairs are read
    too (the CRF's constraints exclude them anyway). BIO inside cannot express a BIOES reading (an I-
    reads by the label after it): SchemeError."""
    if normalize_scheme(internal) == "BIO" and normalize_scheme(user) in ("BIOES", "BMES"):
        # An I- label reads as E- or I- depending on the label *after* it: no pair table says that.
        raise SchemeError(f"partial labels in {normalize_scheme(user)} need the BIOES tag scheme inside the "
                          f"model (data.tag_scheme: BIOES)")
    user_tags = user_tags_for(labels, internal, user)
    index = {tag: u for u, tag in enumerate(user_tags)}
    K, U = len(labels), len(user_tags)
    first = [[False] * K for _ in range(U)]
    pair = [[[False] * K for _ in range(K)] for _ in range(U)]
    def opened(label: str) -> list[str]:  # a chunk's beginning before a label inside or at its end
        prefix, type_ = split_tag(label)
        return [f"B-{type_}"] if prefix in ("I", "M", "E") else []

    closes = normalize_scheme(internal) in ("BIOES", "BMES")  # chunks that must end with E-

    def closed(label: str) -> list[str]:  # the rest of the chunk after a label that leaves it open
        prefix, type_ = split_tag(label)
        return [f"E-{type_}"] if closes and prefix in ("B", "I", "M") else []

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
