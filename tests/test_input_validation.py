"""Text that cannot be processed is refused where it enters (issue 28, item 4 and item 6's API misuse).

One check (``ner_toolkit.data.validate``) for every text from a file, a request or the API: unpaired
surrogates (valid JSON: ``"\\ud800"``) are a user error naming FILE:LINE or the item, never the tokenizers
library's TypeError; every JSON decoding failure (syntax, integers past 4,300 digits, deep nesting) is one
line; bytes and numbers given to the API get the toolkit's own TypeError. The ``conll`` tokeniser's result
never depends on wall-clock time (NLTK's 5 s regex budget), and ``ner-export`` refuses a mount point
before the work.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_toolkit.data.jsonl import read_jsonl
from ner_toolkit.data.text import tokenize
from ner_toolkit.data.validate import InvalidJSON, InvalidText, check_text, load_json, text_problem
from ner_toolkit.errors import UserError

from conftest import REPO, assert_user_error, run_cli

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
BIG = "9" * 5000
DEEP = "[" * 100_000 + "]" * 100_000
SURROGATE = "\ud800"
SURROGATES = ["\ud800", "\udbff", "\udc80", "\udfff"]


@st.composite
def any_text(draw: st.DrawFn) -> str:
    """Any code points, and half the time a lone surrogate somewhere (hypothesis draws none by itself):
    what a JSON "\\uXXXX" escape or a Python caller can produce."""
    text = draw(st.text(st.characters(exclude_categories=()), max_size=30))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(SURROGATES)) + text[at:]
    return text


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- the check itself

def test_load_json_gives_one_error_for_every_decoding_failure():
    for doc, needle in [('{"text": "x"', "invalid JSON: Expecting"), ('{"n": ' + BIG + "}", "4300 digits"),
                        (DEEP, "nested too deeply"), ('{"a": 1} x', "Extra data")]:
        with pytest.raises(InvalidJSON, match=needle) as info:
            load_json(doc)
        assert "\n" not in str(info.value)
    assert load_json('{"e": "\\ud83d\\ude00"}') == {"e": "\U0001F600"}  # a paired surrogate is one character
    for doc, where in [('{"text": "a\\ud800"}', '"text"'), ('{"tokens": ["a", "\\udfff"]}', '"tokens"[1]'),
                       ('{"meta": {"\\ud800": 1}}', 'the key "\\ud800" in "meta"'), ('"\\ud800"', "the value")]:
        with pytest.raises(InvalidText, match="unpaired surrogate") as info:
            load_json(doc)
        assert str(info.value).startswith(where) and str(info.value).isascii()


@PROPERTY
@given(any_text())
def test_text_problem_is_exactly_unencodable_text(text):
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert (text_problem(text) is None) == encodable == (not has_surrogate(text))


# ---------------------------------------------------------------------------- files

@pytest.mark.parametrize("line,needle", [
    ('{"text": "Peter \\ud800 Blackburn"}', '"text" holds an unpaired surrogate U+D800 at character 6'),
    ('{"tokens": ["Peter", "\\ud800"]}', '"tokens"[1] holds an unpaired surrogate'),
    ('{"text": "Peter", "id": "\\udc80"}', '"id" holds an unpaired surrogate'),  # carried to the output
    ('{"text": "Peter", "entities": [[0, 5, "P\\ud800"]]}', '"entities"[0][2] holds'),
    ('{"text": "x", "n": ' + BIG + "}", "more than 4300 digits"),
    ('{"text": "x", "n": ' + DEEP + "}", "nested too deeply"),
])
@pytest.mark.parametrize("tokenizer", ["whitespace", "conll"])
def test_jsonl_reader_names_the_line(tmp_path, line, needle, tokenizer):
    path = write_lines(tmp_path / "in.jsonl", ['{"text": "fine"}', line])
    with pytest.raises(UserError) as info:
        list(read_jsonl(path, tokenizer))
    assert str(info.value).startswith(f"error: {path}:2: ") and needle in str(info.value)
    assert "\n" not in str(info.value)


def test_label_studio_array_names_the_task(tmp_path):
    path = write_lines(tmp_path / "tasks.json", ["[", '{"data": {"text": "a"}},', '{"data": {"text": "\\ud800"}},',
                                                 '{"data": {"text": "b"}, "n": ' + BIG + "}", "]"])
    with pytest.raises(UserError, match=f"{path}:3: task 2: \"data\"\\[\"text\"\\] holds an unpaired"):
        list(read_jsonl(path, "whitespace"))
    path.write_text(path.read_text().replace("\\ud800", "ok"))
    with pytest.raises(UserError, match=f"{path}:4: task 3: invalid JSON: a number of more than"):
        list(read_jsonl(path, "whitespace"))


@PROPERTY
@given(st.lists(any_text(), min_size=1, max_size=4))
def test_jsonl_reader_refuses_exactly_the_texts_with_surrogates(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("prop") / "in.jsonl"
    # ensure_ascii: a surrogate is written as its \\uXXXX escape, as a JSON producer would.
    words = [w for t in texts for w in t.split()] or ["x"]
    write_lines(path, [json.dumps({"text": t}) for t in texts] + [json.dumps({"tokens": words})])
    bad = next((i for i, t in enumerate(texts) if has_surrogate(t)), None)
    if bad is None:
        assert len(list(read_jsonl(path, "conll"))) == len(texts) + 1
    else:
        with pytest.raises(UserError, match=f":{bad + 1}: \"text\" holds an unpaired surrogate"):
            list(read_jsonl(path, "conll"))


def test_predict_and_train_cli_refuse_surrogates_with_one_line(trained, tmp_path):
    jsonl = write_lines(tmp_path / "in.jsonl", ['{"text": "Peter Blackburn"}', '{"text": "EU \\ud800 rejects"}'])
    proc = run_cli("predict.py", ["--model", trained.model_dir, "--input-format", "jsonl", jsonl])
    assert_user_error(proc.returncode, proc.stderr, f"{jsonl}:2:", "unpaired surrogate U+D800")
    train = write_lines(tmp_path / "train.jsonl", ['{"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]}',
                                                   '{"tokens": ["\\udfff"], "ner_tags": ["O"]}'])
    proc = run_cli("train.py", ["--config", trained.config, "--set", f"data.train={train}", "--set", "data.dev=null",
                                "--output-dir", tmp_path / "out"])
    assert_user_error(proc.returncode, proc.stderr, f"{train}:2:", '"tokens"[0] holds an unpaired surrogate')
    assert not (tmp_path / "out" / "model").exists()


# ---------------------------------------------------------------------------- the API

@PROPERTY
@given(st.lists(any_text(), min_size=1, max_size=3))
def test_api_refuses_exactly_the_texts_with_surrogates(predictor, texts):
    bad = next((i for i, t in enumerate(texts) if has_surrogate(t)), None)
    tokens = [t.split() or ["x"] for t in texts]
    if bad is None:
        assert len(predictor.predict_text(texts)) == len(texts)
        assert len(predictor.predict(tokens)) == len(texts)
        return
    with pytest.raises(InvalidText, match=f"^text {bad} holds an unpaired surrogate"):
        predictor.predict_text(texts)
    bad_sentence = next(i for i, s in enumerate(tokens) if has_surrogate("".join(s)))
    with pytest.raises(InvalidText, match=f"^sentence {bad_sentence}, token \\d+, holds an unpaired surrogate"):
        predictor.predict(tokens)


def test_api_misuse_gets_the_toolkits_type_error(predictor):
    cases = [
        (lambda: predictor.predict([[1, 2]]), "sentence 0, token 0, is int, not a str"),
        (lambda: predictor.predict([["Peter", b"Blackburn"]]), "token 1, is bytes, not a str: decode it first"),
        (lambda: predictor.predict([b"Peter Blackburn"]), "sentence 0 is bytes, not a list of str tokens"),
        (lambda: predictor.predict(b"Peter"), "takes a list of token lists"),
        (lambda: predictor.predict([None]), "sentence 0 is NoneType, not a list of str tokens"),
        (lambda: predictor.predict_text(b"Peter Blackburn"), "is bytes, not a str: decode it first"),
        (lambda: predictor.predict_text(["EU", b"Peter"]), "text 1 is bytes, not a str: decode it first"),
        (lambda: predictor.predict_text([3]), "text 0 is int, not a str"),
        (lambda: predictor.predict_text(SURROGATE), "the text holds an unpaired surrogate"),
    ]
    for call, message in cases:
        with pytest.raises((TypeError, InvalidText)) as info:
            call()
        assert message in str(info.value) and "PreTokenized" not in str(info.value)
    assert check_text("Peter") == "Peter"
    assert isinstance(InvalidText("x"), ValueError)  # a caller's except ValueError still catches it


# ---------------------------------------------------------------------------- no wall clock

def test_conll_tokenizer_never_runs_under_a_wall_clock(monkeypatch):
    """NLTK stops any regex after nltk.redos.DEFAULT_TIMEOUT seconds of wall-clock time: with the limit at
    a nanosecond, only a tokeniser that lifts it for NLTK's own patterns gives any result."""
    redos = pytest.importorskip("nltk.redos")
    monkeypatch.setattr(redos, "DEFAULT_TIMEOUT", 1e-9)
    sentence = ["Peter", "Blackburn", "went", "to", "Paris", ".", "He", "met", "Mr.", "Smith", "."]
    text = "Peter Blackburn went to Paris. He met Mr. Smith. " * 2000  # ~100,000 characters: several pieces
    assert tokenize(text, "conll")[0] == sentence * 2000


def test_conll_pieces_tile_the_text_and_bound_the_work():
    from ner_toolkit.data import treebank

    text = ("word " * 3000 + "\n\n" + "Mr. Smith met Dr. Jones. " * 800 + "x" * 25_000 + " tail .")
    pieces = list(treebank._pieces(text))
    assert [p[0] for p in pieces[1:]] == [p[1] for p in pieces[:-1]] and (pieces[0][0], pieces[-1][1]) == (0, len(text))
    assert all(end - start <= treebank.PIECE or one for start, end, one in pieces)
    assert text[slice(*next(p[:2] for p in pieces if p[2]))] == "x" * 25_000  # a long run: one token, not split
    tokens, offsets = tokenize(text, "conll")
    assert "x" * 25_000 in tokens and tokens.count("Mr.") == 800 and tokens.count("Dr.") == 800
    assert all(text[s:e] == t for t, (s, e) in zip(tokens, offsets))


@PROPERTY
@given(st.text(st.sampled_from("ab. \n!?\"')"), max_size=400), st.integers(20, 80))
def test_conll_pieces_property(text, limit):
    from ner_toolkit.data import treebank

    pieces = list(treebank._pieces(text, limit))
    assert "".join(text[s:e] for s, e, _ in pieces) == text
    for start, end, one in pieces:
        assert (end - start <= limit) if not one else (end - start >= limit and text[start:end].split() == [text[start:end]])
        # No word crosses a boundary: the pieces' tokens are the text's.
        assert end == len(text) or text[end].isspace() or text[end - 1].isspace()


# ---------------------------------------------------------------------------- ner-export onto a mount point

def test_export_onto_a_mount_point_fails_before_the_work(trained, tmp_path):
    pytest.importorskip("onnx")
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (a user and mount namespace) to make a mount point")
    mount = tmp_path / "mnt"
    mount.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = (f"mount -t tmpfs none {mount} && {sys.executable} -c 'import sys; from ner_toolkit.cli import "
              f"export_main; sys.exit(export_main())' --model {trained.model_dir} --output {mount}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=600)
    assert_user_error(proc.returncode, proc.stderr, str(mount), "is a mount point", "OUTPUT/export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]  # no temporary export left beside it
