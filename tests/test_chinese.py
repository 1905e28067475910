"""Chinese: character-level BMES data with a scratch Chinese ALBERT (BERT WordPiece vocab.txt), end to end."""
from __future__ import annotations

from pathlib import Path

import pytest

from ner_toolkit.cli import predict_main, train_main
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import is_legal
from ner_toolkit.data.text import Document
from ner_toolkit.predict import Predictor

from conftest import REPO

SHARED = REPO.parent / "shared"
VOCAB = SHARED / "models" / "albert_zh_brightmart" / "vocab.txt"
RESUME = SHARED / "datasets" / "resume_ner"
pytestmark = pytest.mark.skipif(not (VOCAB.is_file() and (RESUME / "train.txt").is_file()),
                                reason="../shared Chinese ALBERT vocab or Resume NER not present")


def _head(src: Path, n: int, dst: Path) -> Path:
    blocks = src.read_text(encoding="utf-8").split("\n\n")
    dst.write_text("\n\n".join(blocks[:n]) + "\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def zh_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("zh")
    train, dev = _head(RESUME / "train.txt", 40, d / "train.txt"), _head(RESUME / "dev.txt", 15, d / "dev.txt")
    assert train_main(["--config", str(REPO / "configs" / "resume_albert_zh.yaml"), "--output-dir", str(d / "run"),
                       "--set", f"data.train={train}", "--set", f"data.dev={dev}", "--set", "data.test=null",
                       "--set", "model.encoder.scratch={embedding_size: 16, hidden_size: 32, num_hidden_layers: 1, "
                                "num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 64}",
                       "--set", "model.encoder.tokenizer=" + str(VOCAB), "--set", "training.epochs=1"]) == 0
    return d


def test_bmes_in_bmes_out(zh_model, tmp_path):
    out = tmp_path / "pred.txt"
    assert predict_main(["--model", str(zh_model / "run"), str(zh_model / "dev.txt"), "--output", str(out)]) == 0
    source, got = read_sentences(zh_model / "dev.txt"), read_sentences(out)
    assert [s.tokens for s in got] == [s.tokens for s in source]
    for sentence in got:
        tags = [c[-1] for c in sentence.columns]
        assert is_legal(tags, "BMES")
        assert all(t == "O" or t[0] in "BMES" for t in tags)
    labels = (zh_model / "run" / "model" / "labels.json").read_text(encoding="utf-8")
    assert '"output_scheme": "BMES"' in labels


def test_mixed_tokens_align(zh_model):
    """Characters, multi-character tokens, Latin words, digits and characters outside the vocabulary."""
    tokens = ["高", "勇", "Java", "2016", "年", "\u3000", "ＡＢ", "工程师", "\U0002a6a5"]
    tags = Predictor.load(zh_model / "run").predict([tokens])[0]
    assert len(tags) == len(tokens)
    assert is_legal(tags, "BMES")


def test_raw_chinese_text_is_tagged_per_character(zh_model):
    """A character-level model splits raw text into characters (data.word_tokenizer auto -> chars)."""
    predictor = Predictor.load(zh_model / "run")
    assert predictor.word_tokenizer == "chars"
    text = "高勇，男，1966年出生，\u3000中国国籍。 Java工程师"
    for entity in predictor.predict_text(text):
        assert text[entity.start:entity.end] == entity.text
    document = Document.from_text(text, "chars")
    assert document.tokens[:3] == ["高", "勇", "，"] and "\u3000" not in document.tokens
    assert predictor.predict_documents([document])[0].tags == predictor.predict([document.tokens])[0]
