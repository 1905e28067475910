"""training.micro_batch_subwords: a batch too large for the cap runs as micro-batches in one optimizer step."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.config import load_config
from ner_toolkit.data.batching import Collator, Encoded, micro_batches
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
    assert [i for batch, _ in parts for i in batch.indices] == [r.index for r in records]
    assert [count for _, count in parts] == [len(batch.indices) for batch, _ in parts]
    for batch, count in parts:
        assert batch.input_ids.numel() <= cap or count == 1  # one sentence over the cap still runs, whole
    whole = collate(records)
    if whole.input_ids.numel() <= cap:
        assert len(parts) == 1
    assert micro_batches(records, collate, None)[0][1] == len(records)  # null: never split


@pytest.fixture(scope="module")
def small_train(sample_data, tmp_path_factory):
    return slice_conll(sample_data.train, tmp_path_factory.mktemp("micro") / "train.txt", 40)


def _epoch(small_train, tmp_path, cap):
    """One epoch without dropout; (final parameters, optimizer steps, micro-batches that were not last)."""
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
