"""Active learning (``ner_toolkit.selection``, ``ner-select``): the uncertainty maths against brute force over
every tag path, independence from batching, the seeded random strategy, and the command line end to end."""
from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch
from crf_reference import brute_force, logsumexp, make_constraints, random_mask, randomise

from ner_toolkit.model.crf import CRF
from ner_toolkit.selection import STRATEGIES, select, sentence_uncertainty, uncertainties

MODEL_STRATEGIES = [s for s in STRATEGIES if s != "random"]


def reference(crf: CRF, em_row: torch.Tensor, length: int, constraints, strategy: str) -> float:
    """The strategy's uncertainty of one sentence from every legal path enumerated (float64)."""
    paths = brute_force(crf, em_row, length, constraints)
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
@pytest.mark.parametrize("kind,num_tags,seq_len", [("none", 3, 4), ("random", 4, 4), ("bio", 5, 4),
                                                   ("bioes", 5, 4), ("none", 2, 1)])
def test_uncertainty_equals_brute_force(strategy, kind, num_tags, seq_len):
    rng, gen = random.Random(seq_len * 7 + num_tags), torch.Generator().manual_seed(num_tags * 13 + seq_len)
    constraints = make_constraints(kind, num_tags, rng)
    crf = CRF(num_tags, constraints)
    randomise(crf, gen)
    emissions = torch.randn(8, seq_len, num_tags, generator=gen) * 2
    mask, lengths = random_mask(8, seq_len, gen, force_lengths=(seq_len, 1))
    got = sentence_uncertainty(crf, emissions, mask, strategy)
    assert got.shape == (8,) and got.dtype == torch.float32
    want = [reference(crf, emissions[b], n, constraints, strategy) for b, n in enumerate(lengths)]
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


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="least-confidence"):
        uncertainties(None, [["a"]], "most-confident")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sentence_uncertainty(CRF(2), torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), "random")


def test_random_is_seeded_and_reproducible():
    pool = [["w"] * (i % 5 + 1) for i in range(200)]
    first = uncertainties(None, pool, "random", seed=0)  # type: ignore[arg-type]  (random runs no model)
    assert first == uncertainties(None, pool, "random", seed=0)  # type: ignore[arg-type]
    other = uncertainties(None, pool, "random", seed=1)  # type: ignore[arg-type]
    assert other != first
    chosen = select(first, 50)
    assert chosen == select(uncertainties(None, pool, "random", seed=0), 50)  # type: ignore[arg-type]
    assert len(set(chosen)) == 50 and set(chosen) != set(range(50))
    assert all(0.0 <= s < 1.0 for s in first)
