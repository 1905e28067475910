"""Character CNN word features: vocabulary round trip, padding independence, train -> save -> load."""
from __future__ import annotations

import torch

from ner_toolkit.cli import train_main
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.vocab import CharVocab
from ner_toolkit.model.embeddings import CharCNN
from ner_toolkit.predict import Predictor

from conftest import assert_user_error, slice_conll, tiny_config_text


def test_char_vocab_round_trip_and_encoding(tmp_path):
    chars = CharVocab.build(["Paris", "caf\u00e9", "a\u2028b", "x\u00a0y"], min_freq=1, max_length=4)
    chars.save(tmp_path / "chars.json")
    loaded = CharVocab.load(tmp_path / "chars.json")
    assert loaded.chars == chars.chars and loaded.max_length == 4
    assert "\u2028" in loaded.chars and "\u00a0" in loaded.chars
    ids = loaded.encode(["Paris", "Zz", ""])
    assert len(ids[0]) == 4  # truncated to max_length
    assert ids[1] == [1, 1]  # unknown characters
    assert ids[2] == [1]  # an empty token still has one id


def test_char_cnn_ignores_padding():
    torch.manual_seed(0)
    cnn = CharCNN(num_chars=20, dim=8, filters=6, kernel_size=3).eval()
    word = torch.tensor([[[3, 4, 5]]])
    padded = torch.tensor([[[3, 4, 5, 0, 0, 0, 0]]])
    with torch.no_grad():
        assert torch.allclose(cnn(word), cnn(padded), atol=1e-6)
        assert torch.all(cnn(torch.zeros(1, 1, 4, dtype=torch.long)) == 0)  # a padding word is zeros


def test_chars_train_save_and_reload(sample_data, tmp_path, capsys):
    train = slice_conll(sample_data.train, tmp_path / "train.txt", 20)
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(train, epochs=1), encoding="utf-8")
    sentences = [s.tokens for s in read_sentences(train)][:6] + [["unseen\u2603", "x" * 100]]
    for fusion in ("concat", "add"):
        out = tmp_path / fusion
        assert train_main(["--config", str(config), "--output-dir", str(out), "--set", "model.chars.enabled=true",
                           "--set", f"model.fusion={fusion}"]) == 0
        assert (out / "model" / "char_vocab.json").is_file()
        tags = Predictor.load(out).predict(sentences)
        assert [len(t) for t in tags] == [len(s) for s in sentences]
        assert Predictor.load(out / "model").predict(sentences) == tags
    capsys.readouterr()
    rc = train_main(["--config", str(config), "--output-dir", str(tmp_path / "none"), "--set", "model.chars.enabled=true",
                     "--set", "model.fusion=none"])
    assert_user_error(rc, capsys.readouterr().err, "model.chars needs model.fusion concat or add")


def test_char_encoding_is_shared_per_word_and_bounded(monkeypatch):
    """CharVocab.encode computes a word once (the same list for every occurrence) and stays correct when
    its bounded cache is emptied."""
    from ner_toolkit.data.vocab import UNK_ID, CharVocab

    vocab = CharVocab(list("abc"), max_length=2)
    monkeypatch.setattr(CharVocab, "CACHE_WORDS", 3)
    words = ["ab", "ca", "abc", "", "x", "ab", "zz", "ca"]
    first = vocab.encode(words)
    expected = [[2, 3], [4, 2], [2, 3], [UNK_ID], [UNK_ID], [2, 3], [UNK_ID, UNK_ID], [4, 2]]
    assert first == expected
    assert vocab.encode(words) == expected  # after the cache was cleared on the way
    assert len(vocab._words) <= 3
    again = vocab.encode(["ab", "ab"])
    assert again[0] is again[1]
