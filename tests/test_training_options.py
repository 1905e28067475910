"""Mixed precision, token-budget batches and gradient accumulation."""
from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.cli import predict_main, train_main
from ner_toolkit.config import load_config
from ner_toolkit.data.batching import Encoded, bucketed_batches
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.training.optimization import Optimization
from ner_toolkit.training.trainer import prepare, run_epoch

from conftest import assert_user_error, tiny_config_text


def _items(lengths: list[int]) -> list[Encoded]:
    return [Encoded([0] * n, [[5]] * n, None, i) for i, n in enumerate(lengths)]


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=120), budget=st.integers(1, 400),
       shuffle=st.booleans(), seed=st.integers(0, 1000))
def test_token_budget_batches(lengths, budget, shuffle, seed):
    items = _items(lengths)
    batches = list(bucketed_batches(items, 8, shuffle, random.Random(seed), batch_tokens=budget))
    assert sorted(x.index for b in batches for x in b) == list(range(len(items)))  # each sentence once
    for batch in batches:
        padded = max(x.num_pieces + 2 for x in batch) * len(batch)
        assert padded <= budget or len(batch) == 1  # a sentence over budget goes alone, never dropped


def _setup(small_train, tmp_path, *overrides):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    return prepare(load_config(config, (f"output_dir={tmp_path / 'run'}",) + overrides))


@pytest.fixture(scope="module")
def small_train(sample_data, tmp_path_factory):
    from conftest import slice_conll

    return slice_conll(sample_data.train, tmp_path_factory.mktemp("opts") / "train.txt", 24)


def test_accumulating_two_batches_equals_one_batch_of_both(small_train, tmp_path):
    """The gradient an accumulated step applies is the gradient of the two batches taken as one."""
    setup = _setup(small_train, tmp_path, "model.dropout=0.0", "training.max_grad_norm=0")
    first, second = setup.items[:4], setup.items[4:8]
    tagger_a = setup.tagger
    tagger_b = copy.deepcopy(setup.tagger)
    tagger_a.eval()
    tagger_b.eval()  # no dropout: the two runs see the same function
    tc = setup.config.training

    def applied(optimization: Optimization) -> dict:
        seen: dict = {}

        def record(*args, **kwargs):  # stands in for AdamW.step: keep the gradient it would apply
            seen.update({n: p.grad.clone() for n, p in optimization.tagger.named_parameters() if p.grad is not None})
        optimization.optimizer.step = record
        return seen

    acc = Optimization(tagger_a, type(tc)(**{**tc.__dict__, "accumulate": 2}), 10, setup.device)
    grads_a = applied(acc)
    acc.backward(setup.collator(first).to(setup.device))
    assert acc.pending == 1 and not grads_a  # no step after the first batch
    acc.backward(setup.collator(second).to(setup.device))
    assert acc.pending == 0 and grads_a
    one = Optimization(tagger_b, tc, 10, setup.device)
    grads_b = applied(one)
    one.backward(setup.collator(first + second).to(setup.device))
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6), name


def test_steps_per_epoch_with_accumulation(small_train, tmp_path):
    setup = _setup(small_train, tmp_path, "training.batch_size=4", "training.accumulate=3")
    tc = setup.config.training
    optimization = Optimization(setup.tagger, tc, 100, setup.device)
    run_epoch(setup.items, setup.collator, optimization, tc, random.Random(0), setup.device)
    batches = math.ceil(len(setup.items) / 4)
    assert optimization.scheduler.last_epoch == math.ceil(batches / 3)  # the partial last group steps too


def test_bf16_training_and_prediction_on_cpu(small_train, sample_data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, sample_data.dev, epochs=2), encoding="utf-8")
    out = tmp_path / "run"
    assert train_main(["--config", str(config), "--output-dir", str(out), "--set", "training.precision=bf16",
                       "--set", "training.batch_tokens=300"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
    pred = tmp_path / "pred.txt"
    assert predict_main(["--model", str(out), str(sample_data.dev), "--output", str(pred), "--precision", "bf16",
                         "--scores"]) == 0
    assert [len(s.tokens) for s in read_sentences(pred)] == [len(s.tokens) for s in read_sentences(sample_data.dev)]
    # The model's weights stay float32: autocast only changes how the network computes.
    assert all(p.dtype == torch.float32 for p in _setup(small_train, tmp_path).tagger.parameters())


def test_fp16_needs_cuda(small_train, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    rc = train_main(["--config", str(config), "--output-dir", str(tmp_path / "run"), "--set", "training.precision=fp16"])
    assert_user_error(rc, capsys.readouterr().err, "training.precision", "fp16 needs a CUDA device")
    assert not (tmp_path / "run").exists()


def test_softmax_decoder_trains_cross_entropy_and_decodes_legal_sequences(small_train, tmp_path):
    """model.decoder=softmax: loss = summed token cross-entropy per sentence, no learned transitions, and the
    decode is the most probable *legal* sequence (a brute-force check over every sequence of a short sentence)."""
    import itertools

    import torch.nn.functional as F

    from ner_toolkit.data.schemes import is_legal

    setup = _setup(small_train, tmp_path, "model.decoder=softmax", "model.dropout=0.0")
    tagger = setup.tagger.eval()
    assert not any(p.requires_grad for p in tagger.crf.parameters())
    assert not any(g["name"].startswith("crf") for g in tagger.param_groups(setup.config.training.lr, 0.0))
    batch = setup.collator(setup.items[:6]).to(setup.device)
    emissions = tagger.compute_emissions(batch)
    expected = sum(F.cross_entropy(emissions[b, :n], batch.tags[b, :n], reduction="sum")
                   for b, n in enumerate(batch.lengths.tolist())) / 6
    torch.testing.assert_close(tagger.loss(batch), expected)

    # Brute force on a 3-token sentence with random scores that favour illegal sequences.
    names, scheme = setup.labels.labels, setup.labels.tag_scheme
    K = len(names)
    torch.manual_seed(0)
    log_p = torch.randn(1, 3, K).mul(4).log_softmax(-1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    path = tagger.crf.decode(log_p, mask)[0][0].tolist()
    legal = [seq for seq in itertools.product(range(K), repeat=3) if is_legal([names[k] for k in seq], scheme)]
    best = max(legal, key=lambda seq: sum(log_p[0, t, k].item() for t, k in enumerate(seq)))
    assert path == list(best)
    assert is_legal([names[k] for k in path], scheme)


def test_unk_dropout_replaces_training_tokens_only():
    """model.words.unk_dropout: in training, about that share of real tokens read the <unk> row (padding
    never); in evaluation every token reads its own row."""
    from ner_toolkit.config import ModelConfig, WordsConfig
    from ner_toolkit.data.vocab import UNK_ID
    from ner_toolkit.model.embeddings import WordFusion

    fusion = WordFusion(4, 50, ModelConfig(words=WordsConfig(dim=8, unk_dropout=0.3)))
    word_ids = torch.randint(2, 50, (64, 40))
    word_ids[:, 30:] = 0  # padding
    encoded = torch.zeros(64, 40, 4)
    table = fusion.words.weight.detach()

    def rows_read(out: torch.Tensor) -> torch.Tensor:  # which embedding row each position read
        return torch.cdist(out[..., 4:].reshape(-1, 8), table).argmin(1).view(64, 40)

    torch.manual_seed(0)
    read = rows_read(fusion.train()(encoded, word_ids))
    replaced = (read == UNK_ID) & (word_ids != 0)
    assert 0.25 < replaced[:, :30].float().mean() < 0.35
    assert torch.equal(read[~replaced], word_ids[~replaced])  # the rest (padding included) untouched
    assert torch.equal(rows_read(fusion.eval()(encoded, word_ids)), word_ids)


@pytest.mark.parametrize("override,message", [
    ("model.words.unk_dropout=1.0", "`model.words.unk_dropout` must be in [0, 1)"),
    ("model.encoder.token_dropout=-0.1", "`model.encoder.token_dropout` must be in [0, 1)"),
    ("training.ema=1.0", "`training.ema` must be in [0, 1)"),
])
def test_rates_out_of_range_are_config_errors(small_train, tmp_path, capsys, override, message):
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, epochs=1), encoding="utf-8")
    rc = train_main(["--config", str(config), "--set", override])
    assert_user_error(rc, capsys.readouterr().err, message)


def test_weight_average_follows_the_ramped_ema_and_only_swaps_in_for_scoring(small_train, tmp_path):
    setup = _setup(small_train, tmp_path, "training.ema=0.9")
    optimization = Optimization(setup.tagger, setup.config.training, 100, setup.device)
    params = [p for p in setup.tagger.parameters() if p.requires_grad]
    expected = [p.detach().clone() for p in params]
    for n, item in enumerate((setup.items[:4], setup.items[4:8], setup.items[8:12]), start=1):
        optimization.backward(setup.collator(item).to(setup.device))
        decay = min(0.9, (1 + n) / (10 + n))  # 0.18, 0.25, 0.31: the ramp, not 0.9
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, params)]
    trained = [p.detach().clone() for p in params]
    assert not all(torch.equal(t, e) for t, e in zip(trained, expected))
    with optimization.evaluated_weights():
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(p.detach(), t) for p, t in zip(params, trained))  # training goes on from its own


def test_weight_average_is_what_the_run_saves_and_scores(small_train, sample_data, tmp_path):
    from safetensors.torch import load_file

    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(small_train, sample_data.dev, epochs=1), encoding="utf-8")
    out = tmp_path / "run"
    assert train_main(["--config", str(config), "--output-dir", str(out), "--set", "training.ema=0.99"]) == 0
    saved = load_file(str(out / "model" / "model.safetensors"))
    last = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    shadow = last["average"]["shadow"]
    assert len(shadow) > 10 and all(torch.equal(saved[n], shadow[n]) for n in shadow)  # the model is the average
    assert any(not torch.equal(saved[n], last["model"][n]) for n in shadow)  # not the last trained weights



def test_token_dropout_masks_regular_subwords_in_training_only(small_train, tmp_path):
    setup = _setup(small_train, tmp_path, "model.encoder.token_dropout=0.3")
    encoder, tokenizer = setup.tagger.encoder, setup.tokenizer
    batch = setup.collator(setup.items[:16]).to(setup.device)
    torch.manual_seed(0)
    dropped = encoder._drop_tokens(batch.input_ids, batch.attention_mask)
    specials = torch.isin(batch.input_ids, torch.tensor(tokenizer.all_special_ids))
    regular = batch.attention_mask.bool() & ~specials
    changed = dropped != batch.input_ids
    assert torch.equal(dropped[changed], torch.full_like(dropped[changed], tokenizer.mask_token_id))
    assert not (changed & ~regular).any()  # [CLS], [SEP], <unk>, padding: never replaced
    assert 0.2 < changed[regular].float().mean() < 0.4

    seen = []
    real_forward = encoder.model.forward
    encoder.model.forward = lambda **kw: (seen.append(kw["input_ids"].clone()), real_forward(**kw))[1]
    encoder.eval()(batch)
    encoder.train()(batch)
    assert torch.equal(seen[0], batch.input_ids)  # evaluation and prediction read the real subwords
    assert (seen[1] == tokenizer.mask_token_id).sum() > (batch.input_ids == tokenizer.mask_token_id).sum()
