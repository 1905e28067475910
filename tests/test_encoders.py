"""Encoders loaded from local directories through the real ``from_pretrained`` path: ALBERT, BERT, RoBERTa.

Each tiny model is built from a config (random weights), saved with ``save_pretrained``, trained for
one epoch through the CLI with ``model.encoder.name_or_path=DIR``, and its saved model directory must
predict exactly what the in-memory model predicted.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ner_toolkit.cli import train_main  # noqa: E402
from ner_toolkit.data.conll import read_sentences  # noqa: E402
from ner_toolkit.model.encoder import load_tokenizer  # noqa: E402
from ner_toolkit.predict import Predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _slice(src: Path, n: int, dst: Path) -> Path:
    sentences = read_sentences(src)[:n]
    dst.write_text("".join("\n".join(s.lines) + "\n\n" for s in sentences), encoding="utf-8")
    return dst


def _words() -> list[str]:
    return [t for s in read_sentences(SAMPLE / "train.txt") for t in s.tokens]


def _albert_dir(path: Path) -> Path:
    from transformers import AlbertConfig, AlbertModel

    tokenizer = load_tokenizer("builtin:albert-base-v2")
    AlbertModel(AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=64, **TINY)
                ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _bert_dir(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True)
    chars = sorted({c for w in _words() for c in w.lower()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(path))
    BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _roberta_dir(path: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    path.mkdir(parents=True)
    words = _words()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(words[i:i + 20]) for i in range(0, len(words), 20)], vocab_size=400,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    tokenizer = RobertaTokenizer.from_pretrained(str(path))
    RobertaModel(RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=66, pad_token_id=1, **TINY)
                 ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["albert", "bert", "roberta"])
def test_local_encoder_directory_trains_saves_and_reloads(kind: str, tmp_path: Path) -> None:
    encoder_dir = {"albert": _albert_dir, "bert": _bert_dir, "roberta": _roberta_dir}[kind](tmp_path / kind)
    train = _slice(SAMPLE / "train.txt", 40, tmp_path / "train.txt")
    dev = _slice(SAMPLE / "dev.txt", 20, tmp_path / "dev.txt")
    out = tmp_path / "run"
    code = train_main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--output-dir", str(out),
                       "--set", "model.encoder.scratch=null", "--set", "model.encoder.tokenizer=null",
                       "--set", f"model.encoder.name_or_path={encoder_dir}", "--set", "model.encoder.max_length=24",
                       "--set", f"data.train={train}", "--set", f"data.dev={dev}", "--set", "data.test=null",
                       "--set", "training.epochs=1", "--set", "model.lstm.hidden_size=16"])
    assert code == 0
    sentences = [s.tokens for s in read_sentences(dev)] + [["Blackburn"] * 40]  # the last needs windows
    loaded = Predictor.load(out)
    tags = loaded.predict(sentences)
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    # The saved tokenizer must segment words exactly as the training one did (e.g. RoBERTa's prefix space).
    trained_tokenizer = load_tokenizer(str(encoder_dir), kind)
    assert loaded.aligner.pieces([["world", "Blackburn"]]) == \
        [[trained_tokenizer([[w]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
          for w in ("world", "Blackburn")]]
    assert Predictor.load(out / "model").predict(sentences) == tags


def test_roberta_words_are_tokenized_with_a_leading_space(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(_roberta_dir(tmp_path / "roberta")), "roberta")
    pieces = tokenizer.convert_ids_to_tokens(
        tokenizer([["world"]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0])
    assert pieces[0].startswith("\u0120")  # "Ġ": the word is read as inside a sentence


def _tiny_encoder_and_batch(layers):
    import torch
    from transformers import AlbertConfig, AlbertModel

    from ner_toolkit.config import EncoderConfig
    from ner_toolkit.data.batching import encode_sentences
    from ner_toolkit.model.encoder import Encoder
    from ner_toolkit.data.batching import make_collator
    from ner_toolkit.model.encoder import max_positions

    torch.manual_seed(0)
    tokenizer = load_tokenizer("builtin:albert-base-v2")
    hf = AlbertModel(AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=64, **TINY),
                     add_pooling_layer=False).eval()
    aligner, collator = make_collator(tokenizer, max_positions(hf), EncoderConfig())
    batch = collator(encode_sentences(aligner, None, [["EU", "rejects", "German", "call"], ["Peter"]]))
    batch = batch.to(torch.device("cpu"))
    return Encoder(hf, "first", False, 0.0, layers).eval(), hf, batch


def test_layer_mix_starts_as_the_mean_of_the_chosen_layers():
    import torch

    encoder, hf, batch = _tiny_encoder_and_batch([0, -1])
    with torch.no_grad():
        states = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states
        expected = (states[0] + states[-1]) / 2  # softmax of equal weights, gamma 1
        got = encoder(batch)
    first = batch.pools[0]
    flat = expected.reshape(-1, expected.shape[-1]).index_select(0, first[0])
    assert torch.allclose(got.reshape(-1, got.shape[-1])[first[1]], flat, atol=1e-6)
    last_only, _, _ = _tiny_encoder_and_batch([-1])
    plain, _, _ = _tiny_encoder_and_batch(None)
    with torch.no_grad():
        assert torch.allclose(last_only(batch), plain(batch), atol=1e-6)


def test_layer_mix_rejects_a_missing_layer():
    from ner_toolkit.errors import UserError

    with pytest.raises(UserError, match="layer 5 does not exist"):
        _tiny_encoder_and_batch([5])


def test_layer_mix_trains_saves_and_reloads(tmp_path):
    from safetensors.torch import load_file

    train = _slice(SAMPLE / "train.txt", 30, tmp_path / "train.txt")
    out = tmp_path / "run"
    assert train_main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--output-dir", str(out),
                       "--set", "model.encoder.layers=[-1, -2]", "--set", f"data.train={train}",
                       "--set", "data.dev=null", "--set", "data.test=null", "--set", "training.epochs=1"]) == 0
    weights = load_file(out / "model" / "model.safetensors")
    assert "encoder.mix.weights" in weights and "encoder.mix.gamma" in weights
    sentences = [s.tokens for s in read_sentences(train)][:5]
    assert [len(t) for t in Predictor.load(out).predict(sentences)] == [len(s) for s in sentences]
