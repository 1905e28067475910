"""Inputs sniffed, never silently wrong (issue 30 item 4): raw text given as CoNLL, label-first and
`#`-comment CoNLL, a script the word tokeniser cannot split, an encoder that maps most words to <unk>, a
vocabulary smaller than asked, and a `--set` typo blamed on the YAML file."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from ner_toolkit.config import load_config
from ner_toolkit.errors import UserError

from ner_toolkit.data.conll import Sentence

from conftest import SAMPLE, TOKENIZER, assert_user_error, run_cli


def test_a_set_typo_in_the_first_part_of_the_key_names_the_set_not_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(config, ("training.epochs=3", "dta.train=x.txt"))
    assert str(info.value.path) == "--set" and info.value.line == 2, str(info.value)
    assert "dta.train=x.txt" in str(info.value) and "`data`" in str(info.value)


def test_a_vocabulary_smaller_than_asked_is_explained(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ner_toolkit.pretraining.vocab import train_vocabulary

    corpus = tmp_path / "small.txt"
    corpus.write_text("".join(SAMPLE.joinpath("train.txt").read_text(encoding="utf-8").splitlines(True)[:400]),
                      encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        size = train_vocabulary([str(corpus)], 3000, str(tmp_path / "v"))
    assert size < 3000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{size:,} pieces, fewer than --vocab-size 3,000" in warnings[0], warnings
    assert "more text" in warnings[0]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_training_words_the_encoder_reads_as_unk_are_one_warning(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from ner_toolkit.data.batching import SubwordAligner
    from ner_toolkit.model.encoder import load_tokenizer
    from ner_toolkit.training.dataset import LabelledFile, warn_unknown_words

    aligner = SubwordAligner(load_tokenizer(TOKENIZER), 24)
    chinese, english = LabelledFile("zh.txt"), LabelledFile("en.txt")
    chinese.tokens.append(list("高勇男中国国籍无境外居留权"))
    english.tokens.append("EU rejects German call to boycott British lamb .".split())
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        warn_unknown_words(aligner, english, TOKENIZER)
        assert _warnings(caplog) == []
        warn_unknown_words(aligner, chinese, TOKENIZER)
    (line,) = _warnings(caplog)
    assert line.startswith("zh.txt: ") and "as <unk>" in line and "%" in line and "高" in line, line
    assert "model.encoder.tokenizer" in line and "ner pretrain tokenizer" in line


# --- raw text given as CoNLL, script mismatch (a model trained once per session, conftest.trained) ---

RAW_TEXTS = ["EU rejects German call to boycott British lamb.\n", "Peter Blackburn\n", "欧盟拒绝德国关于抵制英国羊肉的呼吁。\n",
             "EU rejects German call to boycott British lamb .\n\nPeter Blackburn went to Bonn on a Monday .\n"]


def test_raw_text_given_as_conll_is_refused_naming_input_format_text(tmp_path: Path, trained) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW_TEXTS[0], encoding="utf-8")
    proc = run_cli("predict.py", ["--model", trained.model_dir, raw])
    assert_user_error(proc.returncode, proc.stderr, f"{raw}:1: reads as raw text", "--input-format text")
    assert proc.stdout == ""


@pytest.mark.parametrize("text", RAW_TEXTS[1:])
def test_raw_text_shapes_are_refused_where_conll_is_read(tmp_path: Path, text: str) -> None:
    from ner_toolkit.config import DataConfig
    from ner_toolkit.streaming import OutputOptions, read_items
    from ner_toolkit.training.dataset import read_labelled

    raw = tmp_path / "raw.txt"
    raw.write_text(text, encoding="utf-8")
    model = SimpleNamespace(token_column=0, label_column=-1, word_tokenizer="conll")
    with pytest.raises(UserError, match="reads as raw text.*--input-format text"):
        list(read_items(model, raw, OutputOptions()))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="reads as raw text.*label it as JSONL"):
        read_labelled(str(raw), DataConfig(train=str(raw)), "data.train")


@pytest.mark.parametrize("text", ["EU B-ORG\n", "EU NNP\n", "EU NNP I-NP B-ORG\n", "# NN I-NP O\n",
                                  "SOCCER NN I-NP O\n\nJAPAN NNP I-NP B-LOC\n", "Peter\n"])
def test_conll_of_one_token_sentences_still_reads(tmp_path: Path, text: str) -> None:
    from ner_toolkit.data.conll import read_conll, refuse_text

    path = tmp_path / "one.txt"
    path.write_text(text, encoding="utf-8")
    sentences = [s for s in refuse_text(read_conll(path), path) if isinstance(s, Sentence)]
    assert [t for s in sentences for t in s.tokens] == [line.split()[0] for line in text.splitlines() if line]


def test_text_the_word_tokenizer_cannot_split_is_one_warning(tmp_path: Path, predictor,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from ner_toolkit.streaming import OutputOptions, predict_file

    chinese, english = tmp_path / "zh.txt", tmp_path / "en.txt"
    chinese.write_text("Peter Blackburn\n欧盟拒绝德国关于抵制英国羊肉的呼吁。\n欧盟拒绝德国的呼吁。\n", encoding="utf-8")
    english.write_text("EU rejects German call to boycott British lamb.\n" * 3, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        predict_file(predictor, english, tmp_path / "en.out", options=OutputOptions(input_format="text"))
        assert _warnings(caplog) == []
        predict_file(predictor, chinese, tmp_path / "zh.out", options=OutputOptions(input_format="text"))
        (line,) = _warnings(caplog)
        assert line.startswith(f"{chinese}:2: ") and "--word-tokenizer chars" in line, line
        caplog.clear()
        predict_file(predictor, english, tmp_path / "en.out",
                     options=OutputOptions(input_format="text", word_tokenizer="chars"))
        (line,) = _warnings(caplog)
    assert "--word-tokenizer conll" in line, line


# --- one corpus in several CoNLL layouts: same tokens and tags, comments and line counts kept ---

SENTENCES = [
    [("EU", "NNP", "I-NP", "B-ORG"), ("rejects", "VBZ", "I-VP", "O"), ("German", "JJ", "I-NP", "B-MISC"),
     ("call", "NN", "I-NP", "O"), (".", ".", "O", "O")],
    [("#", "#", "I-NP", "O"), ("1", "CD", "I-NP", "O"), ("Peter", "NNP", "I-NP", "B-PER"),
     ("Blackburn", "NNP", "I-NP", "I-PER")],
    [("BRUSSELS", "NNP", "I-NP", "B-LOC"), ("1996-08-22", "CD", "I-NP", "O")],
]


def _layout(name: str, sep: str) -> tuple[str, dict]:
    """The corpus as file text, and the data settings that read it."""
    out = []
    for n, sentence in enumerate(SENTENCES, 1):
        if name == "multiconer":
            out.append(f"# id {n}\tdomain=en")
        if name == "conllu":
            out += [f"# sent_id = {n}", "# text = " + " ".join(t for t, *_ in sentence)]
        for token, pos, chunk, tag in sentence:
            out.append(sep.join((tag, token) if name == "label-first" else
                                (token, "_", "_", tag) if name == "multiconer" else (token, pos, chunk, tag)))
        out.append("")
    settings = {"label_column": 0, "token_column": 1} if name == "label-first" else {}
    return "\n".join(out) + "\n", settings


LAYOUTS = [(name, sep) for name in ("label-last", "label-first", "multiconer", "conllu") for sep in (" ", "\t")]


@pytest.mark.parametrize("name,sep", LAYOUTS)
def test_every_layout_reads_the_same_sentences(tmp_path: Path, name: str, sep: str) -> None:
    from ner_toolkit.config import DataConfig
    from ner_toolkit.training.dataset import read_labelled

    text, settings = _layout(name, sep)
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    data = read_labelled(str(path), DataConfig(train=str(path), **settings), "data.train")
    assert list(data.tokens) == [[t for t, *_ in s] for s in SENTENCES]
    assert list(data.gold) == [[tag for *_, tag in s] for s in SENTENCES]


@pytest.mark.parametrize("name", ["label-first", "multiconer"])
def test_a_label_column_without_tags_names_data_label_column(tmp_path: Path, name: str) -> None:
    from ner_toolkit.config import DataConfig
    from ner_toolkit.training.dataset import read_labelled

    text, _ = _layout(name, " ")
    if name == "multiconer":  # its tags moved to the second column, the label column left at the last
        text = "\n".join(" ".join((f[0], f[3], f[1], f[2])) if len(f) == 4 and f[0] != "#" or f[:2] == ["#", "_"]
                         else line for line, f in ((line, line.split()) for line in text.splitlines())) + "\n"
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_labelled(str(path), DataConfig(train=str(path)), "data.train")
    message = str(info.value)
    expected = "--set data.label_column=0 --set data.token_column=1" if name == "label-first" else \
        "--set data.label_column=1"
    assert "holds no" not in message and expected in message and "not a tag" in message, message


def test_predictions_keep_comments_and_line_counts(tmp_path: Path, predictor) -> None:
    from ner_toolkit.streaming import predict_file

    for name, sep in LAYOUTS:
        if name == "label-first":
            continue  # the session's model reads tokens from column 0
        text, _ = _layout(name, sep)
        path, out = tmp_path / f"{name}{len(sep)}.txt", tmp_path / f"{name}{len(sep)}.out"
        path.write_text(text, encoding="utf-8")
        result = predict_file(predictor, path, out)
        lines, written = text.splitlines(), out.read_text(encoding="utf-8").splitlines()
        assert len(written) == len(lines) and result.sentences == len(SENTENCES), (name, written)
        for line, back in zip(lines, written):
            if line.startswith(("# id", "# sent_id", "# text")):
                assert back == line  # a comment comes back verbatim, with no prediction column
            elif line:
                assert back.startswith(line + sep) and len(back.split()) == len(line.split()) + 1


def test_a_label_first_file_predicted_tokens_first_is_one_warning(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from ner_toolkit.streaming import OutputOptions, read_items

    text, _ = _layout("label-first", "\t")
    path = tmp_path / "lf.txt"
    path.write_text(text, encoding="utf-8")
    model = SimpleNamespace(token_column=0, label_column=-1, word_tokenizer="conll")
    with caplog.at_level(logging.WARNING, logger="ner_toolkit"):
        items = list(read_items(model, path, OutputOptions()))  # type: ignore[arg-type]
        assert sum(isinstance(i, Sentence) for i in items) == len(SENTENCES)
        (line,) = _warnings(caplog)
        assert line.startswith(f"{path}:1: ") and "label-first" in line and "B-ORG" in line, line
        caplog.clear()
        text, _ = _layout("label-last", "\t")
        path.write_text(text, encoding="utf-8")
        list(read_items(model, path, OutputOptions()))  # type: ignore[arg-type]
    assert _warnings(caplog) == []
