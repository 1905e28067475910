"""Tests for ner_toolkit.evaluate: span metrics in conlleval and strict mode, and the text report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import (
    SCHEMES,
    SchemeError,
    from_spans,
    labels_for_types,
    to_spans,
)
from ner_toolkit.evaluate import evaluate_spans, format_report

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_hand_computed_bio() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O", "O"]]
    r = evaluate_spans(gold, pred)
    assert (r["mode"], r["scheme"], r["sentences"], r["tokens"]) == ("conlleval", "BIO", 2, 6)
    assert r["token_accuracy"] == pytest.approx(4 / 6)
    assert r["micro"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4,
                                        "support": 3, "predicted": 2, "correct": 1})
    assert r["per_type"]["PER"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                                  "support": 1, "predicted": 2, "correct": 1})
    assert list(r["per_type"]) == ["LOC", "ORG", "PER"]
    assert r["per_type"]["LOC"]["f1"] == 0.0
    assert r["macro"] == pytest.approx({"precision": 1 / 6, "recall": 1 / 3, "f1": 2 / 9})
    json.dumps(r)  # must be JSON-serialisable


def test_type_only_in_gold_or_pred() -> None:
    r = evaluate_spans([["B-PER", "O", "B-MISC", "O"]], [["B-PER", "O", "O", "B-LOC"]])
    assert r["per_type"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                     "support": 1, "predicted": 0, "correct": 0}
    assert r["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                    "support": 0, "predicted": 1, "correct": 0}
    assert r["micro"]["precision"] == 0.5 and r["micro"]["recall"] == 0.5
    assert r["macro"]["f1"] == pytest.approx(1 / 3)


def test_strict_vs_conlleval_on_illegal_bio() -> None:
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]  # illegal BIO: conlleval reads a PER chunk, strict drops it
    lenient = evaluate_spans(gold, pred, scheme="BIO")
    strict = evaluate_spans(gold, pred, scheme="BIO", strict=True)
    assert lenient["micro"]["f1"] == 1.0
    assert strict["mode"] == "strict"
    assert (strict["micro"]["predicted"], strict["micro"]["correct"], strict["micro"]["f1"]) == (0, 0, 0.0)


def test_iob1_input() -> None:
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    pred = [["I-PER", "B-PER", "B-PER", "O", "I-LOC"]]
    for strict in (False, True):
        r = evaluate_spans(gold, pred, strict=strict)
        assert r["scheme"] == "IOB1"
        assert (r["micro"]["support"], r["micro"]["predicted"], r["micro"]["correct"]) == (3, 4, 2)


def test_bmes_input() -> None:
    gold = [["B-PER", "M-PER", "E-PER", "S-LOC"]]
    pred = [["B-PER", "M-PER", "E-PER", "B-LOC"]]  # unfinished B-LOC: a chunk for conlleval, not for strict
    lenient = evaluate_spans(gold, pred)
    assert lenient["scheme"] == "BMES" and lenient["micro"]["f1"] == 1.0
    strict = evaluate_spans(gold, pred, strict=True)
    assert (strict["micro"]["precision"], strict["micro"]["recall"]) == (1.0, 0.5)
    assert strict["per_type"]["LOC"]["recall"] == 0.0


def test_bioes_strict_needs_end() -> None:
    gold = [["B-PER", "E-PER", "O"]]
    pred = [["B-PER", "I-PER", "O"]]
    assert evaluate_spans(gold, pred)["micro"]["f1"] == 1.0
    assert evaluate_spans(gold, pred, scheme="iobes", strict=True)["micro"]["f1"] == 0.0


def test_scheme_falls_back_to_pred_and_types_with_dashes() -> None:
    r = evaluate_spans([["O", "O"]], [["S-A-B", "S--X"]])
    assert r["scheme"] == "BIOES"
    assert set(r["per_type"]) == {"A-B", "-X"}
    strict = evaluate_spans([["B-A-B", "E-A-B", "S--X"]], [["B-A-B", "E-A-B", "S--X"]], strict=True)
    assert set(strict["per_type"]) == {"A-B", "-X"} and strict["micro"]["f1"] == 1.0


def test_gold_scheme_is_detected_once_with_a_fallback() -> None:
    from ner_toolkit.evaluate import gold_scheme

    bilou = SCHEMES["BILOU"]
    assert gold_scheme([["B-PER", "L-PER", "O"]], SCHEMES["BIO"]) is bilou
    assert gold_scheme([["O", "O"]], bilou) is bilou  # all-O gold says nothing: the fallback decides
    assert gold_scheme([["O"]], [["S-X"]]).name == "BIOES"  # ... or the tags given instead
    # with the unknown tag, only the known runs are read (an all-unknown gold falls back too)
    assert gold_scheme([["?", "U-X", "?"]], SCHEMES["BIO"], unknown_tag="?") is bilou
    assert gold_scheme([["?", "?"]], bilou, unknown_tag="?") is bilou


def test_empty_and_all_o() -> None:
    r = evaluate_spans([], [])
    assert r["micro"]["f1"] == 0.0 and r["token_accuracy"] == 0.0 and r["per_type"] == {}
    r = evaluate_spans([["O"]], [["O"]])
    assert r["scheme"] == "BIO" and r["token_accuracy"] == 1.0 and r["macro"]["f1"] == 0.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="sentences"):
        evaluate_spans([["O"]], [])
    with pytest.raises(ValueError, match="sentence 1"):
        evaluate_spans([["O", "O"]], [["O"]])
    with pytest.raises(SchemeError, match="PER"):
        evaluate_spans([["PER"]], [["O"]])
    with pytest.raises(SchemeError, match="BIO scheme"):
        evaluate_spans([["B-PER"]], [["S-PER"]], scheme="BIO")


def test_format_report() -> None:
    r = evaluate_spans([["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]],
                       [["B-PER", "I-PER", "O", "B-PER"], ["O", "O"]])
    text = format_report(r)
    lines = text.splitlines()
    assert "sentences: 2" in lines[0] and "tokens: 6" in lines[0] and "66.67%" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["LOC", "ORG", "PER"]
    assert lines[4].split() == ["PER", "50.00%", "100.00%", "66.67%", "1"]
    assert lines[5].startswith("micro avg") and "40.00%" in lines[5]
    assert lines[6].startswith("macro avg") and "22.22%" in lines[6]


def _independent(gold: list[list[str]], pred: list[list[str]], scheme: str, strict: bool) -> tuple[int, int, int]:
    """(support, predicted, correct) from to_spans; strict keeps only chunks written exactly as the scheme writes them."""
    def spans(sentences: list[list[str]]) -> set[tuple[int, str, int, int]]:
        out = set()
        for i, tags in enumerate(sentences):
            for t, s, e in to_spans(tags, scheme):
                well_formed = tags[s:e] == from_spans([(t, 0, e - s)], e - s, scheme)
                if not strict or scheme == "IOB1" or well_formed:
                    out.add((i, t, s, e))
        return out

    g, p = spans(gold), spans(pred)
    return len(g), len(p), len(g & p)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(SCHEMES)), st.booleans(), st.data())
def test_micro_matches_independent_span_count(scheme: str, strict: bool, data: st.DataObject) -> None:
    labels = labels_for_types(["A", "B-C"], scheme)
    lengths = data.draw(st.lists(st.integers(0, 8), max_size=5))
    gold = [data.draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)) for n in lengths]
    pred = [data.draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)) for n in lengths]
    r = evaluate_spans(gold, pred, scheme=scheme, strict=strict)
    m = r["micro"]
    assert (m["support"], m["predicted"], m["correct"]) == _independent(gold, pred, scheme, strict)


def _conll_tags(path: Path) -> list[list[str]]:
    return [s.labels or [] for s in read_sentences(path)]


def test_conll2003_dev_counts() -> None:
    iob1, iob2 = SHARED / "datasets/conll2003/dev.txt", SHARED / "datasets/conll2003/iob2/dev.txt"
    if not (iob1.is_file() and iob2.is_file()):
        pytest.skip(f"CoNLL-2003 data not found under {SHARED}")
    expected = {"PER": 1842, "ORG": 1341, "LOC": 1837, "MISC": 922}  # published counts (dataset README)
    for path in (iob1, iob2):
        tags = _conll_tags(path)
        for strict in (False, True):
            r = evaluate_spans(tags, tags, strict=strict)
            assert {t: v["support"] for t, v in r["per_type"].items()} == expected
            assert r["micro"]["f1"] == 1.0 and r["sentences"] == 3250 and r["tokens"] == 51362


_PREFIXES = {name: "".join(scheme.prefixes) for name, scheme in SCHEMES.items()}


@settings(max_examples=400, deadline=None)
@given(scheme=st.sampled_from(sorted(_PREFIXES)), data=st.data())
def test_conlleval_reading_is_seqevals(scheme: str, data) -> None:
    """The conlleval mode reads spans with schemes.to_spans (seqeval.metrics imports scikit-learn, 1.3 s):
    the spans must be exactly seqeval's get_entities, illegal sequences and hyphenated types included."""
    from seqeval.metrics.sequence_labeling import get_entities

    from ner_toolkit.evaluate import _for_seqeval

    types = ["PER", "B-X", "I"]  # a type may hold "-" or look like a prefix
    tag = st.one_of(st.just("O"), st.builds(lambda p, t: f"{p}-{t}", st.sampled_from(_PREFIXES[scheme]),
                                            st.sampled_from(types)))
    tags = data.draw(st.lists(tag, max_size=10))
    ids = {t: f"T{i}" for i, t in enumerate(types)}
    names = {v: k for k, v in ids.items()}
    entities = get_entities(_for_seqeval(tags, ids, SCHEMES[scheme]))
    want = sorted((names[t], start, last + 1) for t, start, last in entities)
    assert sorted(to_spans(tags, scheme)) == want
    # and the scores evaluate_spans gives are built on those spans
    result = evaluate_spans([tags], [tags], scheme=scheme)
    assert result["micro"]["support"] == len(want)


def test_scoring_does_not_import_scikit_learn() -> None:
    """What keeps a run's start-up short: scoring (both modes) never loads seqeval.metrics' scikit-learn."""
    import subprocess
    import sys

    code = ("import sys; from ner_toolkit.evaluate import evaluate_spans; "
            "g = [['B-PER', 'I-PER', 'O']]; evaluate_spans(g, g); evaluate_spans(g, g, strict=True); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
