"""training.micro_batch_subwords: a batch too large for the cap runs as micro-batches in one optimizer step."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.config import load_config
from ner_toolkit.data.batching import Collator, Encoded, micro_batches
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.training.optimization import Optimization
from ner_toolkit.training.trainer import prepare, run_epoch

from conftest import slice_conll, tiny_config_text


def _records(pieces_per_word: list[list[int]]) -> list[Encoded]:
    return [Encoded([0] * len(words), [[5] * n for n in words], None, i) for i, words in enumerate(pieces_per_word)]


@settings(max_examples=60, deadline=None)
@given(sentences=st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=40), min_size=1, max_size=40),
       cap=st.integers(16, 600))
def test_parts_keep_every_sentence_in_order_and_fit_the_cap(sentences, cap):
    records = _records(sentences)
    collate = Collator(cls_id=2, sep_id=3, pad_id=0, max_length=64, stride=16, pooling="first")
    parts = micro_batches(records, collate, cap)
    assert [r.index for part, _ in parts for r in part] == [r.index for r in records]  # each once, in order
    for part, batch in parts:
        assert batch.indices == [r.index for r in part]
        assert batch.input_ids.size <= cap or len(part) == 1  # one sentence over the cap still runs, whole
    whole = collate(records)
    if whole.input_ids.size <= cap:
        assert len(parts) == 1
    assert len(micro_batches(records, collate, None)) == 1  # null: never split


@pytest.fixture(scope="module")
def small_train(sample_data, tmp_path_factory):
    return slice_conll(sample_data.train, tmp_path_factory.mktemp("micro") / "train.txt", 40)


def _epoch(small_train, tmp_path, cap):
    """One epoch without dropout: (final parameters, optimizer steps, micro-batches that were not last,
    mean loss)."""
    config = tmp_path / f"c{cap}.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    setup = prepare(load_config(config, (f"output_dir={tmp_path / f'run{cap}'}", "model.dropout=0.0",
                                         f"training.micro_batch_subwords={cap}")))
    tc = setup.config.training
    optimization = Optimization(setup.tagger, tc, 100, setup.device)
    split = []
    backward = optimization.backward

    def counting(batch, share=1.0, last=True):
        split.append(not last)
        return backward(batch, share, last)

    optimization.backward = counting
    loss = run_epoch(setup.items, setup.collator, optimization, tc, random.Random(0), setup.device)
    params = {n: p.detach().clone() for n, p in setup.tagger.named_parameters()}
    return params, optimization.scheduler.last_epoch, sum(split), loss


def test_a_split_epoch_takes_the_same_steps_to_the_same_weights(small_train, tmp_path):
    whole, steps_whole, split_whole, loss_whole = _epoch(small_train, tmp_path, 1_000_000)
    split, steps_split, split_count, loss_split = _epoch(small_train, tmp_path, 64)
    assert split_whole == 0 and split_count > 0  # the small cap did split batches
    assert steps_split == steps_whole  # one optimizer step per batch, however it ran
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    for name, value in whole.items():
        assert torch.allclose(split[name], value, rtol=1e-4, atol=1e-5), name


def test_cap_below_16_is_a_config_error(small_train, tmp_path):
    from ner_toolkit.errors import UserError

    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    with pytest.raises(UserError, match="micro_batch_subwords"):
        load_config(config, ("training.micro_batch_subwords=8",))


def test_scoring_in_micro_batches_gives_the_same_tags_and_scores(small_train, sample_data, tmp_path):
    """Dev/test scoring and calibration read the cap too: smaller batches, the same predictions."""
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    setup = prepare(load_config(config, (f"output_dir={tmp_path / 'run'}", "training.micro_batch_subwords=64")))
    predictor = setup.predictor
    assert predictor.max_subwords == 64
    sentences = [s.tokens for s in read_sentences(sample_data.test)][:48]
    seen = []
    decode = predictor._batch
    predictor._batch = lambda batch, items, *rest: seen.append((batch.input_ids.numel(), len(items))) or \
        decode(batch, items, *rest)
    split = predictor.predict_detailed(sentences, scores=True)
    assert len(seen) > 2 and all(size <= 64 or count == 1 for size, count in seen)  # it did split
    predictor.max_subwords = None
    whole = predictor.predict_detailed(sentences, scores=True)
    assert [p.tags for p in split] == [p.tags for p in whole]
    for a, b in zip(split, whole):
        assert a.token_confidence == pytest.approx(b.token_confidence, abs=1e-5)
