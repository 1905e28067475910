"""From words to word vectors: subword alignment, long-sentence windows, pooling, and every word predicted."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.config import EncoderConfig
from ner_toolkit.data.batching import SubwordAligner, bucketed_batches, encode_sentences, plan_windows
from ner_toolkit.data.schemes import is_legal

from conftest import TINY_SCRATCH, TOKENIZER

SENTENCE = ["EU", "rejects", "Blackburnshire", "unbelievably", "lamb", "."]


# --------------------------------------------------------------------------- plan_windows

def check_plan(lengths: list[int], content: int, stride: int) -> None:
    windows, owner = plan_windows(lengths, content, stride)
    n = len(lengths)
    assert len(owner) == n
    assert windows[0][0] == 0 and windows[-1][1] == n
    for s, e in windows:
        assert s < e or n == 0
        assert sum(lengths[s:e]) <= content, "a window holds more subwords than fit"
    for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
        assert s1 < s2, "windows must advance"
        assert s2 <= e1, "a gap between windows would drop words"
        assert sum(lengths[s2:e1]) <= max(0, min(stride, content // 2)), "overlap larger than the stride"
        effective = min(stride, content // 2)
        if e1 - s1 > 1 and lengths[e1 - 1] <= effective and lengths[e1 - 1] + lengths[e1] <= content:
            assert s2 < e1, "consecutive windows must share context when the stride allows it"
    for t in range(n):
        s, e = windows[owner[t]]
        assert s <= t < e, f"word {t} is read from window {owner[t]} = {(s, e)} that does not hold it"

    def context(w: int, t: int) -> int:
        s, e = windows[w]
        return min(sum(lengths[s:t]), sum(lengths[t + 1:e]))

    for t in range(n):
        holders = [w for w, (s, e) in enumerate(windows) if s <= t < e]
        assert context(owner[t], t) == max(context(w, t) for w in holders), \
            f"word {t} is not read from the window where it has the most context"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_plan_windows_properties(data):
    content = data.draw(st.integers(1, 40), label="content")
    lengths = data.draw(st.lists(st.integers(1, content), max_size=80), label="lengths")
    stride = data.draw(st.integers(0, 50), label="stride")
    check_plan(lengths, content, stride)
    # Every window reaches a word the previous one lacked: a window ending where the previous one
    # ended would be a wasted encoder pass (stride overlap + next word not fitting in one window).
    windows, _ = plan_windows(lengths, content, stride)
    ends = [e for _, e in windows]
    assert ends == sorted(set(ends)), f"windows {windows} for lengths {lengths}, content {content}, stride {stride}"


def test_plan_windows_examples():
    windows, owner = plan_windows([1] * 10, 4, 2)
    assert windows == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert owner == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert plan_windows([3, 3, 3], 10, 2) == ([(0, 3)], [0, 0, 0])
    # A word as long as the whole window still gets its own window.
    check_plan([5, 1, 5, 5, 1], 5, 3)


# --------------------------------------------------------------------------- encoder and pooling

@pytest.fixture(scope="module")
def tiny_encoder():
    from ner_toolkit.model.encoder import build_hf_encoder

    torch.manual_seed(0)
    hf, tokenizer = build_hf_encoder(EncoderConfig(scratch=dict(TINY_SCRATCH), tokenizer=TOKENIZER))
    return hf.eval(), tokenizer


def encode(tokenizer, hf, sentences, pooling="first", **cfg):
    from ner_toolkit.model.encoder import Encoder
    from ner_toolkit.data.batching import make_collator
    from ner_toolkit.model.encoder import max_positions

    aligner, collator = make_collator(tokenizer, max_positions(hf), EncoderConfig(pooling=pooling, **cfg))
    batch = collator(encode_sentences(aligner, None, sentences)).to(torch.device("cpu"))
    encoder = Encoder(hf, pooling, freeze=False, dropout=0.0).eval()
    with torch.no_grad():
        return encoder(batch), batch


def test_aligner_gives_every_word_a_subword(tiny_encoder):
    _, tokenizer = tiny_encoder
    aligner = SubwordAligner(tokenizer, max_pieces_per_word=5)
    (pieces,) = aligner.pieces([["EU", "\u200b", "\x07", "a" * 1000, "unbelievably"]])
    assert pieces[0] == [2898]
    assert pieces[1] == pieces[2] == [tokenizer.unk_token_id]  # the tokenizer gives them nothing
    assert len(pieces[3]) == 5  # capped, never dropped
    assert 1 < len(pieces[4]) <= 5


@pytest.mark.parametrize("pooling", ["first", "last", "mean", "first_last"])
def test_pooling_matches_a_manual_computation(tiny_encoder, pooling):
    hf, tokenizer = tiny_encoder
    enc = tokenizer(SENTENCE, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**enc).last_hidden_state[0]
    positions = [[i for i, w in enumerate(enc.word_ids()) if w == t] for t in range(len(SENTENCE))]
    assert any(len(p) > 1 for p in positions), "the sentence must have multi-subword words"
    first = torch.stack([hidden[p[0]] for p in positions])
    last = torch.stack([hidden[p[-1]] for p in positions])
    mean = torch.stack([hidden[p].mean(0) for p in positions])
    expected = {"first": first, "last": last, "mean": mean, "first_last": torch.cat([first, last], -1)}[pooling]

    words, _ = encode(tokenizer, hf, [SENTENCE], pooling)
    assert words.shape == (1, len(SENTENCE), expected.shape[-1])
    torch.testing.assert_close(words[0], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_word_vectors_do_not_depend_on_batch_neighbours(tiny_encoder, pooling):
    hf, tokenizer = tiny_encoder
    longer = SENTENCE * 3
    alone, _ = encode(tokenizer, hf, [SENTENCE], pooling)
    together, _ = encode(tokenizer, hf, [longer, SENTENCE], pooling)
    torch.testing.assert_close(together[1, : len(SENTENCE)], alone[0], atol=1e-5, rtol=1e-4)
    assert together[1, len(SENTENCE):].abs().sum() == 0, "padding positions must be zeros"


@pytest.mark.parametrize("pooling", ["first", "last", "mean"])
def test_long_sentence_words_come_from_their_owner_window(tiny_encoder, pooling):
    hf, tokenizer = tiny_encoder
    words = (SENTENCE + ["Peter", "Blackburn", "BRUSSELS", "1996-08-22", "Commission"]) * 6
    max_length, stride = 24, 8
    vectors, batch = encode(tokenizer, hf, [words], pooling, max_length=max_length, stride=stride)
    assert vectors.shape[:2] == (1, len(words))
    aligner = SubwordAligner(tokenizer, 22)
    (pieces,) = aligner.pieces([words])
    lengths = [len(p) for p in pieces]
    windows, owner = plan_windows(lengths, max_length - 2, stride)
    assert len(windows) > 3 and batch.input_ids.shape[0] == len(windows)

    def window_hidden(w: int) -> tuple[torch.Tensor, list[int]]:
        s, e = windows[w]
        ids = [tokenizer.cls_token_id] + [i for p in pieces[s:e] for i in p] + [tokenizer.sep_token_id]
        with torch.no_grad():
            h = hf(input_ids=torch.tensor([ids])).last_hidden_state[0]
        starts, pos = [], 1
        for p in pieces[s:e]:
            starts.append(pos)
            pos += len(p)
        return h, starts

    hidden = [window_hidden(w) for w in range(len(windows))]
    differs_elsewhere = 0
    for t in range(len(words)):
        w = owner[t]
        h, starts = hidden[w]
        s = windows[w][0]
        span = h[starts[t - s]: starts[t - s] + lengths[t]]
        expected = {"first": span[0], "last": span[-1], "mean": span.mean(0)}[pooling]
        torch.testing.assert_close(vectors[0, t], expected, atol=1e-5, rtol=1e-4)
        for other, (os_, oe) in enumerate(windows):
            if other != w and os_ <= t < oe:
                h2, starts2 = hidden[other]
                if not torch.allclose(h2[starts2[t - os_]], h[starts[t - s]], atol=1e-4):
                    differs_elsewhere += 1
    # Otherwise the comparison above could not tell windows apart.
    assert differs_elsewhere > 0


# --------------------------------------------------------------------------- bucketing

def test_bucketed_batches_cover_every_sentence_once():
    import random

    items = encode_sentences(_FakeAligner(), None, [["w"] * n for n in range(1, 200)])
    for shuffle in (False, True):
        batches = list(bucketed_batches(items, 16, shuffle=shuffle, rng=random.Random(0)))
        seen = sorted(it.index for b in batches for it in b)
        assert seen == list(range(len(items)))
        assert all(1 <= len(b) <= 16 for b in batches)
    sorted_batches = list(bucketed_batches(items, 16, shuffle=False))
    sizes = [len(it) for b in sorted_batches for it in b]
    assert sizes == sorted(sizes, reverse=True)


class _FakeAligner:
    def pieces(self, sentences):
        return [[[5] for _ in s] for s in sentences]


# --------------------------------------------------------------------------- every word predicted

@pytest.fixture(scope="module")
def long_predictor(trained):
    """The session model with 64-subword windows (sentences longer than that are windowed)."""
    from ner_toolkit.model.directory import load_model
    from ner_toolkit.predict import Predictor

    m = load_model(trained.model_dir)
    cfg = replace(m.config.model.encoder, max_length=64, stride=16)
    return Predictor(m.tagger, m.tokenizer, m.vocab, m.labels, cfg, torch.device("cpu"), batch_size=8)


def sample_words(path, n):
    words = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("-DOCSTART-")]
    return [words[i % len(words)] for i in range(n)]


def test_2000_word_sentence_gets_2000_tags(long_predictor, sample_data):
    words = sample_words(sample_data.train, 2000)
    item = encode_sentences(long_predictor.aligner, long_predictor.vocab, [words])[0]
    assert long_predictor.collator([item]).input_ids.shape[0] > 30, "the sentence must be split into windows"
    (tags,) = long_predictor.predict([words])
    assert len(tags) == 2000
    assert is_legal(tags, long_predictor.labels.output_scheme)
    assert set(tags) <= {"O"} | {f"{p}-{t}" for p in "IB" for t in long_predictor.labels.types}


def test_long_and_short_sentences_in_one_call(long_predictor, sample_data):
    words = sample_words(sample_data.train, 700)
    sentences = [words, ["EU", "rejects"], words[:63], [], words[:200]]
    tags = long_predictor.predict(sentences)
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    # Windowing must not change a sentence's prediction because of its batch neighbours.
    assert long_predictor.predict([words[:200]])[0] == tags[4]


def test_words_the_tokenizer_drops_still_get_a_tag(predictor):
    sentences = [["EU", "\u200b", "rejects", "\x07", "German"], ["\u200b"], ["\x07", "\x07"], ["\u00a0"]]
    tags = predictor.predict(sentences)
    assert [len(t) for t in tags] == [5, 1, 2, 1]


def test_a_1000_character_token(predictor, long_predictor):
    sentences = [["a" * 1000], ["EU", "x" * 1000, "call"], ["Peter", "Blackburn"] + ["Ä" * 1000] * 3]
    for p in (predictor, long_predictor):
        assert [len(t) for t in p.predict(sentences)] == [1, 3, 5]


def test_predictions_do_not_depend_on_batch_size(predictor, sample_data):
    from ner_toolkit.data.conll import read_sentences

    sentences = [s.tokens for s in read_sentences(sample_data.dev)]
    batched = predictor.predict(sentences)
    old = predictor.batch_size
    try:
        predictor.batch_size = 1
        one_by_one = predictor.predict(sentences)
    finally:
        predictor.batch_size = old
    assert batched == one_by_one
    assert predictor.predict([["EU"]] + sentences[:3])[1:] == batched[:3]


def test_subword_ids_from_the_backend_equal_the_tokenizer_call() -> None:
    """SubwordAligner asks the fast tokenizer's Rust backend directly: the same ids as the transformers
    call it replaces, for plain, accented, CJK, punctuation, digit and control-character words."""
    from ner_toolkit.data.windows import plain_backend, word_ids
    from ner_toolkit.model.encoder import load_tokenizer

    tokenizer = load_tokenizer(TOKENIZER)
    words = ["Peter", "Blackburn", "naïve", "Zürich", "東京", "U.S.", "1996-08-22", "--", "(", "don't",
             "\u200b", "\x07", "x" * 300, "ﬁ", "Ǆ", "🙂"]
    assert tokenizer.is_fast
    want = tokenizer([[w] for w in words], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    backend = plain_backend(tokenizer)
    assert backend is not None
    assert word_ids(tokenizer, backend, words) == [list(ids) for ids in want]


@pytest.mark.parametrize("multiple", [8, 16])
def test_padding_to_a_multiple_changes_shapes_not_results(predictor, multiple: int) -> None:
    """training.pad_to_multiple: both axes rounded up (never past the window), the real positions carry
    the same ids, masks and pooling sources, and the model's scores there are the same."""
    from ner_toolkit.data.batching import Collator

    base = predictor.collator
    padded = Collator(base.cls_id, base.sep_id, base.pad_id, base.max_length, base.stride, base.pooling, multiple)
    sentences = [["Peter", "Blackburn"], ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
                 ["x"] * 37]
    items = predictor._encode(sentences, None)
    cpu = torch.device("cpu")
    a, b = base(items).to(cpu), padded(items).to(cpu)
    (_, s1), (_, s2) = a.input_ids.shape, b.input_ids.shape
    t1, t2 = a.mask.shape[1], b.mask.shape[1]
    assert s2 % multiple == 0 or s2 == base.max_length
    assert t2 % multiple == 0 and s1 <= s2 < s1 + multiple and t1 <= t2 < t1 + multiple
    assert torch.equal(b.input_ids[:, :s1], a.input_ids) and b.input_ids[:, s1:].eq(base.pad_id).all()
    assert torch.equal(b.attention_mask[:, :s1], a.attention_mask) and b.attention_mask[:, s1:].eq(0).all()
    assert torch.equal(b.mask[:, :t1], a.mask) and not b.mask[:, t1:].any()
    assert torch.equal(b.word_ids[:, :t1], a.word_ids)
    for (src_a, dst_a, w_a), (src_b, dst_b, w_b) in zip(a.pools, b.pools):
        assert torch.equal(torch.stack([src_a // s1, src_a % s1]), torch.stack([src_b // s2, src_b % s2]))
        assert torch.equal(torch.stack([dst_a // t1, dst_a % t1]), torch.stack([dst_b // t2, dst_b % t2]))
        assert torch.equal(w_a, w_b)
    tagger = predictor.tagger.eval()
    with torch.inference_mode():
        ea, eb = tagger.crf_scores(a), tagger.crf_scores(b)
        assert torch.allclose(eb[:, :t1][a.mask], ea[a.mask], atol=1e-5)
        assert torch.equal(tagger.crf.decode(eb, b.mask)[0][:, :t1], tagger.crf.decode(ea, a.mask)[0])


def test_pad_to_multiple_null_depends_on_the_training_set_size_and_precision() -> None:
    from ner_toolkit.training.trainer import pad_multiple

    assert [pad_multiple(None, n, "bf16") for n in (1, 400, 1000, 1001, 140_410)] == [1, 1, 1, 16, 16]
    assert pad_multiple(None, 140_410, "fp16") == 16 and pad_multiple(None, 140_410, "fp32") == 1
    assert pad_multiple(4, 10, "fp32") == 4 and pad_multiple(1, 10**6, "bf16") == 1
