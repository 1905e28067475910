"""Inputs sniffed, never silently wrong (issue 30 item 4): raw text given as CoNLL, label-first and
`#`-comment CoNLL, a script the word tokeniser cannot split, an encoder that maps most words to <unk>, a
vocabulary smaller than asked, and a `--set` typo blamed on the YAML file."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ner_toolkit.config import load_config
from ner_toolkit.errors import UserError

from conftest import SAMPLE, TOKENIZER


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
