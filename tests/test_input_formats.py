"""Formats say what they accept (issue 28, item 5).

Partial labels read as documented: ``word<TAB>`` in CoNLL (the first line and with ``word_tokenizer: auto``
included), ``?`` in JSONL token rows; JSONL span labels are entity types, not tag syntax (``O``,
``B-LOC``, ``?`` refused); ``ner-pretrain`` does not read uniform raw text as a CoNLL token column; a
training file with no known tag is refused instead of training an O-only model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_toolkit.config import load_config
from ner_toolkit.data.jsonl import read_jsonl
from ner_toolkit.errors import UserError
from ner_toolkit.training.dataset import read_labelled, read_training_data, resolve_word_tokenizer

from conftest import assert_user_error, run_cli


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def data_config(train: Path, *overrides: str):
    return load_config(None, (f"data.train={train}", *overrides)).data


# ---------------------------------------------------------------------------- CoNLL partial labels

@pytest.mark.parametrize("text,gold", [
    ("Peter\tB-PER\nBlackburn\t\nwent\tO\n\nParis\tB-LOC\n", [["B-PER", "?", "O"], ["B-LOC"]]),
    ("Peter\t\nBlackburn\tI-PER\nwent\tO\n\nParis\tB-LOC\n", [["?", "I-PER", "O"], ["B-LOC"]]),
    ("-DOCSTART-\t-X-\n\nPeter\t\nBlackburn\t\n\nParis\tB-LOC\n", [["?", "?"], ["B-LOC"]]),
    ("Peter\tNNP\t\nwent\tVBD\tO\n", [["?", "O"]]),
    ("Peter\tB-PER\t\nwent\tO\t\n", [["B-PER", "O"]]),  # trailing tabs after a label: still two columns
    ("Peter\t\nwent\tO\t\n", [["?", "O"]]),  # every line ends with a tab: the widest line is complete
])
def test_empty_label_column_reads_as_unknown_first_line_included(tmp_path, text, gold):
    train = write(tmp_path / "train.txt", text)
    cfg = data_config(train)
    assert cfg.word_tokenizer == "auto" and resolve_word_tokenizer(cfg) == "conll"  # read the same way
    assert list(read_labelled(str(train), cfg, "data.train").gold) == gold


def test_empty_label_in_dev_stays_an_error_and_a_tabless_first_line_gets_a_hint(tmp_path):
    dev = write(tmp_path / "dev.txt", "Peter\t\nwent\tO\n")
    with pytest.raises(UserError, match="expected 1 columns as on line 1, found 2"):
        read_labelled(str(dev), data_config(dev), "data.dev")
    train = write(tmp_path / "train.txt", "Peter\nwent\tO\n")  # no tab: a one-column first line
    with pytest.raises(UserError, match=r"an empty label on line 1\? write it as word<TAB>"):
        read_labelled(str(train), data_config(train), "data.train")


def test_train_cli_reads_an_empty_first_label(trained, tmp_path):
    lines = Path(trained.config).parent.joinpath("train.txt").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("-DOCSTART-"))
    lines = ["\t".join(line.split()) for line in lines]  # a tab-separated file, as partial labels are written
    lines[first] = lines[first].rsplit("\t", 1)[0] + "\t"  # word POS CHUNK<TAB>: its label empty
    train = write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    proc = run_cli("train.py", ["--config", trained.config, "--set", f"data.train={train}", "--set",
                                "training.epochs=1", "--output-dir", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------- JSONL token rows and span labels

def test_jsonl_token_rows_take_the_unknown_tag_in_training_only(tmp_path):
    train = write(tmp_path / "train.jsonl", json.dumps({"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "?"]})
                  + "\n" + json.dumps({"tokens": ["Paris"], "ner_tags": ["B-LOC"]}) + "\n")
    cfg = data_config(train, "data.word_tokenizer=whitespace")
    assert list(read_labelled(str(train), cfg, "data.train").gold) == [["B-PER", "?"], ["B-LOC"]]
    with pytest.raises(UserError, match="`data.dev` holds the unknown tag '\\?': only training data"):
        read_labelled(str(train), cfg, "data.dev")
    with pytest.raises(UserError) as info:  # prediction input: no unknown tag, and no advice to write B-?
        list(read_jsonl(train, "whitespace"))
    assert "marks a token nobody annotated" in str(info.value) and "B-?" not in str(info.value)


@pytest.mark.parametrize("label,needle", [
    ("O", 'label "O" is not an entity type'),
    ("B-LOC", 'label "B-LOC" is a tag, not an entity type; write the type alone ("LOC")'),
    ("I-PER", '("PER")'),
    ("?", 'label "?" is not an entity type'),
])
@pytest.mark.parametrize("shape", ["list", "dict", "label-studio"])
def test_jsonl_span_labels_are_entity_types(tmp_path, label, needle, shape):
    span = {"list": [6, 15, label], "dict": {"start": 6, "end": 15, "label": label},
            "label-studio": {"start": 6, "end": 15, "text": "Blackburn", "labels": [label]}}[shape]
    path = write(tmp_path / "in.jsonl", json.dumps({"text": "Peter Blackburn", "entities": [[0, 5, "PER"], span]})
                 + "\n")
    with pytest.raises(UserError) as info:
        list(read_jsonl(path, "whitespace"))
    assert str(info.value).startswith(f"error: {path}:1: entity 2: ") and needle in str(info.value)


def test_jsonl_span_labels_that_are_types_still_read(tmp_path):
    path = write(tmp_path / "in.jsonl", json.dumps({"text": "Peter went to Saint-Denis", "entities": [
        [0, 5, "PER"], [14, 25, "LOC-CITY"], [14, 25, "GPE"]]}) + "\n")
    [doc] = read_jsonl(path, "whitespace", misaligned="skip")
    assert doc.labels == ["B-PER", "O", "O", "B-LOC-CITY"]


# ---------------------------------------------------------------------------- ner-pretrain format detection

def test_pretrain_does_not_read_uniform_raw_text_as_columns(tmp_path, capsys):
    from ner_toolkit.cli import pretrain_main
    from ner_toolkit.pretraining.data import detect_format, read_documents

    words = "the cat sat on a mat while the dog ran far away".split()
    raw = write(tmp_path / "raw.txt", "".join(" ".join(words[i:] + words[:i]) + "\n" for i in range(12)) * 3)
    with pytest.raises(UserError, match="cannot tell raw text from CoNLL columns: each of the first 36 lines has 12"):
        detect_format(raw)
    assert read_documents([str(raw)], "text")[0][0] == " ".join(words)  # told: every word kept
    conll = write(tmp_path / "c.txt", "EU\tB-ORG\nrejects\tO\n\nPeter\t\nBlackburn\tI-PER\n")
    assert detect_format(conll) == "conll"  # tags in the last column, an empty one too
    assert detect_format(write(tmp_path / "r.txt", "One two three.\nFour five.\nSix.\n")) == "text"
    rc = pretrain_main(["tokenizer", "--input", str(raw), "--vocab-size", "50", "--output", str(tmp_path / "vocab")])
    assert_user_error(rc, capsys.readouterr().err, str(raw), "--format text|conll")
    assert not (tmp_path / "vocab").exists()


# ---------------------------------------------------------------------------- nothing annotated

def test_a_training_file_of_unknown_tags_alone_is_refused(trained, tmp_path):
    train = write(tmp_path / "train.txt", "Peter\t?\nBlackburn\t?\n\nParis\t\n")
    with pytest.raises(UserError, match="every tag of `data.train` is the unknown tag '\\?'"):
        read_training_data(data_config(train, "data.word_tokenizer=conll"), "crf")
    proc = run_cli("train.py", ["--config", trained.config, "--set", f"data.train={train}", "--set", "data.dev=null",
                                "--output-dir", tmp_path / "out"])
    assert_user_error(proc.returncode, proc.stderr, str(train), "no token is annotated")
    assert not (tmp_path / "out" / "model").exists()
