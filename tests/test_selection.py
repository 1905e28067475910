"""Active learning (``ner_toolkit.selection``, ``ner-select``): the uncertainty maths against brute force over
every tag path, independence from batching, the seeded random strategy, and the command line end to end."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import REPO, assert_user_error, tiny_config_text
from crf_reference import brute_force, logsumexp, make_constraints, random_mask, randomise

from ner_toolkit.cli import select_main, train_main
from ner_toolkit.config import load_config
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.model.crf import CRF
from ner_toolkit.predict import Predictor
from ner_toolkit.selection import STRATEGIES, select, select_tokens, sentence_uncertainty, uncertainties
from ner_toolkit.training.dataset import read_labelled

MODEL_STRATEGIES = [s for s in STRATEGIES if s != "random"]


def reference(crf: CRF, em_row: torch.Tensor, length: int, constraints, strategy: str,
              temperature: float = 1.0) -> float:
    """The strategy's uncertainty of one sentence from every legal path enumerated (float64)."""
    paths = {p: s / temperature for p, s in brute_force(crf, em_row, length, constraints).items()}
    log_z = logsumexp(list(paths.values()))
    probs = {p: math.exp(s - log_z) for p, s in paths.items()}
    ranked = sorted(probs.values(), reverse=True)
    if strategy == "least-confidence":
        return 1.0 - ranked[0] ** (1.0 / length)
    if strategy == "margin":
        return 1.0 - (ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0))
    marginals = [[0.0] * em_row.size(-1) for _ in range(length)]
    for path, p in probs.items():
        for t, tag in enumerate(path):
            marginals[t][tag] += p
    return sum(-sum(q * math.log(q) for q in row if q > 0) for row in marginals) / length


@pytest.mark.parametrize("strategy", MODEL_STRATEGIES)
@pytest.mark.parametrize("kind,num_tags,seq_len,temperature", [
    ("none", 3, 4, 1.0), ("random", 4, 4, 1.0), ("bio", 5, 4, 1.0), ("bioes", 5, 4, 1.0), ("none", 2, 1, 1.0),
    ("bio", 5, 4, 2.5), ("random", 4, 3, 0.6)])
def test_uncertainty_equals_brute_force(strategy, kind, num_tags, seq_len, temperature):
    rng, gen = random.Random(seq_len * 7 + num_tags), torch.Generator().manual_seed(num_tags * 13 + seq_len)
    constraints = make_constraints(kind, num_tags, rng)
    crf = CRF(num_tags, constraints)
    randomise(crf, gen)
    emissions = torch.randn(8, seq_len, num_tags, generator=gen) * 2
    mask, lengths = random_mask(8, seq_len, gen, force_lengths=(seq_len, 1))
    got = sentence_uncertainty(crf, emissions, mask, strategy, temperature)
    assert got.shape == (8,) and got.dtype == torch.float32
    want = [reference(crf, emissions[b], n, constraints, strategy, temperature) for b, n in enumerate(lengths)]
    assert got.tolist() == pytest.approx(want, abs=2e-5)


def test_one_legal_path_is_certain_and_margin_is_its_probability():
    # Only tag 0 may start: a one-token sentence has exactly one legal path.
    crf = CRF(3, ([True, False, False], [True, True, True], [[True] * 3] * 3))
    emissions = torch.randn(1, 1, 3)
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert sentence_uncertainty(crf, emissions, mask, "margin").item() == pytest.approx(0.0, abs=1e-6)
    assert sentence_uncertainty(crf, emissions, mask, "least-confidence").item() == pytest.approx(0.0, abs=1e-6)
    assert sentence_uncertainty(crf, emissions, mask, "entropy").item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("strategy", MODEL_STRATEGIES)
def test_padding_and_batch_mates_do_not_change_a_sentence(strategy):
    gen = torch.Generator().manual_seed(3)
    crf = CRF(5, make_constraints("bioes", 5, random.Random(0)))
    randomise(crf, gen)
    emissions = torch.randn(6, 5, 5, generator=gen)
    mask, lengths = random_mask(6, 5, gen, force_lengths=(5,))
    whole = sentence_uncertainty(crf, emissions, mask, strategy)
    # Garbage at padded positions, more padding, and each sentence alone: the same numbers.
    padded = torch.cat([emissions, torch.randn(6, 3, 5, generator=gen) * 50], 1)
    padded[:, :5][~mask] = 1e3
    wide_mask = torch.cat([mask, torch.zeros(6, 3, dtype=torch.bool)], 1)
    assert sentence_uncertainty(crf, padded, wide_mask, strategy).tolist() == pytest.approx(whole.tolist(), abs=1e-6)
    for b, n in enumerate(lengths):
        alone = sentence_uncertainty(crf, emissions[b:b + 1, :n], mask[b:b + 1, :n], strategy)
        assert alone.item() == pytest.approx(whole[b].item(), abs=1e-6)


def test_least_confidence_is_length_normalised():
    # The same confident token repeated: P(best) falls with length, its per-token root does not.
    crf = CRF(2)
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()
    emissions = torch.tensor([[2.0, 0.0]]).expand(3, 12, 2).contiguous()
    mask = torch.arange(12).unsqueeze(0) < torch.tensor([[1], [4], [12]])
    got = sentence_uncertainty(crf, emissions, mask, "least-confidence").tolist()
    assert got == pytest.approx([1 - 1 / (1 + math.exp(-2))] * 3, abs=1e-5)  # float32 log Z - score


def test_select_ranks_highest_first_and_breaks_ties_by_pool_order():
    scores = [0.2, 0.9, 0.5, 0.9, 0.1, 0.5]
    assert select(scores, 4) == [1, 3, 2, 5]
    assert select(scores, 100) == [1, 3, 2, 5, 0, 4]
    with pytest.raises(ValueError):
        select(scores, 0)
    with pytest.raises(ValueError):
        select([0.1, float("nan")], 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 12)), max_size=30), st.integers(1, 80))
def test_token_budget_takes_the_ranking_greedily_and_leaves_out_only_what_does_not_fit(items, budget):
    scores, lengths = [float(s) for s, _ in items], [n for _, n in items]
    chosen = select_tokens(scores, lengths, budget)
    ranking = select(scores, len(scores)) if scores else []
    assert chosen == [i for i in ranking if i in set(chosen)]  # in ranking order
    used = sum(lengths[i] for i in chosen)
    assert used <= budget
    left_out = set(range(len(scores))) - set(chosen)
    assert all(lengths[i] > budget - used for i in left_out)  # nothing left out still fits
    # Taken in ranking order: a sentence is passed over only when it did not fit what was left then.
    left = budget
    for i in ranking:
        assert (i in chosen) == (lengths[i] <= left)
        left -= lengths[i] if i in chosen else 0


def test_token_budget_of_one_token_sentences_is_the_sentence_budget():
    scores = [0.2, 0.9, 0.5, 0.9, 0.1, 0.5]
    for k in range(1, 8):
        assert select_tokens(scores, [1] * 6, k) == select(scores, k)
    # Ranking 1, 3, 2, 5, 0, 4: 1 (5 tokens) fits, then only 4 (1 token) fits the 1 left.
    assert select_tokens(scores, [3, 5, 2, 4, 1, 2], 6) == [1, 4]
    assert select_tokens(scores, [3, 5, 2, 4, 1, 2], 9) == [1, 3]
    with pytest.raises(ValueError):
        select_tokens(scores, [1] * 6, 0)
    with pytest.raises(ValueError):
        select_tokens(scores, [1] * 5, 3)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="least-confidence"):
        uncertainties(None, [["a"]], "most-confident")
    with pytest.raises(ValueError, match="needs a Predictor"):
        uncertainties(None, [["a"]], "entropy")
    with pytest.raises(ValueError):
        sentence_uncertainty(CRF(2), torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), "random")


def test_random_is_seeded_and_reproducible():
    pool = [["w"] * (i % 5 + 1) for i in range(200)]
    first = uncertainties(None, pool, "random", seed=0)  # random runs no model
    assert first == uncertainties(None, pool, "random", seed=0)
    other = uncertainties(None, pool, "random", seed=1)
    assert other != first
    chosen = select(first, 50)
    assert chosen == select(uncertainties(None, pool, "random", seed=0), 50)
    assert len(set(chosen)) == 50 and set(chosen) != set(range(50))
    assert all(0.0 <= s < 1.0 for s in first)


# --------------------------------------------------------------------------- through a trained model

@pytest.fixture(scope="module")
def pool(sample_data, tmp_path_factory) -> list[Path]:
    """Two pool files: the test slice as it is (4 columns, gold last) and the dev slice as tokens only."""
    tokens_only = tmp_path_factory.mktemp("pool") / "dev_tokens.txt"
    lines = [line.split()[0] if line.strip() else line
             for line in sample_data.dev.read_text(encoding="utf-8").splitlines()]
    tokens_only.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [sample_data.test, tokens_only]


def pool_sentences(paths: list[Path]) -> dict[tuple[str, int], list[str]]:
    return {(str(p), s.line_numbers[0]): s.tokens for p in paths for s in read_sentences(p)}


def pool_uncertainties(predictor, by_place: dict, strategy: str) -> tuple[list, list[float]]:
    """The pool's places and selection.py's uncertainties of its sentences (files never share a document)."""
    keys = list(by_place)
    files = [str(p) for p, _ in keys]
    return keys, uncertainties(predictor, list(by_place.values()), strategy,
                               documents=[files.index(f) for f in files])


@pytest.mark.parametrize("strategy", MODEL_STRATEGIES)
def test_uncertainties_do_not_depend_on_batch_composition(trained, sample_data, strategy):
    sentences = [s.tokens for s in read_sentences(sample_data.dev)]
    alone = uncertainties(Predictor.load(trained.model_dir, batch_size=1), sentences, strategy)
    batched = Predictor.load(trained.model_dir, batch_size=64)
    assert uncertainties(batched, sentences, strategy) == pytest.approx(alone, abs=1e-4)
    order = list(range(len(sentences)))
    random.Random(5).shuffle(order)
    shuffled = uncertainties(batched, [sentences[i] for i in order] + [[]], strategy)
    assert shuffled[-1] == 0.0  # an empty sentence: nothing to be unsure of
    assert [shuffled[order.index(i)] for i in range(len(sentences))] == pytest.approx(alone, abs=1e-4)
    assert len(set(alone)) > len(alone) // 2  # the model does tell sentences apart


def test_uncertainties_use_the_calibration_temperature(trained, sample_data):
    sentences = [s.tokens for s in read_sentences(sample_data.dev)]
    predictor = Predictor.load(trained.model_dir)
    calibrated = uncertainties(predictor, sentences, "entropy")
    predictor.temperature = 3.0 * predictor.temperature  # hotter: flatter distributions, more entropy
    hotter = uncertainties(predictor, sentences, "entropy")
    assert sum(hotter) > sum(calibrated)


def test_select_conll_end_to_end_loads_back_as_training_data(trained, pool, predictor, tmp_path, capsys):
    out, scores = tmp_path / "next.txt", tmp_path / "scores.tsv"
    rc = select_main(["--model", str(trained.model_dir), *map(str, pool), "--budget", "7", "--strategy",
                      "least-confidence", "--output", str(out), "--scores", str(scores)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "7 of 50 pool sentences" in err and len(err.strip().splitlines()) == 1
    chosen = read_sentences(out)
    assert len(chosen) == 7
    rows = [line.split("\t") for line in scores.read_text().splitlines()]
    assert rows[0] == ["pool", "line", "rank", "uncertainty"] and len(rows) == 8
    by_place = pool_sentences(pool)
    for sentence, (file, line, rank, _) in zip(chosen, rows[1:]):
        assert sentence.tokens == by_place[(file, int(line))]  # same tokens, same count, pool order kept
        assert all(len(c) == 2 for c in sentence.columns)  # token and predicted tag
    assert [int(r[2]) for r in rows[1:]] == list(range(1, 8))
    # The ranking is selection.py's: the 7 highest uncertainties, most uncertain first, ties by pool order.
    keys, expected = pool_uncertainties(predictor, by_place, "least-confidence")
    top = select(expected, 7)
    assert [(f, int(l)) for f, l, _, _ in rows[1:]] == [(keys[i][0], keys[i][1]) for i in top]
    assert [float(r[3]) for r in rows[1:]] == pytest.approx([expected[i] for i in top], abs=1e-5)
    # The tags are the model's, and the file is training data.
    assert [s.labels for s in chosen] == predictor.predict([s.tokens for s in chosen])
    cfg = load_config(None, (f"data.train={out}",)).data
    assert len(read_labelled(str(out), cfg, "data.train").tokens) == 7
    config = tmp_path / "retrain.yaml"
    config.write_text(tiny_config_text(out, output_dir=str(tmp_path / "run"), epochs=1), encoding="utf-8")
    assert train_main(["--config", str(config)]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_select_label_studio_tasks(trained, pool, tmp_path, capsys):
    out = tmp_path / "tasks.json"
    rc = select_main(["--model", str(trained.model_dir), *map(str, pool), "--budget", "5", "--format",
                      "label-studio", "--strategy", "margin", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert len(tasks) == 5
    by_place = pool_sentences(pool)
    for rank, task in enumerate(tasks, 1):
        data = task["data"]
        assert data["rank"] == rank and data["text"] == " ".join(by_place[(data["pool"], data["line"])])
        assert 0.0 <= data["uncertainty"] <= 1.0
        prediction = task["predictions"][0]
        assert isinstance(prediction["result"], list) and 0.0 <= prediction["score"] <= 1.0
        for result in prediction["result"]:
            value = result["value"]
            assert data["text"][value["start"]:value["end"]] == value["text"] and value["labels"]
    assert [t["data"]["uncertainty"] for t in tasks] == sorted((t["data"]["uncertainty"] for t in tasks),
                                                               reverse=True)
    # Every registered writer is offered; jsonl records carry the same data object.
    rc = select_main(["--model", str(trained.model_dir), *map(str, pool), "--budget", "5", "--format", "jsonl",
                      "--strategy", "margin", "--output", str(tmp_path / "next.jsonl")])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "next.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["data"] for r in records] == [{k: v for k, v in t["data"].items() if k != "text"} for t in tasks]
    assert [r["tokens"] for r in records] == [by_place[(r["data"]["pool"], r["data"]["line"])] for r in records]


def test_random_selection_is_reproducible_and_a_large_budget_takes_the_whole_pool(trained, pool, tmp_path, capsys):
    def run(seed: int, budget: int, name: str) -> tuple[str, str]:
        out = tmp_path / name
        rc = select_main(["--model", str(trained.model_dir), str(pool[0]), "--budget", str(budget), "--strategy",
                          "random", "--seed", str(seed), "--output", str(out)])
        err = capsys.readouterr().err
        assert rc == 0, err
        return out.read_text(encoding="utf-8"), err

    first, _ = run(3, 6, "a.txt")
    assert run(3, 6, "b.txt")[0] == first
    assert run(4, 6, "c.txt")[0] != first
    everything, err = run(0, 1000, "all.txt")
    warning, summary = err.strip().splitlines()
    assert warning.startswith("warning: --budget: --budget 1000") and "20 sentences" in warning
    assert "20 of 20" in summary
    assert sorted(s.tokens for s in read_sentences(tmp_path / "all.txt")) == \
        sorted(s.tokens for s in read_sentences(pool[0]))


def test_select_by_token_budget_end_to_end(trained, pool, predictor, tmp_path, capsys):
    out, scores = tmp_path / "next.txt", tmp_path / "scores.tsv"
    rc = select_main(["--model", str(trained.model_dir), *map(str, pool), "--budget-tokens", "60", "--strategy",
                      "entropy", "--output", str(out), "--scores", str(scores)])
    err = capsys.readouterr().err
    assert rc == 0, err
    chosen = read_sentences(out)
    tokens = sum(len(s.tokens) for s in chosen)
    assert 0 < tokens <= 60 and f"({tokens} tokens)" in err
    by_place = pool_sentences(pool)
    keys, expected = pool_uncertainties(predictor, by_place, "entropy")
    top = select_tokens(expected, [len(t) for t in by_place.values()], 60)
    rows = [line.split("\t") for line in scores.read_text().splitlines()[1:]]
    assert [(f, int(l)) for f, l, _, _ in rows] == [keys[i] for i in top]
    assert [s.tokens for s in chosen] == [by_place[keys[i]] for i in top]


@pytest.mark.parametrize("argv, needles", [
    (["--budget", "3", "--budget-tokens", "30"], ["ner-select", "not allowed with argument"]),
    (["--budget-tokens", "0"], ["--budget-tokens", "at least 1"]),
    (["--budget-tokens", "2"], ["--budget-tokens", "no pool sentence fits in 2 tokens (the shortest has 3)"]),
    ([], ["ner-select", "one of the arguments --budget --budget-tokens is required"]),
])
def test_budget_errors_exit_2_with_one_line(argv, needles, trained, tmp_path, capsys):
    out, pool = tmp_path / "out.txt", tmp_path / "pool.txt"
    pool.write_text("Peter\nlives\nhere\n\nThe\nEU\nsaid\nso\n", encoding="utf-8")
    rc = select_main(["--model", str(trained.model_dir), str(pool), *argv, "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, *needles)
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing pool", "budget 0", "output is a pool", "scores is a pool", "empty pool",
                                  "no model"])
def test_user_errors_exit_2_with_one_line(case, trained, pool, tmp_path, capsys):
    out = tmp_path / "out.txt"
    model, pools, extra, needles = str(trained.model_dir), [str(pool[0])], ["--output", str(out)], []
    if case == "missing pool":
        pools, needles = [str(tmp_path / "nope.txt")], [str(tmp_path / "nope.txt"), "not found"]
    elif case == "budget 0":
        extra, needles = ["--budget", "0", "--output", str(out)], ["--budget", "at least 1"]
    elif case == "output is a pool":
        extra, needles = ["--output", str(pool[0])], ["--output", "would overwrite the pool file"]
    elif case == "scores is a pool":
        extra, needles = ["--output", str(out), "--scores", str(pool[0])], ["--scores", "would overwrite"]
    elif case == "empty pool":
        empty = tmp_path / "empty.txt"
        empty.write_text("-DOCSTART- -X- -X- O\n\n\n", encoding="utf-8")
        pools, needles = [str(empty)], [str(empty), "no sentences"]
    else:
        model, needles = str(tmp_path / "no-model"), [str(tmp_path / "no-model"), "model directory"]
    argv = ["--model", model, *pools, "--budget", "3", *extra]
    assert_user_error(select_main(argv), capsys.readouterr().err, *needles)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["empty.txt"])


def test_console_script_exit_code(tmp_path):
    """``ner-select`` as installed (setup.cfg's console script): the real exit code and stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", "from ner_toolkit.cli import select_console; select_console()",
                           "--model", str(tmp_path), str(tmp_path / "pool.txt"), "--budget", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, str(tmp_path / "pool.txt"), "pool file not found")
    assert "ner-select = ner_toolkit.cli:select_console" in (REPO / "setup.cfg").read_text()
