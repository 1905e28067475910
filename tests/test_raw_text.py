"""Raw text in, character offsets out: Predictor.predict_text, the saved word tokeniser, and
predict.py --input-format text|jsonl with every registered output format."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, assert_user_error, run_cli

from ner_toolkit import formats
from ner_toolkit.data.text import Document, tokenize

PIECES = ["Peter", "Blackburn", "Paris", "EU", "Germany's", "U.S.", "didn't", "3.5", "1,234", '"quoted"', "(EU)",
          "--", "...", "café", "naïve", "Zürich", "北京", "東京", "😀", "e\u0301", "مرحبا", "Inc.", "a-b", "''", "``"]
SPACES = [" ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u2003", " \r\n "]


@st.composite
def odd_texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(min_size=1, max_size=6)), max_size=25))
    gaps = draw(st.lists(st.sampled_from(SPACES + [""]), min_size=len(words) + 1, max_size=len(words) + 1))
    return "".join(g + w for g, w in zip(gaps, words + [""]))


def test_entities_are_exact_substrings_with_crf_scores(predictor):
    text = "Peter Blackburn went to  Paris.\n\tEU officials in Brussels said Germany's plan failed."
    found = predictor.predict_text(text)
    assert isinstance(found, list)
    for entity in found:
        assert text[entity.start:entity.end] == entity.text
        assert 0.0 < entity.score <= 1.0
        assert entity.label in predictor.labels.types
    several = predictor.predict_text([text, "", "Japan beat Syria ."])
    assert len(several) == 3 and several[1] == []
    assert [e.to_dict() for e in several[0]] == [e.to_dict() for e in found]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=odd_texts(), tokenizer=st.sampled_from(["whitespace", "conll", "chars"]))
def test_raw_text_agrees_with_the_same_tokens_pre_tokenised(predictor, text, tokenizer):
    """Every entity's text is original[start:end], and raw input gets the tags its tokens get."""
    tokens, offsets = tokenize(text, tokenizer)
    found = predictor.predict_text(text, tokenizer=tokenizer)
    for entity in found:
        assert text[entity.start:entity.end] == entity.text
        assert entity.start == offsets[entity.token_start][0] and entity.end == offsets[entity.token_end - 1][1]
    document = Document(text, tokens, offsets)
    tags = predictor.predict_documents([document])[0].tags
    assert len(tags) == len(tokens)  # no token dropped
    if tokens:
        assert predictor.predict([tokens])[0] == tags


@pytest.mark.parametrize("texts", [["Peter"], ["Peter", "Paris"], ["", " ", "EU"], ["北"]])
def test_one_word_texts(predictor, texts):
    """A batch whose longest text is one word has no transitions at all; it still gets scored entities."""
    for text, found in zip(texts, predictor.predict_text(texts)):
        for entity in found:
            assert text[entity.start:entity.end] == entity.text and 0.0 < entity.score <= 1.0


def test_predict_refuses_strings_where_token_lists_belong(predictor):
    with pytest.raises(TypeError, match="predict_text"):
        predictor.predict("Peter Blackburn went to Paris .")
    with pytest.raises(TypeError, match="predict_text"):
        predictor.predict(["Peter Blackburn went to Paris ."])  # was: 31 tags, one per character
    with pytest.raises(TypeError, match="Predictor.predict"):
        predictor.predict_text([["Peter", "Blackburn"]])
    # Tokens with spaces inside are the caller's choice.
    assert len(predictor.predict([["Peter Blackburn", "went"]])[0]) == 2


def test_a_document_longer_than_the_encoder_window_keeps_every_token(predictor):
    text = " ".join(["Peter Blackburn met the EU delegation in Paris on Thursday ."] * 60)  # ~ 660 words
    document = Document.from_text(text, "conll")
    assert len(document.tokens) > 600  # windows of 128 subwords: several of them
    prediction = predictor.predict_documents([document])[0]
    assert len(prediction.tags) == len(document.tokens)
    for entity in predictor.predict_text(text):
        assert text[entity.start:entity.end] == entity.text


def test_the_word_tokenizer_is_saved_with_the_model_and_overridable(trained):
    from ner_toolkit.predict import Predictor

    saved = yaml.safe_load((trained.model_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["word_tokenizer"] == "conll"  # auto resolved from English training tokens
    assert Predictor.load(trained.model_dir).word_tokenizer == "conll"
    predictor = Predictor.load(trained.model_dir, word_tokenizer="whitespace")
    assert predictor.word_tokenizer == "whitespace"
    seen = []
    tag = predictor.predict_documents
    predictor.predict_documents = lambda docs: seen.extend(docs) or tag(docs)
    predictor.predict_text("Went to Paris.")
    predictor.predict_text("Went to Paris.", tokenizer="conll")
    assert [d.tokens for d in seen] == [["Went", "to", "Paris."], ["Went", "to", "Paris", "."]]
    with pytest.raises(ValueError, match="unknown word tokenizer"):
        Predictor.load(trained.model_dir, word_tokenizer="spacy")


def test_format_choices_are_the_registry(trained):
    help_text = run_cli("predict.py", ["--help"]).stdout
    for name in formats.names():
        assert name in help_text
    assert set(formats.names()) == {"conll", "jsonl", "hf", "label-studio"}

    @formats.register
    class Tsv(formats.Writer):  # a new format is one class
        name = "tsv-test"
        help = "test only"

        def write(self, unit, prediction, options):
            return "\t".join(prediction.tags) + "\n"

    try:
        from ner_toolkit.cli.predict import _parser

        assert "tsv-test" in _parser().format_help()
    finally:
        formats._WRITERS.pop("tsv-test")


def _pipeline(model_dir: Path, stdin: str, *args: str) -> subprocess.CompletedProcess:
    """``printf ... | predict.py --model DIR ARGS -`` through a real shell pipeline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    command = f"{sys.executable} {REPO / 'predict.py'} --model {model_dir} {' '.join(args)} - | cat"
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], input=stdin, capture_output=True, text=True,
                          env=env, timeout=300)


TEXTS = ["Peter Blackburn went to  Paris.", "", "\tEU officials in Brussels said Germany's plan failed. ",
         "北京 欢迎 you"]


def test_text_from_stdin_to_jsonl_on_stdout(trained):
    proc = _pipeline(trained.model_dir, "\n".join(TEXTS) + "\n", "--input-format text --format jsonl")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    non_blank = [t for t in TEXTS if t.strip()]
    assert [r["text"] for r in records] == non_blank
    assert [r["line"] for r in records] == [1, 3, 4]
    for record in records:
        assert len(record["tags"]) == len(record["tokens"])
        for entity in record["entities"]:
            assert record["text"][entity["start"]:entity["end"]] == entity["text"]
            assert set(entity) >= {"label", "start", "end", "text", "score"}


def _predict(capsys, *args) -> tuple[int, str, str]:
    """predict.py in this process (the model loads in a second, not a subprocess's four)."""
    from ner_toolkit.cli import predict_main

    capsys.readouterr()
    rc = predict_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_hf_and_label_studio_formats(trained, tmp_path, capsys):
    text = "Peter Blackburn went to Paris.\nEU officials met in Brussels.\n"
    source = tmp_path / "in.txt"
    source.write_text(text, encoding="utf-8")
    rc, out, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "text", "--format", "hf", source)
    assert rc == 0, err
    lists = [json.loads(line) for line in out.splitlines()]
    assert len(lists) == 2
    for line, entities in zip(text.splitlines(), lists):
        for e in entities:
            assert set(e) == {"entity_group", "score", "word", "start", "end"}
            assert line[e["start"]:e["end"]] == e["word"]
    rc, out, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "text", "--format",
                            "label-studio", source)
    assert rc == 0, err
    tasks = json.loads(out)  # one JSON array, as Label Studio imports it
    assert [t["data"]["text"] for t in tasks] == text.splitlines()
    for task in tasks:
        (prediction,) = task["predictions"]
        for result in prediction["result"]:
            value = result["value"]
            assert result["type"] == "labels" and result["from_name"] == "label" and result["to_name"] == "text"
            assert task["data"]["text"][value["start"]:value["end"]] == value["text"]
            assert len(value["labels"]) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    rc, out, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "text", "--format",
                            "label-studio", empty)
    assert rc == 0 and json.loads(out) == []


def test_text_to_conll_and_document_per_file(trained, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("Peter Blackburn went to Paris.\n\nEU officials met in Brussels.\n", encoding="utf-8")
    out = tmp_path / "doc.jsonl"
    rc, _, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "text", "--document-per-file",
                          "--format", "jsonl", doc, "--output", out)
    assert rc == 0, err
    (record,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert record["text"] == doc.read_text(encoding="utf-8")
    assert record["tokens"][:3] == ["Peter", "Blackburn", "went"] and len(record["tokens"]) == 12
    rc, conll, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "text", doc)
    assert rc == 0, err
    blocks = [b.splitlines() for b in conll.strip("\n").split("\n\n")]
    assert [[row.split("\t")[0] for row in b] for b in blocks] == [
        ["Peter", "Blackburn", "went", "to", "Paris", "."], ["EU", "officials", "met", "in", "Brussels", "."]]


def test_jsonl_input_keeps_other_keys_and_takes_tokens(trained, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a1", "text": "Peter Blackburn went to Paris."}) + "\n"
                      + json.dumps({"id": "a2", "tokens": ["EU", "rejects", "German", "call"]}) + "\n",
                      encoding="utf-8")
    rc, out, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "jsonl", "--format", "jsonl",
                            source)
    assert rc == 0, err
    first, second = [json.loads(line) for line in out.splitlines()]
    assert first["id"] == "a1" and first["tokens"][-1] == "."
    assert second["id"] == "a2" and second["text"] == "EU rejects German call"
    assert second["tokens"] == ["EU", "rejects", "German", "call"]


def test_cli_errors_for_raw_text(trained, tmp_path, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("Peter Blackburn went to Paris .\nEU rejects it\n", encoding="utf-8")
    model = trained.model_dir
    rc, _, err = _predict(capsys, "--model", model, text)  # CoNLL by default
    assert_user_error(rc, err, f"{text}:2", "--input-format text")
    rc, _, err = _predict(capsys, "--model", model, "--document-per-file", text)
    assert_user_error(rc, err, "--document-per-file needs --input-format text")
    rc, _, err = _predict(capsys, "--model", model, "--input-format", "text", "--evaluate", text)
    assert_user_error(rc, err, "--evaluate needs gold")
    rc, _, err = _predict(capsys, "--model", model, "--input-format", "text", "--format", "xml", text)
    assert_user_error(rc, err, "--format", "label-studio")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    out = tmp_path / "bad.out"
    rc, _, err = _predict(capsys, "--model", model, "--input-format", "jsonl", bad, "--output", out)
    assert_user_error(rc, err, f"{bad}:2")
    assert not out.exists()  # never a half-written output


def test_jsonl_rows_of_tokens_and_tags_are_scored_by_tags(trained, tmp_path, capsys):
    from ner_toolkit.data.conll import read_sentences

    sentences = read_sentences(REPO / "data" / "sample" / "dev.txt")[:20]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"tokens": s.tokens, "ner_tags": s.labels}) + "\n" for s in sentences),
                    encoding="utf-8")
    conll = tmp_path / "dev.txt"
    conll.write_text("".join("\n".join(s.lines) + "\n\n" for s in sentences), encoding="utf-8")
    rc, from_rows, err = _predict(capsys, "--model", trained.model_dir, "--input-format", "jsonl", rows,
                                  "--format", "jsonl", "--output", tmp_path / "o.jsonl", "--evaluate")
    assert rc == 0, err
    rc, from_conll, err = _predict(capsys, "--model", trained.model_dir, conll, "--output", tmp_path / "o.txt",
                                   "--evaluate")
    assert rc == 0, err
    assert "mode: conlleval" in from_rows and from_rows == from_conll  # the same tokens, the same scores


def test_label_studio_offsets_are_utf16_and_read_back(tmp_path):
    """An emoji before an entity: Label Studio (JavaScript) counts it as two units; the export
    says so, and reading the export back gives the Python offsets again."""
    from ner_toolkit.data.jsonl import read_jsonl
    from ner_toolkit.formats import Options, writer
    from ner_toolkit.predict import Prediction, Span, entities

    text = "😀 Peter met 😀😀 Anna."
    document = Document.from_text(text, "conll")
    assert document.tokens == ["😀", "Peter", "met", "😀😀", "Anna", "."]
    prediction = Prediction(["O", "B-PER", "O", "O", "B-PER", "O"], [Span("PER", 1, 2, 0.9), Span("PER", 4, 5, 0.8)],
                            [1.0] * 6)
    w = writer("label-studio")
    exported = w.header(Options()) + w.write(document, prediction, Options()) + w.footer(Options())
    (task,) = json.loads(exported)
    values = [r["value"] for r in task["predictions"][0]["result"]]
    assert [(v["start"], v["end"]) for v in values] == [(3, 8), (18, 22)]  # UTF-16 units
    assert [(e.start, e.end) for e in entities(document, prediction)] == [(2, 7), (15, 19)]  # Python indices
    # As an annotation export (predictions turned into an annotation), it reads back to Python offsets.
    task["annotations"] = [{"result": task.pop("predictions")[0]["result"]}]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]), encoding="utf-8")
    (back,) = read_jsonl(path, "conll")
    assert back.entities == [("PER", 2, 7), ("PER", 15, 19)]
    assert [text[s:e] for _, s, e in back.entities] == ["Peter", "Anna"]
