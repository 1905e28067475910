"""Pretrained vectors reach words training never saw (``model.words.vectors_words: all``).

The vocabulary holds the training words, then the vectors file's other words; those rows keep their
pretrained vector (float16), never train, are saved with the model, and prediction reads them without the
vectors file. A cased vocabulary looks an unknown word up lower-cased too (GloVe is uncased).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Data, assert_user_error, run_cli, tiny_config_text
from ner_toolkit.data.vectors import load_vectors, vector_coverage
from ner_toolkit.data.vocab import PAD, UNK, UNK_ID, Vocab
from ner_toolkit.errors import UserError

GLOVE = "the 0.1 0.2 0.3\nparis 1 2 3\nkuznetsov 4 5 6\nParis 7 8 9\nzurich 0.5 0.25 0.125\nunseen 1e-3 2 -3\n"


def test_extension_adds_the_file_words_training_lacks_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    vocab = Vocab([PAD, UNK, "the", "Paris"])
    vectors = load_vectors(path, vocab, extend=True)
    # "the" and "Paris" are training words (rows that train); every other word of the file gets a row.
    assert vectors.words == ["paris", "kuznetsov", "zurich", "unseen"]
    assert vectors.extra.dtype == torch.float16 and vectors.extra.shape == (4, 3)
    assert vectors.extra[1].tolist() == [4, 5, 6]
    assert vectors.extra[2].tolist() == [0.5, 0.25, 0.125]  # exact in float16
    assert vectors.matrix[3].tolist() == [7, 8, 9]  # "Paris": its exact match wins over "paris"
    assert load_vectors(path, vocab).words == []  # vectors_words: train


def test_max_words_counts_the_file_rows(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    vectors = load_vectors(path, Vocab([PAD, UNK, "the"]), extend=True, max_words=3)
    assert vectors.words == ["paris", "kuznetsov"]  # rows 1-3 of the file, "the" already a training word
    # A training word further down still gets its vector.
    assert load_vectors(path, Vocab([PAD, UNK, "unseen"]), extend=True, max_words=1).found.tolist() == [
        False, False, True]


def test_lowercase_vocabulary_keeps_the_first_of_words_that_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "cased.vec"
    path.write_text("3 2\nBerlin 1 1\nberlin 2 2\nROME 3 3\n")
    vectors = load_vectors(path, Vocab([PAD, UNK, "the"], lowercase=True), extend=True)
    assert vectors.words == ["berlin", "rome"]
    assert vectors.extra.tolist() == [[1, 1], [3, 3]]


def test_cased_lookup_falls_back_to_the_lowercase_form() -> None:
    vocab = Vocab([PAD, UNK, "Paris", "the"]).with_pretrained(["paris", "kuznetsov", "PSV"])
    assert vocab.trained == 4 and len(vocab) == 7
    assert vocab.encode(["Paris", "paris", "PARIS", "Kuznetsov", "KUZNETSOV", "PSV", "psv", "Zzz"]) == [
        2, 4, 4, 5, 5, 6, UNK_ID, UNK_ID]
    assert "Kuznetsov" in vocab and "Zzz" not in vocab
    # Without pretrained words a cased vocabulary stays exact (models trained before keep their lookups).
    assert Vocab([PAD, UNK, "paris"]).encode(["Paris"]) == [UNK_ID]


@settings(max_examples=200, deadline=None)
@given(train=st.lists(st.text(alphabet="aAbBcC", min_size=1, max_size=3), max_size=12),
       extra=st.lists(st.text(alphabet="abcd", min_size=1, max_size=3), max_size=12),
       tokens=st.lists(st.text(alphabet="aAbBcCdD", min_size=1, max_size=3), max_size=20))
def test_extension_never_moves_a_training_word_and_reads_unknowns_lower_cased(train: list[str], extra: list[str],
                                                                              tokens: list[str]) -> None:
    base = Vocab.build(train)
    extended = base.with_pretrained([w for w in dict.fromkeys(extra) if w not in base.words])
    for token, before, after in zip(tokens, base.encode(tokens), extended.encode(tokens)):
        if before != UNK_ID:
            assert after == before  # a training word keeps its row
        elif token in extended.words:
            assert extended.words[after] == token
        elif extended.pretrained_words and token.lower() in extended.words:
            assert extended.words[after] == token.lower()  # only a vocabulary with pretrained words folds
        else:
            assert after == UNK_ID


def test_save_and_load_round_trip_with_pretrained_words(tmp_path: Path) -> None:
    vocab = Vocab([PAD, UNK, "Paris"]).with_pretrained(["paris", "東京", "a\u00a0b"])
    vocab.save(tmp_path / "words.txt", tmp_path / "pretrained.txt")
    assert (tmp_path / "words.txt").read_text(encoding="utf-8").split() == [PAD, UNK, "Paris"]
    loaded = Vocab.load(tmp_path / "words.txt", False, tmp_path / "pretrained.txt")
    assert loaded.words == vocab.words and loaded.trained == 3
    assert loaded.encode(["PARIS", "東京"]) == [3, 4]
    with pytest.raises(ValueError):
        vocab.save(tmp_path / "only.txt")  # the pretrained words would be lost


def test_a_pretrained_word_file_repeating_a_training_word_is_named(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text(f"{PAD}\n{UNK}\nParis\n", encoding="utf-8")
    (tmp_path / "pretrained.txt").write_text("paris\nParis\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        Vocab.load(tmp_path / "words.txt", False, tmp_path / "pretrained.txt")
    assert info.value.path == str(tmp_path / "pretrained.txt") and "'Paris'" in info.value.message


def test_coverage_counts_pretrained_rows(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    base = Vocab([PAD, UNK, "the", "zzz"])
    vectors = load_vectors(path, base, extend=True)
    vocab = base.with_pretrained(vectors.words)
    assert vector_coverage(["the", "zzz", "Kuznetsov", "nowhere"], vocab, vectors.found) == (2, 4)


def test_fusion_reads_frozen_pretrained_rows(tmp_path: Path) -> None:
    """Ids past the training rows read the float16 buffer; only the training rows get gradients."""
    from ner_toolkit.config import ModelConfig, WordsConfig
    from ner_toolkit.model.embeddings import WordFusion

    path = tmp_path / "glove.txt"
    path.write_text(GLOVE)
    base = Vocab([PAD, UNK, "the", "zzz"])
    vectors = load_vectors(path, base, dim=3, extend=True)
    fusion = WordFusion(2, base.trained, ModelConfig(words=WordsConfig(dim=3)), vectors)
    ids = torch.tensor([[2, 3, 4, 7, 0]])  # the, zzz, paris (pretrained), zurich (pretrained), pad
    out = fusion.lookup(ids)
    assert out[0, 2].tolist() == [1, 2, 3] and out[0, 3].tolist() == [0.5, 0.25, 0.125]
    assert out[0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3]) and out[0, 4].tolist() == [0, 0, 0]
    out.sum().backward()
    assert fusion.words.weight.grad is not None and fusion.pretrained.requires_grad is False
    assert set(fusion.state_dict()) >= {"words.weight", "pretrained"}


def test_unseen_words_keep_their_vectors_through_training_saving_and_prediction(
        sample_data: Data, tmp_path: Path) -> None:
    """End to end: a word only the test file and the vectors file hold is read as its pretrained vector by
    the saved model, with the vectors file gone; ids are the same in the ONNX runtime's vocabulary."""
    from ner_toolkit.predict import Predictor

    train_words = {line.split()[0] for line in sample_data.train.read_text().splitlines() if line.strip()}
    test_words = [w for line in sample_data.test.read_text().splitlines() if line.strip()
                  for w in [line.split()[0]] if w not in train_words and w != "-DOCSTART-"]
    assert test_words
    rng = np.random.default_rng(0)
    rows = {w.lower(): rng.normal(size=32).round(3) for w in [*sorted(train_words)[:50], *test_words]}
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()), encoding="utf-8")
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, epochs=2), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli("train.py", ["--config", config, "--set", f"model.words.vectors={vectors}",
                                "--output-dir", out])
    assert proc.returncode == 0, proc.stderr
    assert "more words of the file kept for words training never sees" in proc.stderr
    moved = vectors.rename(tmp_path / "gone.txt")
    predictor = Predictor.load(out)
    unseen = test_words[0]
    ids = predictor.vocab.encode([unseen, unseen.upper()])
    assert ids[0] >= predictor.vocab.trained and ids[0] == ids[1]
    got = predictor.tagger.fusion.lookup(torch.tensor([ids])).float()[0, 0]
    assert torch.allclose(got, torch.tensor(rows[unseen.lower()], dtype=torch.float16).float())
    proc = run_cli("predict.py", ["--model", out, sample_data.test, "--output", tmp_path / "pred.txt"])
    assert proc.returncode == 0, proc.stderr
    # A received directory whose pretrained word list is missing is named, not silently mis-read.
    damaged = tmp_path / "damaged"
    shutil.copytree(out / "model", damaged)
    (damaged / "word_vocab_pretrained.txt").unlink()
    proc = run_cli("predict.py", ["--model", damaged, sample_data.test])
    assert_user_error(proc.returncode, proc.stderr, "word_vocab_pretrained.txt", "model.safetensors")
    assert moved.exists()
