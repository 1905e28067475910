"""Inputs sniffed, never silently wrong (issue 30 item 4): raw text given as CoNLL, label-first and
`#`-comment CoNLL, a script the word tokeniser cannot split, an encoder that maps most words to <unk>, a
vocabulary smaller than asked, and a `--set` typo blamed on the YAML file."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ner_toolkit.config import load_config
from ner_toolkit.errors import UserError

from conftest import SAMPLE


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
