"""Any published tokenizer works as shipped: whatever its tokenizer.json configures for whole inputs (fixed
padding, truncation, a template post-processor), a word becomes the subwords the tokenizer gives for that word
alone without special tokens. Added tokens and normalisers (lower-casing, accent stripping) are the tokenizer's
own and apply as they do in a plain call.

The reference for each variant is built apart from what is tested: the same vocabulary and the same
normaliser / added tokens, but no padding, truncation or post-processor ever set, called on one word; and the
transformers call on the variant (``tokenizer(word, add_special_tokens=False)``), which pads and truncates only
on request. ``SubwordAligner`` (training and the PyTorch predictor) and the ONNX runtime's tokenizer must both
agree with it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing

from ner_toolkit.data.windows import SubwordAligner
from ner_toolkit.export.runtime import FastTokenizer
from ner_toolkit.model.encoder import load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESOURCES = Path(__file__).resolve().parents[1] / "ner_toolkit" / "resources"
PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "par", "##is", "mul", "##ler", "na", "##ive",
          "##ï", "##ü", "kö", "##ln", "##s", "a", "b", "c", "##a", "##b", "##c", "1", "##2", ".", ",", "-", "'",
          "e", "##e", "é", "##é", "P", "##A", "##R", "##I", "##S", "M", "##ü"]
WORDS = ["Paris", "paris", "PARIS", "Müller", "muller", "naïve", "Köln", "abc", "12", "U.S.", "don't", "x",
         "café", "ÉÉ", "", "\u200b", "[CLS]", "newword", "<ent>", "a-b", "ﬁ"]
word = st.one_of(st.sampled_from(WORDS), st.text(alphabet="abcePARISüïéÉ12.,-' ", min_size=1, max_size=12)
                 .map(lambda w: w.replace(" ", "") or "a"))


def wordpiece(lowercase: Optional[bool], strip_accents: Optional[bool], added: bool) -> Tokenizer:
    """A small BERT-style tokenizer: the reference when built as is, a variant's base otherwise."""
    vocab = {piece: i for i, piece in enumerate(PIECES)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=20))
    if lowercase is not None:
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    if added:
        tok.add_tokens(["newword", AddedToken("<ent>", normalized=False)])
    return tok


def save(tok: Tokenizer, directory: Path, tokenizer_class: str = "PreTrainedTokenizerFast") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": tokenizer_class, "unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "sep_token": "[SEP]", "mask_token": "[MASK]"}), encoding="utf-8")
    return directory


def published(tok: Tokenizer, padding: Optional[int], truncation: Optional[int], template: bool) -> Tokenizer:
    """``tok`` with what published tokenizer.json files set for whole inputs."""
    if padding is not None:
        tok.enable_padding(length=padding, pad_id=0, pad_token="[PAD]")
    if truncation is not None:
        tok.enable_truncation(max_length=truncation)
    if template:
        tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def alone(reference: Tokenizer, words: list[str]) -> list[list[int]]:
    """Each word's ids from the reference tokenizer, one word per call; no id is the empty word's [UNK]."""
    return [reference.encode([w], is_pretokenized=True, add_special_tokens=False).ids or [1] for w in words]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(padding=st.sampled_from([None, 1, 4, 128]), truncation=st.sampled_from([None, 1, 2, 3, 128]),
       template=st.booleans(), added=st.booleans(),
       normaliser=st.sampled_from([None, (True, None), (True, True), (False, False), (False, None)]),
       words=st.lists(word, min_size=1, max_size=8))
def test_words_become_the_subwords_of_the_word_alone(tmp_path_factory: pytest.TempPathFactory,
                                                     padding: Optional[int], truncation: Optional[int],
                                                     template: bool, added: bool,
                                                     normaliser: Optional[tuple], words: list[str]) -> None:
    lowercase, strip = normaliser if normaliser is not None else (None, None)
    directory = save(published(wordpiece(lowercase, strip, added), padding, truncation, template),
                     tmp_path_factory.mktemp("variant"))
    want = alone(wordpiece(lowercase, strip, added), words)
    tokenizer = load_tokenizer(str(directory))
    # The aligner first: a transformers call switches the shared backend's padding off as a side effect.
    assert SubwordAligner(tokenizer, 100, unk_id=1).pieces([words]) == [want]
    plain_call = [tokenizer(w, add_special_tokens=False)["input_ids"] or [1] for w in words]
    assert plain_call == want  # the two references agree
    # The ONNX runtime reads the same tokenizer.json without transformers.
    assert SubwordAligner(FastTokenizer(directory / "tokenizer.json"), 100, unk_id=1).pieces([words]) == [want]


def test_a_padded_and_truncated_tokenizer_gives_the_unpadded_ids(tmp_path: Path) -> None:
    """The shape of all-MiniLM-L6-v2's published file: Fixed(128) padding, truncation at 128, a template."""
    directory = save(published(wordpiece(True, None, False), 128, 128, True), tmp_path / "tok")
    pieces = SubwordAligner(load_tokenizer(str(directory)), 24, unk_id=1).pieces([["Paris", "Müller", "x"]])
    assert pieces == [[[6, 7], [8, 9], [1]]]


@pytest.mark.parametrize("variant", ["as shipped", "padded", "truncated", "template"])
def test_albert_sentencepiece_tokenizer_json_variants(tmp_path: Path, variant: str) -> None:
    """ALBERT's SentencePiece tokenizer (the builtin albert-base-v2 tokenizer.json): the same holds."""
    tok = Tokenizer.from_file(str(RESOURCES / "albert-base-v2" / "tokenizer.json"))
    plain = Tokenizer.from_file(str(RESOURCES / "albert-base-v2" / "tokenizer.json"))
    plain.no_padding()
    plain.no_truncation()
    if variant == "padded":
        tok.enable_padding(length=64, pad_id=0, pad_token="<pad>")
    elif variant == "truncated":
        tok.enable_truncation(max_length=1)
    elif variant == "template":
        tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        (RESOURCES / "albert-base-v2" / "tokenizer_config.json").read_text(encoding="utf-8"), encoding="utf-8")
    words = ["Peter", "Blackburn", "naïve", "Zürich", "1996-08-22", "U.S.", "supercalifragilistic", "東京"]
    want = alone(plain, words)
    assert SubwordAligner(load_tokenizer(str(tmp_path)), 100, unk_id=1).pieces([words]) == [want]


SHARED_TOKENIZERS = [SHARED / "models" / "all-MiniLM-L6-v2", SHARED / "models" / "albert-large-v2",
                     SHARED / "models" / "albert-base-v2" / "spiece.model"]


@pytest.mark.parametrize("path", SHARED_TOKENIZERS, ids=lambda p: p.parent.name if p.is_file() else p.name)
def test_published_tokenizers_in_shared_as_shipped(path: Path) -> None:
    """The real files (MiniLM's fixes padding and truncation at 128): each word's ids are the plain call's."""
    if not path.exists():
        pytest.skip(f"{path} not found (../shared is absent)")
    tokenizer = load_tokenizer(str(path))
    words = ["EU", "rejects", "German", "call", "Kuznetsov", "naïve", "Zürich", "1996-08-22", "--", "x" * 40]
    # The aligner first: a transformers call switches the shared backend's padding off as a side effect.
    pieces = SubwordAligner(tokenizer, 100).pieces([words])
    want = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(0 < len(ids) < 30 for ids in want)
    assert pieces == [want]
