"""Inputs sniffed, never silently wrong (issue 30 item 4): raw text given as CoNLL, label-first and
`#`-comment CoNLL, a script the word tokeniser cannot split, an encoder that maps most words to <unk>, a
vocabulary smaller than asked, and a `--set` typo blamed on the YAML file."""
from __future__ import annotations

import logging
from pathlib import Path

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

@pytest.mark.parametrize("text", ["EU rejects German call to boycott British lamb.\n", "Peter Blackburn\n",
                                  "欧盟拒绝德国关于抵制英国羊肉的呼吁。\n",
                                  "EU rejects German call to boycott British lamb .\n\nPeter Blackburn went to Bonn on a Monday .\n"])
def test_raw_text_given_as_conll_is_refused_naming_input_format_text(tmp_path: Path, trained, text: str) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(text, encoding="utf-8")
    proc = run_cli("predict.py", ["--model", trained.model_dir, raw])
    assert_user_error(proc.returncode, proc.stderr, f"{raw}:1: reads as raw text", "--input-format text")
    assert proc.stdout == ""


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
