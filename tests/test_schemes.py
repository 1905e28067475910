"""Tests for ner_toolkit.data.schemes: reading, writing, conversion, detection and transition rules."""
from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import (
    SCHEMES,
    Scheme,
    SchemeError,
    allowed_transitions,
    convert,
    detect_scheme,
    from_spans,
    get_scheme,
    is_legal,
    labels_for_types,
    repair,
    scheme_names,
    segment_continues,
    split_tag,
    tag_problem,
    to_spans,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ALL = list(SCHEMES.values())  # every test that enumerates schemes reads the table: a new entry is tested
TYPES = ["PER", "LOC", "B-X"]  # "B-X" checks that types may contain "-"


@st.composite
def span_sets(draw: st.DrawFn) -> tuple[list[tuple[str, int, int]], int]:
    """Random legal (non-overlapping) span sets; gaps of 0 make touching spans, incl. same-type ones."""
    pieces = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.sampled_from(TYPES)), max_size=6))
    spans, pos = [], 0
    for gap, length, type_ in pieces:
        spans.append((type_, pos + gap, pos + gap + length))
        pos += gap + length
    return spans, pos + draw(st.integers(0, 2))


# --- names and tags -------------------------------------------------------------------------------------------

def test_get_scheme_aliases_and_case() -> None:
    assert get_scheme("iob2").name == "BIO"
    assert get_scheme("IOBES").name == "BIOES"
    assert get_scheme("bmes").name == "BMES"
    assert get_scheme(" Iob1 ").name == "IOB1"
    assert get_scheme("bioul").name == "BILOU" and get_scheme("BILOU") is SCHEMES["BILOU"]
    assert get_scheme(SCHEMES["BIO"]) is SCHEMES["BIO"]
    with pytest.raises(SchemeError, match="BIOES.*BILOU.*BIOUL"):
        get_scheme("BIOLU")


def test_scheme_names_come_from_the_table() -> None:
    assert scheme_names() == ("IOB1", "BIO", "BIOES", "BMES", "BILOU", "IOB2", "IOBES", "BIOUL")
    assert scheme_names(internal_only=True) == ("BIO", "BIOES", "BILOU", "IOB2", "IOBES", "BIOUL")
    for name in scheme_names():
        assert get_scheme(name).name in SCHEMES


@pytest.mark.parametrize("scheme", ALL, ids=str)
def test_scheme_fields(scheme: Scheme) -> None:
    assert SCHEMES[scheme.name] is scheme and str(scheme) == scheme.name
    assert len(scheme.prefixes) == (4 if scheme.closes else 2) and scheme.prefixes[:2] == (scheme.begin, scheme.inside)
    assert set(scheme.roles) == set(scheme.prefixes) | {"O"}
    assert scheme == get_scheme(scheme.name.lower()) and hash(scheme) == hash(get_scheme(scheme.name))
    assert pickle.loads(pickle.dumps(scheme)) is scheme  # another process gets the table's entry back


def test_bilou_is_bioes_with_l_and_u() -> None:
    bilou = SCHEMES["BILOU"]
    assert bilou.prefixes == ("B", "I", "L", "U") and bilou.closes and bilou.internal
    assert labels_for_types(["X"], "BIOUL") == ["O", "B-X", "I-X", "L-X", "U-X"]
    assert from_spans([("PER", 0, 3), ("LOC", 3, 4)], 5, bilou) == ["B-PER", "I-PER", "L-PER", "U-LOC", "O"]
    with pytest.raises(ValueError, match="distinct"):
        Scheme("BAD", end="I", single="S")
    with pytest.raises(ValueError, match="together"):
        Scheme("BAD", end="E")


def test_split_tag() -> None:
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I-B-X") == ("I", "B-X")
    assert split_tag("O") == ("O", "")


@pytest.mark.parametrize("tag", ["O", "B-PER", "I-PER", "E-PER", "S-PER", "M-PER", "L-PER", "U-PER", "B-ORG-X"])
def test_tag_problem_accepts(tag: str) -> None:
    assert tag_problem(tag) is None


@pytest.mark.parametrize("tag,needle", [
    ("PER", "no \"PREFIX-\""), ("X-PER", "unknown prefix"), ("B-", "empty entity type"),
    ("", "empty tag"), ("b-PER", "unknown prefix"), ("o", "no \"PREFIX-\""),
])
def test_tag_problem_rejects(tag: str, needle: str) -> None:
    problem = tag_problem(tag)
    assert problem is not None and needle in problem and "\n" not in problem


# --- reading --------------------------------------------------------------------------------------------------

def test_to_spans_each_scheme() -> None:
    assert to_spans(["B-PER", "I-PER", "O", "B-LOC"], "BIO") == [("PER", 0, 2), ("LOC", 3, 4)]
    assert to_spans(["I-PER", "I-PER", "B-PER", "I-LOC"], "IOB1") == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 3, 4)]
    assert to_spans(["B-PER", "I-PER", "E-PER", "S-LOC", "S-LOC"], "BIOES") == [
        ("PER", 0, 3), ("LOC", 3, 4), ("LOC", 4, 5)]
    assert to_spans(["B-PER", "M-PER", "E-PER", "S-PER"], "BMES") == [("PER", 0, 3), ("PER", 3, 4)]
    assert to_spans(["B-PER", "I-PER", "L-PER", "U-PER", "U-LOC"], "BILOU") == [
        ("PER", 0, 3), ("PER", 3, 4), ("LOC", 4, 5)]
    assert to_spans([], "BIO") == []


def test_to_spans_reads_illegal_like_conlleval() -> None:
    # I- after O starts a chunk; a type change splits a chunk; E- after E- starts a new one.
    assert to_spans(["O", "I-PER", "I-PER"], "BIO") == [("PER", 1, 3)]
    assert to_spans(["B-PER", "I-LOC"], "BIO") == [("PER", 0, 1), ("LOC", 1, 2)]
    assert to_spans(["B-PER", "E-PER", "E-PER"], "BIOES") == [("PER", 0, 2), ("PER", 2, 3)]
    assert to_spans(["B-PER", "I-PER", "O"], "BIOES") == [("PER", 0, 2)]
    assert to_spans(["B-PER", "L-PER", "L-PER", "I-PER", "O"], "BILOU") == [("PER", 0, 2), ("PER", 2, 3), ("PER", 3, 4)]


def test_to_spans_rejects_foreign_prefix() -> None:
    with pytest.raises(SchemeError, match="BIO scheme"):
        to_spans(["S-PER"], "BIO")
    with pytest.raises(SchemeError, match="no \"PREFIX-\""):
        to_spans(["PER"], "BIOES")
    with pytest.raises(SchemeError, match="BILOU scheme"):
        to_spans(["B-PER", "E-PER"], "BILOU")
    with pytest.raises(SchemeError, match="BIOES scheme"):
        to_spans(["U-PER"], "BIOES")


def test_from_spans_encodings() -> None:
    spans = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    assert from_spans(spans, 5, "BIO") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert from_spans(spans, 5, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert from_spans(spans, 5, "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert from_spans([("PER", 0, 4)], 4, "BMES") == ["B-PER", "M-PER", "M-PER", "E-PER"]
    assert from_spans(spans, 5, "BILOU") == ["B-PER", "L-PER", "U-PER", "O", "U-LOC"]
    with pytest.raises(ValueError):
        from_spans([("PER", 0, 2), ("LOC", 1, 3)], 3, "BIO")
    with pytest.raises(ValueError):
        from_spans([("PER", 2, 4)], 3, "BIO")


@settings(max_examples=150, deadline=None)
@given(span_sets())
def test_round_trip_every_scheme(case: tuple[list[tuple[str, int, int]], int]) -> None:
    spans, length = case
    encoded = {scheme: from_spans(spans, length, scheme) for scheme in ALL}
    for scheme, tags in encoded.items():
        assert len(tags) == length
        assert to_spans(tags, scheme) == spans
        assert is_legal(tags, scheme)
        assert repair(tags, scheme) == (tags, False)
    for src, dst in itertools.product(ALL, ALL):
        assert convert(encoded[src], src, dst) == encoded[dst]
        assert to_spans(convert(encoded[src], src, dst), dst) == spans


# --- detection ------------------------------------------------------------------------------------------------

def test_detect_scheme() -> None:
    spans = [("PER", 0, 3), ("PER", 3, 4), ("LOC", 5, 6)]  # a 3-token span so that BMES shows an M-
    for scheme in ALL:
        assert detect_scheme([from_spans(spans, 6, scheme)]) is scheme
    assert detect_scheme([["O", "O"], []]).name == "BIO"
    assert detect_scheme([]).name == "BIO"
    # Ambiguous: single-token chunks that start with B- read as BIO; a tie goes to BIO.
    assert detect_scheme([["B-PER", "O", "I-LOC"]]).name == "BIO"
    assert detect_scheme([["I-PER", "I-PER", "B-PER"]]).name == "IOB1"
    assert detect_scheme(iter([("S-PER",)])).name == "BIOES"
    # BILOU by its L- and U- alone, each enough: a corpus of single-token chunks, or of longer ones
    assert detect_scheme([["U-PER", "O"]]).name == "BILOU"
    assert detect_scheme([["B-PER", "L-PER"], ["B-LOC", "I-LOC"]]).name == "BILOU"


def test_detect_scheme_errors() -> None:
    with pytest.raises(SchemeError, match="sequence 2"):
        detect_scheme([["O"], ["O", "PER"]])
    with pytest.raises(SchemeError, match="M-"):
        detect_scheme([["B-PER", "M-PER", "E-PER", "I-PER"]])
    with pytest.raises(SchemeError, match="E-, .*L-.*one scheme"):
        detect_scheme([["B-PER", "L-PER"], ["S-LOC", "E-LOC"]])


# --- legality, repair, labels, transitions ----------------------------------------------------------------------

def test_is_legal_and_repair_bio() -> None:
    bad = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG"]
    assert not is_legal(bad, "BIO")
    assert repair(bad, "BIO") == (["O", "B-PER", "I-PER", "B-LOC", "B-ORG"], True)
    assert is_legal(["B-PER", "I-PER"], "BIO") and not is_legal(["I-PER"], "BIO")
    assert not is_legal(["B-PER"], "IOB1")
    assert not is_legal(["B-PER", "O"], "BIOES") and is_legal(["S-PER", "O"], "BIOES")
    assert not is_legal(["E-PER"], "BIO")  # foreign prefix: not legal, no exception
    assert not is_legal(["B-PER", "O"], "BILOU") and is_legal(["U-PER", "O"], "BILOU")
    assert not is_legal(["S-PER"], "BILOU")


def test_repair_bioes() -> None:
    assert repair(["I-PER", "I-PER", "O", "B-LOC"], "BIOES") == (["B-PER", "E-PER", "O", "S-LOC"], True)
    assert repair(["I-PER", "I-PER", "O", "B-LOC"], "BILOU") == (["B-PER", "L-PER", "O", "U-LOC"], True)


def test_labels_for_types() -> None:
    assert labels_for_types(["PER", "LOC", "PER"], "BIO") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert labels_for_types(["X"], "BIOES") == ["O", "B-X", "I-X", "E-X", "S-X"]
    assert labels_for_types(["X"], "BMES") == ["O", "B-X", "M-X", "E-X", "S-X"]
    assert labels_for_types(["X"], "IOB1") == ["O", "B-X", "I-X"]
    assert labels_for_types(["X"], "BILOU") == ["O", "B-X", "I-X", "L-X", "U-X"]
    assert labels_for_types([], "BIO") == ["O"]


def test_allowed_transitions_rejects_foreign_labels() -> None:
    with pytest.raises(SchemeError):
        allowed_transitions(["O", "B-PER", "E-PER"], "BIO")
    with pytest.raises(SchemeError):
        allowed_transitions(["O", "I-PER"], "BMES")
    with pytest.raises(SchemeError):
        allowed_transitions(["O", "E-PER"], "BILOU")


def test_allowed_transitions_examples() -> None:
    labels = labels_for_types(["PER"], "BIO")  # O, B-PER, I-PER
    start, end, trans = allowed_transitions(labels, "BIO")
    assert start == [True, True, False] and end == [True, True, True]
    assert trans[0][2] is False and trans[1][2] and trans[2][2]


def _legal_by_transitions(tags: list[str], labels: list[str], scheme: str) -> bool:
    start, end, trans = allowed_transitions(labels, scheme)
    if not tags:
        return True
    idx = [labels.index(t) for t in tags]
    return start[idx[0]] and end[idx[-1]] and all(trans[a][b] for a, b in zip(idx, idx[1:]))


@pytest.mark.parametrize("scheme", ALL, ids=str)
def test_transitions_match_is_legal_exhaustive(scheme: Scheme) -> None:
    labels = labels_for_types(["A", "B"], scheme)
    for n in range(4):
        for tags in itertools.product(labels, repeat=n):
            assert is_legal(list(tags), scheme) == _legal_by_transitions(list(tags), labels, scheme), tags


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_transitions_match_is_legal_random(scheme: Scheme, data: st.DataObject) -> None:
    labels = labels_for_types(["A", "B", "C-D"], scheme)
    tags = data.draw(st.lists(st.sampled_from(labels), max_size=12))
    assert is_legal(tags, scheme) == _legal_by_transitions(tags, labels, scheme)
    # Whatever the input, the repaired sequence satisfies the transition rules.
    assert _legal_by_transitions(repair(tags, scheme)[0], labels, scheme)


def _bilou_reference(labels: list[str]) -> tuple[list[bool], list[bool], list[list[bool]]]:
    """BILOU written out by hand from the label strings: B-/I- must go on with I-/L- of the same type;
    after L-, U- and O (and at the start) only O, B- or U- may come."""
    def open_(tag: str) -> bool:
        return tag[0] in "BI"

    def ok(prev: Optional[str], cur: str) -> bool:
        if prev is None or not open_(prev):
            return cur[0] in "OBU"
        return cur[0] in "IL" and cur[2:] == prev[2:]

    return [ok(None, t) for t in labels], [not open_(t) for t in labels], [[ok(a, b) for b in labels] for a in labels]


def test_bilou_transitions_match_a_hand_written_reference() -> None:
    labels = labels_for_types(["A", "B-C"], "BILOU")
    assert allowed_transitions(labels, "BILOU") == _bilou_reference(labels)
    # letter for letter BIOES's constraints, and the same segments for span confidences
    as_bioes = [t if t == "O" else {"L": "E", "U": "S"}.get(t[0], t[0]) + t[1:] for t in labels]
    assert allowed_transitions(labels, "BILOU") == allowed_transitions(as_bioes, "BIOES")
    assert segment_continues(labels, "BILOU") == segment_continues(as_bioes, "BIOES")
    cont = segment_continues(labels, "BILOU")
    assert cont[labels.index("B-A")][labels.index("L-A")] and cont[labels.index("I-A")][labels.index("I-A")]
    assert not cont[labels.index("L-A")][labels.index("I-A")] and not cont[labels.index("U-A")][labels.index("L-A")]


# --- real data: CoNLL-2003 IOB1 -> IOB2 -------------------------------------------------------------------------

def _read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """(token, last column) pairs per sentence, read by the toolkit's reader (-DOCSTART- skipped)."""
    return [list(zip(s.tokens, s.labels or [])) for s in read_sentences(path)]


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_conll2003_iob1_to_bio_matches_reference(split: str) -> None:
    src, ref = SHARED / "datasets/conll2003" / f"{split}.txt", SHARED / "datasets/conll2003/iob2" / f"{split}.txt"
    if not (src.is_file() and ref.is_file()):
        pytest.skip(f"CoNLL-2003 data not found under {SHARED}")
    iob1, iob2 = _read_conll(src), _read_conll(ref)
    assert len(iob1) == len(iob2)
    assert detect_scheme([t for _, t in s] for s in iob1).name == "IOB1"
    assert detect_scheme([t for _, t in s] for s in iob2).name == "BIO"
    for a, b in zip(iob1, iob2):
        assert [w for w, _ in a] == [w for w, _ in b]
        # Two train sentences hold B-MISC after O (illegal IOB1); conlleval's reading still matches IOB2.
        assert convert([t for _, t in a], "IOB1", "BIO") == [t for _, t in b]
