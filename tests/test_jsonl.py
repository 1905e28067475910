"""Offset-annotated JSON Lines and raw text in (ner_toolkit.data.jsonl): what a user feeding Doccano,
Label Studio, Prodigy, HF-datasets or this toolkit's own output relies on.

Every record kind is pinned to exact tokens and BIO tags; misaligned spans to exact report counts,
lines and messages; malformed input to a UserError naming FILE:LINE. A property test throws random
texts and spans at the reader: kept spans always cover the gold span, tags are valid BIO, and the
only exception is UserError.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ner_toolkit.data.jsonl import AlignmentReport, read_jsonl
from ner_toolkit.data.plaintext import read_text
from ner_toolkit.errors import UserError


def write(tmp_path: Path, records, name: str = "data.jsonl") -> Path:
    """One JSON object per line; strings are written verbatim (for malformed lines)."""
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def read(path, tokenizer: str = "whitespace", **kwargs):
    return list(read_jsonl(path, tokenizer, **kwargs))


def error_of(path: Path, tokenizer: str = "whitespace", **kwargs) -> str:
    with pytest.raises(UserError) as info:
        read(path, tokenizer, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------- record kinds

def test_toolkit_records_with_list_and_dict_entities(tmp_path):
    path = write(tmp_path, [
        {"id": 1, "text": "Peter Blackburn went to Paris .", "entities": [[0, 15, "PER"], [24, 29, "LOC"]]},
        # this toolkit's prediction output: dict entities with text, score, token offsets
        {"id": 2, "text": "EU rejects it", "entities": [
            {"label": "ORG", "start": 0, "end": 2, "text": "EU", "score": 0.98, "token_start": 0, "token_end": 1}]},
    ])
    first, second = read(path)
    assert first.tokens == ["Peter", "Blackburn", "went", "to", "Paris", "."]
    assert first.labels == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert first.entities == [("PER", 0, 15), ("LOC", 24, 29)]
    assert (first.line, first.fields) == (1, {"id": 1})
    assert second.labels == ["B-ORG", "O", "O"] and second.line == 2 and second.fields == {"id": 2}


def test_doccano_label_and_labels(tmp_path):
    path = write(tmp_path, [
        {"id": 7, "text": "Angela Merkel visited Berlin", "label": [[22, 28, "LOC"], [0, 13, "PER"]],
         "meta": {"src": "x"}},
        {"text": "Rome wins", "labels": [[0, 4, "LOC"]]},
    ])
    a, b = read(path)
    assert a.labels == ["B-PER", "I-PER", "O", "B-LOC"]
    assert a.fields == {"id": 7, "meta": {"src": "x"}}
    assert b.labels == ["B-LOC", "O"]


def test_label_studio_json_min(tmp_path):
    path = write(tmp_path, [{"text": "Ask Bob Smith", "id": 3, "annotator": 1, "label": [
        {"start": 4, "end": 13, "text": "Bob Smith", "labels": ["PER"]}]}])
    [doc] = read(path)
    assert doc.labels == ["O", "B-PER", "I-PER"]
    assert doc.fields == {"id": 3, "annotator": 1}


def ls_task(text, spans, **extra):
    result = [{"id": f"r{i}", "from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": s, "end": e, "text": text[s:e] if t is None else t, "labels": [lab]}}
              for i, (s, e, lab, t) in enumerate(spans)]
    result.append({"type": "relation", "from_id": "r0", "to_id": "r1"})  # not a span: ignored
    return {"id": extra.pop("id", 1), "data": {"text": text, **extra.pop("data", {})},
            "annotations": [{"result": [], "was_cancelled": True}, {"result": result, "was_cancelled": False}],
            "predictions": [{"result": []}], **extra}


def test_label_studio_task_per_line_uses_first_annotation_not_cancelled(tmp_path):
    task = ls_task("Tim Cook leads Apple", [(0, 8, "PER", None), (15, 20, "ORG", None)],
                   id=42, data={"source": "news"})
    path = write(tmp_path, [task, {"id": 43, "data": {"body": "no annotations here"}}])
    doc, unlabelled = read(path)
    assert doc.labels == ["B-PER", "I-PER", "O", "B-ORG"]
    assert doc.fields == {"id": 42, "data": {"source": "news"}}
    assert unlabelled.text == "no annotations here"  # the only string of data
    assert unlabelled.labels is None and unlabelled.entities is None and unlabelled.fields == {"id": 43}


def test_label_studio_array_export_gets_each_tasks_line(tmp_path):
    tasks = [ls_task("Tim Cook", [(0, 8, "PER", None)], id=1),
             ls_task("in Paris", [(3, 8, "LOC", None)], id=2),
             ls_task("nothing", [], id=3)]
    path = tmp_path / "export.json"
    text = json.dumps(tasks, indent=2)
    path.write_text(text, encoding="utf-8")
    docs = read(path)
    assert [d.labels for d in docs] == [["B-PER", "I-PER"], ["O", "B-LOC"], ["O"]]
    starts = [n for n, line in enumerate(text.splitlines(), 1) if line == "  {"]
    assert [d.line for d in docs] == starts and starts[0] == 2
    # A bad span names the task's first line and the task number.
    tasks[1]["annotations"][1]["result"][0]["value"]["end"] = 99
    path.write_text(json.dumps(tasks, indent=2), encoding="utf-8")
    message = error_of(path)
    assert f"{path}:{starts[1]}: task 2: annotation result 1 [3, 99) is out of range" in message


@pytest.mark.parametrize("text, expected", [
    ("[]", None), ("  \n[\n]\n", None),
    ('[{"data": {"text": "a"}}, ]', ":1: invalid JSON: Expecting value"),
    ('[{"data": {"text": "a"}}\n\n', ":2: expected , or ] after task 1 (is the array cut short?)"),
    ('[{"data": {"text": "a"}}] x', ":1: content after the closing ]"),
    ('[\n{"data": {"text": "a"}},\n3]', ":3: task 2: a record is a number, not a JSON object"),
    ('[\n{"data": {"text": "a"}},\n{"data": {"text": "b"},}]', ":3: invalid JSON: Expecting property name"),
])
def test_label_studio_array_edges(tmp_path, text, expected):
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    if expected is None:
        assert read(path) == []
    else:
        assert f"{path}{expected}" in error_of(path)


def test_label_studio_utf16_offsets_after_an_emoji(tmp_path):
    text = "I 😀 love Paris and 👍🏽 Rome"
    # Offsets as JavaScript counts them: every emoji above U+FFFF is two units.
    def js_span(sub):
        start = len(text[:text.index(sub)].encode("utf-16-le")) // 2
        return start, start + len(sub.encode("utf-16-le")) // 2
    (ps, pe), (rs, re_) = js_span("Paris"), js_span("Rome")
    assert (ps, rs) != (text.index("Paris"), text.index("Rome"))
    path = write(tmp_path, [ls_task(text, [(ps, pe, "LOC", "Paris"), (rs, re_, "LOC", "Rome")])])
    report = AlignmentReport(str(path))
    [doc] = read(path, report=report)
    assert doc.tokens == ["I", "😀", "love", "Paris", "and", "👍🏽", "Rome"]
    assert doc.labels == ["O", "O", "O", "B-LOC", "O", "O", "B-LOC"]
    assert [doc.text[s:e] for _, s, e in doc.entities] == ["Paris", "Rome"]
    assert (report.spans, report.aligned, report.skipped) == (2, 2, [])


def test_offsets_that_match_neither_count_are_skipped_or_an_error(tmp_path):
    path = write(tmp_path, [{"text": "I 😀 love Paris", "label": [
        {"start": 0, "end": 1, "text": "I", "labels": ["X"]},
        {"start": 9, "end": 13, "text": "Rome", "labels": ["LOC"]}]}])
    report = AlignmentReport(str(path))
    [doc] = read(path, report=report)
    assert doc.labels == ["B-X", "O", "O", "O"]
    assert doc.entities == [("X", 0, 1)]  # offsets that miss their text locate nothing
    [skipped] = report.skipped
    assert (skipped.line, skipped.label, skipped.start, skipped.end) == (1, "LOC", 9, 13)
    assert skipped.why.startswith("offsets do not match its text 'Rome'")
    message = error_of(path, misaligned="error")
    assert f"{path}:1: span [9, 13) 'Pari' LOC offsets do not match its text 'Rome'" in message
    assert "set data.misaligned: expand or skip, or fix the annotation" in message


def test_prodigy_spans_and_its_tokens_ignored(tmp_path):
    path = write(tmp_path, [{"text": "Visit New York now", "_input_hash": 5, "answer": "accept",
                             "tokens": [{"text": "Visit", "start": 0, "end": 5, "id": 0}],
                             "spans": [{"start": 6, "end": 14, "label": "GPE", "token_start": 1, "token_end": 2}]}])
    [doc] = read(path)
    assert doc.tokens == ["Visit", "New", "York", "now"]
    assert doc.labels == ["O", "B-GPE", "I-GPE", "O"]
    assert doc.fields == {"_input_hash": 5, "answer": "accept"}


def test_hf_rows_with_tag_names_and_with_ids(tmp_path):
    path = write(tmp_path, [
        {"id": "0", "tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]},
        {"id": "1", "tokens": ["Peter", "Blackburn"], "tags": [1, 2]},
    ])
    with pytest.raises(UserError, match=r":2: 'tags' holds tag ids but no tag names"):
        read(path)
    first, second = read(path, tag_names=["O", "B-PER", "I-PER"])
    assert first.text == "EU rejects German call" and first.offsets[2] == (11, 17)
    assert first.labels == ["B-ORG", "O", "B-MISC", "O"] and first.entities is None
    assert second.labels == ["B-PER", "I-PER"] and second.fields == {"id": "1"}


def test_unlabelled_text_and_tokens(tmp_path):
    path = write(tmp_path, [{"text": "just text", "id": 1}, {"tokens": ["just", "tokens"]},
                            {"text": "empty gold", "entities": []}])
    text, tokens, empty = read(path)
    assert (text.tokens, text.labels, text.entities, text.fields) == (["just", "text"], None, None, {"id": 1})
    assert (tokens.text, tokens.labels, tokens.entities) == ("just tokens", None, None)
    assert (empty.labels, empty.entities) == (["O", "O"], [])  # labelled: nothing in it


def test_mixed_kinds_bom_crlf_blank_lines_and_conll_tokenizer(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = ['{"text": "Mr. Smith didn\'t go to the U.S.", "entities": [[4, 9, "PER"], [27, 31, "LOC"]]}',
             "", "   ", '{"tokens": ["a"], "ner_tags": ["O"]}']
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    first, second = read(path, "conll")
    assert first.tokens == ["Mr.", "Smith", "did", "n't", "go", "to", "the", "U.S", "."]
    assert first.labels == ["O", "B-PER", "O", "O", "O", "O", "O", "B-LOC", "I-LOC"]
    assert (first.line, second.line) == (1, 4)


def test_duplicates_collapse_and_whitespace_is_trimmed(tmp_path):
    path = write(tmp_path, [{"text": "go to  Paris  now", "entities": [[5, 14, "LOC"], [7, 12, "LOC"], [7, 12, "LOC"]]}])
    report = AlignmentReport(str(path))
    [doc] = read(path, report=report)
    assert doc.labels == ["O", "O", "B-LOC", "O"]
    assert doc.entities == [("LOC", 7, 12)]
    assert (report.spans, report.aligned, report.expanded, report.skipped) == (1, 1, [], [])


# ---------------------------------------------------------------------------- misaligned spans

MISALIGNED = [
    {"text": "Parisian food", "entities": [[0, 5, "LOC"]]},                     # inside a token
    {"text": "ok"},
    {"text": "New York City", "entities": [[0, 8, "LOC"], [4, 13, "GPE"]]},     # overlap
    {"text": "a   b", "entities": [[1, 4, "X"], [0, 1, "Y"]]},                  # whitespace only
]


def test_expand_widens_to_token_edges_and_reports(tmp_path):
    path = write(tmp_path, MISALIGNED)
    report = AlignmentReport(str(path))
    docs = read(path, report=report)
    assert [d.labels for d in docs if d.labels] == [["B-LOC", "O"], ["B-LOC", "I-LOC", "O"], ["B-Y", "O"]]
    assert docs[0].entities == [("LOC", 0, 5)]  # gold as the annotator marked it, for exact scoring
    assert docs[2].entities == [("LOC", 0, 8), ("GPE", 4, 13)]
    assert docs[3].entities == [("Y", 0, 1)]
    assert (report.spans, report.aligned, len(report.expanded), len(report.skipped)) == (5, 2, 1, 2)
    assert report.expanded[0] == (1, "LOC", 0, 5, "Paris", 0, 8, "Parisian")
    assert [(s.line, s.label, s.why) for s in report.skipped] == [
        (3, "GPE", "overlaps another span"), (4, "X", "is only whitespace")]
    assert report.lines() == [
        f"{path}: 5 gold span(s): 2 aligned to tokens, 1 expanded to token edges, 2 skipped",
        f"{path}:1: span [0, 5) 'Paris' LOC does not fall on token boundaries: expanded to [0, 8) 'Parisian'",
        f"{path}:3: span [4, 13) 'York City' GPE overlaps another span: skipped",
        f"{path}:4: span [4, 4) '' X is only whitespace: skipped",
    ]
    assert report.lines(limit=1)[1:] == [report.lines()[1], "... and 2 more"]


def test_skip_leaves_misaligned_out(tmp_path):
    path = write(tmp_path, MISALIGNED)
    report = AlignmentReport(str(path))
    docs = read(path, misaligned="skip", report=report)
    assert docs[0].labels == ["O", "O"] and docs[0].entities == [("LOC", 0, 5)]
    assert (report.spans, report.aligned, len(report.expanded), len(report.skipped)) == (5, 2, 0, 3)
    assert report.lines()[1] == f"{path}:1: span [0, 5) 'Paris' LOC does not fall on token boundaries: skipped"


@pytest.mark.parametrize("records, line, where", [
    (MISALIGNED, 1, "span [0, 5) 'Paris' LOC does not fall on token boundaries"),
    (MISALIGNED[1:], 2, "span [4, 13) 'York City' GPE overlaps another span"),
    (MISALIGNED[3:], 1, "span [4, 4) '' X is only whitespace"),
])
def test_error_policy_names_the_first_bad_span(tmp_path, records, line, where):
    message = error_of(write(tmp_path, records), misaligned="error")
    assert f"data.jsonl:{line}: {where}; set data.misaligned: expand or skip, or fix the annotation" in message


def test_arguments_are_checked_at_the_call(tmp_path):
    path = write(tmp_path, [{"text": "x"}])
    with pytest.raises(ValueError, match="misaligned"):
        read_jsonl(path, "whitespace", misaligned="widen")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="word tokenizer"):
        read_jsonl(path, "spacy")
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl", "whitespace")  # before any next()
    with pytest.raises(UserError, match="is a directory"):
        read_text(tmp_path, "whitespace")


# ---------------------------------------------------------------------------- malformed input

MALFORMED = [
    ('{"text": "a", "entities": [[0, 1, "X"]]', "invalid JSON: Expecting ',' delimiter (column 40)"),
    ('"just a string"', "a record is a string, not a JSON object"),
    ('{"id": 1}', 'has no "text" or "tokens" (its keys: id)'),
    ('{"text": 5}', '"text" is a number, not a string'),
    ('{"text": "abc", "entities": {"0": 1}}', "'entities' is an object, not a list of spans"),
    ('{"text": "abc", "entities": [[0, 1]]}', "entity 1 is an array of 2 items"),
    ('{"text": "abc", "entities": [[0, "1", "X"]]}', "entity 1: start and end must be integers"),
    ('{"text": "abc", "entities": [[true, 1, "X"]]}', "start and end must be integers, not a boolean"),
    ('{"text": "abc", "entities": [[0, 1.0, "X"]]}', "start and end must be integers"),
    ('{"text": "abc", "entities": [{"start": 0, "label": "X"}]}', "start and end must be integers, not a number and null"),
    ('{"text": "abc", "entities": [[0, 1, 5]]}', "the label must be a non-empty string"),
    ('{"text": "abc", "entities": [[0, 1, ""]]}', "the label must be a non-empty string"),
    ('{"text": "abc", "entities": [[0, 1, "New Label"]]}', "holds whitespace"),
    ('{"text": "abc", "entities": [[0, 4, "X"]]}', "entity 1 [0, 4) is out of range for a text of 3 characters"),
    ('{"text": "abc", "entities": [[-1, 2, "X"]]}', "[-1, 2) is out of range"),
    ('{"text": "abc", "entities": [[2, 2, "X"]]}', "[2, 2) is out of range"),
    ('{"text": "abc", "entities": [[2, 1, "X"]]}', "[2, 1) is out of range"),
    ('{"text": "abc", "entities": [], "spans": []}', "has both 'entities' and 'spans'"),
    ('{"text": "abc", "ner_tags": ["O"]}', "give the \"tokens\" too"),
    ('{"tokens": ["a", "b"], "ner_tags": ["O"]}', "2 tokens but 1 ner_tags"),
    ('{"tokens": ["a"], "ner_tags": [7]}', "tag id 7 is out of range for 2 tag names"),
    ('{"tokens": ["a"], "ner_tags": [true]}', "must hold all tag names (strings) or all tag ids"),
    ('{"tokens": ["a"], "ner_tags": ["PER"]}', 'tag "PER" has no "PREFIX-" part'),
    ('{"tokens": ["a", ""]}', "token 2 '' is empty or holds whitespace"),
    ('{"tokens": "a b"}', '"tokens" must be a list of strings'),
    ('{"data": {"a": "x", "b": "y"}}', "the task's data has several string values (its keys: a, b)"),
    ('{"data": {"text": "x"}, "annotations": {}}', '"annotations" must be a list of objects'),
    ('{"data": {"text": "x"}, "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 1, '
     '"text": "x", "labels": []}}]}]}', '"labels" must be a non-empty list'),
]


@pytest.mark.parametrize("line, expected", MALFORMED)
def test_malformed_record_is_a_user_error_at_its_line(tmp_path, line, expected):
    path = write(tmp_path, ['{"text": "fine"}', "", line, '{"text": "never reached"}'])
    message = error_of(path, tag_names=["O", "B-X"])
    assert message.startswith(f"error: {path}:3: "), message
    assert expected in message
    assert ";" in message  # every message carries its fix


def test_a_json_array_line_after_records_is_not_an_object(tmp_path):
    path = write(tmp_path, ['{"text": "fine"}', "[1, 2]"])
    assert f"{path}:2: a record is an array, not a JSON object" in error_of(path)


def test_invalid_utf8_binary_and_empty_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert f"{path}:2: invalid UTF-8 (byte 0xe9 at column 14)" in error_of(path)
    path.write_bytes(b'{"text": "ok"}\n\x00\x01\x02\n')
    assert f"{path}:2: holds NUL bytes" in error_of(path)
    path.write_bytes(b"")
    assert read(path) == []
    path.write_bytes(b"\n  \n\r\n")
    assert read(path) == []


def test_stdin(monkeypatch):
    data = '{"text": "Hi Ann", "entities": [[3, 6, "PER"]]}\n'.encode()
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(data)})())
    [doc] = read("-")
    assert doc.labels == ["O", "B-PER"]
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(b"one line\n\ntwo\n")})())
    assert [(d.tokens, d.line) for d in read_text("-", "whitespace")] == [(["one", "line"], 1), (["two"], 3)]


# ---------------------------------------------------------------------------- raw text

def test_read_text_one_document_per_line(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfPeter went home.\r\n\r\n   \n\xc3\xa9t\xc3\xa9 \xe5\x8c\x97\xe4\xba\xac\n")
    docs = list(read_text(path, "conll"))
    assert [(d.line, d.text, d.tokens) for d in docs] == [
        (1, "Peter went home.", ["Peter", "went", "home", "."]), (4, "été 北京", ["été", "北京"])]
    assert all(d.labels is None and d.entities is None for d in docs)
    assert list(read_text(path, "chars"))[1].tokens == ["é", "t", "é", "北", "京"]


def test_read_text_document_per_file_keeps_the_text_verbatim(tmp_path):
    path = tmp_path / "doc.txt"
    raw = "First line.\r\n\r\nSecond  line\twith tabs.\n"
    path.write_bytes(b"\xef\xbb\xbf" + raw.encode())
    [doc] = read_text(path, "conll", document_per_file=True)
    assert doc.text == raw and doc.line == 1
    assert all(doc.text[s:e] == token for token, (s, e) in zip(doc.tokens, doc.offsets))
    assert "".join(doc.tokens) == "".join(raw.split())
    path.write_bytes(b"  \n\n")
    assert list(read_text(path, "conll", document_per_file=True)) == []


def test_read_text_bad_bytes(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    for per_file in (False, True):
        with pytest.raises(UserError, match=r"bad\.txt:3: invalid UTF-8 \(byte 0xff at column 5\)"):
            list(read_text(path, "whitespace", document_per_file=per_file))
    path.write_bytes(b"text\nPK\x03\x04\x00\x00")
    for per_file in (False, True):
        with pytest.raises(UserError, match=r"bad\.txt:2: holds NUL bytes"):
            list(read_text(path, "whitespace", document_per_file=per_file))


# ---------------------------------------------------------------------------- property

_chars = st.sampled_from(list("ab xy.,'\"-\t\n") + ["😀", "北", "\u00a0", "\u3000", "é"])
_texts = st.lists(_chars, max_size=30).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), tokenizer=st.sampled_from(["whitespace", "conll", "chars"]),
       policy=st.sampled_from(["expand", "skip", "error"]))
def test_random_spans_align_inside_their_gold_span(tmp_path, data, tokenizer, policy):
    text = data.draw(_texts)
    n = len(text)
    valid = st.integers(0, max(n - 1, 0)).flatmap(lambda s: st.tuples(st.just(s), st.integers(s + 1, max(n, s + 1))))
    anything = st.tuples(st.integers(-2, n + 2), st.integers(-2, n + 2))  # mostly out of range: UserError
    offsets = st.one_of(valid, valid, valid, anything)
    spans = data.draw(st.lists(st.tuples(offsets, st.sampled_from(["PER", "LOC"])).map(lambda x: (*x[0], x[1])),
                               max_size=5))
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": text, "entities": [list(s) for s in spans]}) + "\n", encoding="utf-8")
    report = AlignmentReport(str(path))
    try:
        [doc] = read(path, tokenizer, misaligned=policy, report=report)
    except UserError:
        event("UserError")
        return
    event(f"read, {len(report.expanded)} expanded, {len(report.skipped)} skipped")
    assert len(doc.labels) == len(doc.tokens)
    previous = "O"
    for tag in doc.labels:
        assert tag == "O" or tag[:2] in ("B-", "I-")
        if tag.startswith("I-"):
            assert previous != "O" and previous[2:] == tag[2:]
        previous = tag
    assert report.spans == report.aligned + len(report.expanded) + len(report.skipped)
    gold = set(doc.entities)
    # Every tagged run comes from a gold span: inside it (aligned) or covering it (expanded).
    i = 0
    while i < len(doc.labels):
        if doc.labels[i].startswith("B-"):
            j = i + 1
            while j < len(doc.labels) and doc.labels[j] == "I-" + doc.labels[i][2:]:
                j += 1
            s, e = doc.offsets[i][0], doc.offsets[j - 1][1]
            label = doc.labels[i][2:]
            assert (label, s, e) in gold or (
                policy == "expand" and any(lab == label and s <= gs and ge <= e for lab, gs, ge in gold)), (doc, gold)
            i = j
        else:
            i += 1
    for label, s, e in gold:
        assert text[s:e] == text[s:e].strip() and s < e
