"""CRF n-best, marginals, span probabilities, NLL forms, compile and memory: against brute force."""

import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from crf_reference import (
    BIO_TAGS,
    BIOES_TAGS,
    DECODERS,
    bioes_constraints,
    brute_alpha_beta,
    brute_force,
    brute_span_log_prob,
    compile_available,
    continues_matrix,
    decoder,
    legal,
    log_partition_logspace,
    logsumexp,
    make_constraints,
    needs_torchcrf,
    random_constraints,
    random_mask,
    random_problem,
    randomise,
    segments,
    torchcrf,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.model.crf import CRF

# --------------------------------------------------------------------------- n-best, marginals, spans

NBEST_CASES = [
    ("none", 3, 4),
    ("none", 4, 5),
    ("random", 3, 5),
    ("random", 5, 4),
    ("bio", 5, 5),
    ("bioes", 5, 5),
]


@pytest.mark.parametrize("kind,k,seq_len", NBEST_CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("impl", DECODERS)
def test_brute_force_nbest_marginals_forward_backward(kind, k, seq_len, seed, impl):
    rng = random.Random(seed * 1000 + k * 10 + seq_len)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    constraints = make_constraints(kind, k, rng)
    batch = 4
    crf, emissions, mask, lengths = random_problem(k, constraints, gen, batch, seq_len, 2.0, (1, seq_len, 2))
    refs = [brute_force(crf, emissions[b], lengths[b], constraints) for b in range(batch)]

    # n-best: the top-n of the enumeration of legal (distinct) paths, best first; -inf beyond it.
    n = 7
    with decoder(impl):
        paths, scores = crf.nbest(emissions, mask, n)
        best_paths, best_scores = crf.decode(emissions, mask)
    assert paths.shape == (batch, n, seq_len) and paths.dtype == torch.long
    assert scores.shape == (batch, n) and scores.dtype == torch.float32
    assert torch.equal(paths[:, 0], best_paths)
    assert torch.equal(scores[:, 0], best_scores)
    for b, ref in enumerate(refs):
        ranked = sorted(ref.items(), key=lambda item: -item[1])[:n]
        for rank, (path, score) in enumerate(ranked):
            assert tuple(paths[b, rank, : lengths[b]].tolist()) == path
            assert scores[b, rank].item() == pytest.approx(score, rel=1e-5, abs=1e-4)
        assert paths[b, :, lengths[b]:].eq(0).all()
        missing = scores[b, len(ranked):]
        assert torch.isneginf(missing).all() and paths[b, len(ranked):].eq(0).all()
        got = {tuple(paths[b, r, : lengths[b]].tolist()) for r in range(len(ranked))}
        assert len(got) == len(ranked)  # distinct

    # forward-backward and marginals against sums over legal paths.
    log_alpha, log_beta, log_z = crf.forward_backward(emissions, mask)
    marginals = crf.marginals(emissions, mask)
    assert log_alpha.shape == log_beta.shape == marginals.shape == (batch, seq_len, k)
    assert log_z.dtype == marginals.dtype == torch.float32
    tags = torch.zeros(batch, seq_len, dtype=torch.long)
    for b, ref in enumerate(refs):
        length = lengths[b]
        z = logsumexp(list(ref.values()))
        assert log_z[b].item() == pytest.approx(z, rel=1e-5, abs=1e-4)
        expected = torch.zeros(length, k, dtype=torch.float64)
        for path, score in ref.items():
            for t, tag in enumerate(path):
                expected[t, tag] += math.exp(score - z)
        torch.testing.assert_close(marginals[b, :length].double(), expected, rtol=1e-4, atol=1e-5)
        assert marginals[b, length:].eq(0).all()
        alpha, beta = brute_alpha_beta(crf, emissions[b], length, constraints)
        for mine, theirs in ((log_alpha[b, :length], alpha), (log_beta[b, :length], beta)):
            reachable = torch.isfinite(theirs)
            torch.testing.assert_close(mine[reachable].double(), theirs[reachable], rtol=1e-5, atol=1e-4)
            assert (mine[~reachable] < -1e3).all()  # only through disallowed moves: ~zero weight
        tags[b, :length] = torch.tensor(max(ref, key=ref.get))
    torch.testing.assert_close(marginals.sum(2), mask.float(), rtol=0, atol=1e-5)
    # log_z is the NLL's partition function: NLL = log Z - gold score.
    nll = crf(emissions, tags, mask, reduction="none")
    gold = torch.tensor([refs[b][tuple(tags[b, : lengths[b]].tolist())] for b in range(batch)])
    torch.testing.assert_close(nll.double(), log_z.double() - gold, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "kind,scheme",
    [("bio", "bio"), ("bioes", "bioes"), ("none", "bio"), ("none", "bioes"), ("random", "bioes")],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("seq_len", [5, 1])  # 1: a batch of one-word sentences (no transitions at all)
def test_brute_force_span_log_probs(kind, scheme, seed, seq_len):
    rng = random.Random(seed * 7 + len(kind) + len(scheme))
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    labels = BIO_TAGS if scheme == "bio" else BIOES_TAGS
    k, batch = len(labels), 4
    constraints = make_constraints(kind, k, rng)
    cont = continues_matrix(labels, scheme)
    crf = CRF(k, constraints)
    randomise(crf, gen)
    emissions = torch.randn(batch, seq_len, k, generator=gen) * 2
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=(1, seq_len))
    refs = [brute_force(crf, emissions[b], lengths[b], constraints) for b in range(batch)]
    decoded, _ = crf.decode(emissions, mask)
    # Also random legal paths (they have more and longer segments than the decoded ones).
    sampled = torch.zeros(batch, seq_len, dtype=torch.long)
    for b, ref in enumerate(refs):
        sampled[b, : lengths[b]] = torch.tensor(rng.choice(sorted(ref)))
    for paths in (decoded, sampled):
        is_end, start, log_prob = crf.span_log_probs(emissions, mask, paths, cont)
        assert is_end.dtype == torch.bool and start.dtype == torch.long and log_prob.dtype == torch.float32
        for b, ref in enumerate(refs):
            path = paths[b, : lengths[b]].tolist()
            segs = segments(path, cont.tolist())
            ends = {t: s for s, t in segs}
            assert is_end[b].tolist() == [t in ends for t in range(seq_len)]
            for s, t in segs:
                assert start[b, s : t + 1].tolist() == [s] * (t - s + 1)
                expected = brute_span_log_prob(ref, path, s, t, cont.tolist())
                got = log_prob[b, t].item()
                if expected == -math.inf:
                    assert got < -1e3
                else:
                    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4), (b, s, t)
            assert log_prob[b][~is_end[b]].eq(0).all()
        # One pass for both, as the predictor asks: the same tensors as the two separate calls.
        marginals, *spans = crf.posteriors(emissions, mask, paths, cont)
        assert torch.equal(marginals, crf.marginals(emissions, mask))
        for got, want in zip(spans, (is_end, start, log_prob)):
            assert torch.equal(got, want)


def test_span_log_prob_is_exact_span_not_prefix_in_bio():
    # BIO, one type: O, B-A, I-A. Emissions make "B-A" at t=0 certain and I-A vs O at t=1 a coin flip:
    # the exact span (0, 0) then has probability ~1/2, although P(y_0 = B-A) ~ 1.
    labels = ["O", "B-A", "I-A"]
    cont = continues_matrix(labels, "bio")
    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()
    emissions = torch.tensor([[[0.0, 50.0, 0.0], [10.0, 0.0, 10.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    paths = torch.tensor([[1, 0]])
    is_end, start, log_prob = crf.span_log_probs(emissions, mask, paths, cont)
    assert is_end.tolist() == [[True, True]] and start.tolist() == [[0, 1]]
    assert math.exp(log_prob[0, 0].item()) == pytest.approx(0.5, abs=1e-3)
    assert crf.marginals(emissions, mask)[0, 0, 1].item() == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(1, 4),
    seq_len=st.integers(1, 5),
    batch=st.integers(1, 3),
    n=st.integers(1, 6),
    constrained=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.parametrize("impl", DECODERS)
def test_nbest_and_marginals_property(impl, k, seq_len, batch, n, constrained, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    constraints = random_constraints(k, rng) if constrained else None
    crf, emissions, mask, lengths = random_problem(k, constraints, gen, batch, seq_len)
    with decoder(impl):
        paths, scores = crf.nbest(emissions, mask, n)
    marginals = crf.marginals(emissions, mask)
    for b in range(batch):
        ref = brute_force(crf, emissions[b], lengths[b], constraints)
        ranked = sorted(ref.values(), reverse=True)[:n]
        finite = scores[b][torch.isfinite(scores[b])]
        assert len(finite) == len(ranked)
        expected = torch.tensor(ranked, dtype=torch.float64)
        torch.testing.assert_close(finite.double(), expected, rtol=1e-5, atol=1e-4)
        for rank in range(len(ranked)):
            assert tuple(paths[b, rank, : lengths[b]].tolist()) in ref
        z = logsumexp(list(ref.values()))
        expected = torch.zeros(lengths[b], k, dtype=torch.float64)
        for path, score in ref.items():
            for t, tag in enumerate(path):
                expected[t, tag] += math.exp(score - z)
        torch.testing.assert_close(marginals[b, : lengths[b]].double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", DECODERS)
def test_nbest_pads_missing_ranks(impl):
    crf = CRF(5, bioes_constraints(BIOES_TAGS))  # a single token can only be O or S-A
    emissions = torch.randn(3, 2, 5)
    mask = torch.tensor([[True, False], [True, True], [True, True]])
    with decoder(impl):
        paths, scores = crf.nbest(emissions, mask, 6)
    assert torch.isfinite(scores[0, :2]).all() and torch.isneginf(scores[0, 2:]).all()
    assert sorted(paths[0, :2, 0].tolist()) == [0, 4] and paths[0, 2:].eq(0).all()
    # Length 2 under BIOES: OO, OS, SO, SS, BE -> exactly 5 legal paths.
    assert torch.isfinite(scores[1:, :5]).all() and torch.isneginf(scores[1:, 5]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with pytest.raises(ValueError, match="k must be"):
        crf.nbest(emissions, mask, 0)


@pytest.mark.parametrize("impl", DECODERS)
def test_disallowed_tags_get_no_probability(impl):
    gen = torch.Generator().manual_seed(4)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen, scale=3.0)
    emissions = torch.randn(6, 12, 5, generator=gen) * 5
    emissions[..., 2] += 20  # strongly favour I-A everywhere, including where it is illegal
    mask, lengths = random_mask(6, 12, gen, force_lengths=(1, 12))
    marginals = crf.marginals(emissions, mask)
    assert marginals[:, 0, [2, 3]].max() < 1e-6  # no I/E at the start
    for b, length in enumerate(lengths):
        assert marginals[b, length - 1, [1, 2]].max() < 1e-6  # no B/I at the end
    torch.testing.assert_close(marginals.sum(2), mask.float(), rtol=0, atol=1e-5)
    with decoder(impl):
        paths, scores = crf.nbest(emissions, mask, 4)
    for b, length in enumerate(lengths):
        for rank in range(4):
            if torch.isfinite(scores[b, rank]):
                assert legal(paths[b, rank, :length].tolist(), bioes_constraints(BIOES_TAGS))


# --------------------------------------------------------------------------- NLL: matrix form vs log space

@pytest.mark.parametrize("constrained,scale", [(False, 1.0), (False, 10.0), (True, 1.0), (True, 25.0)])
def test_nll_matches_logspace_form_values_and_gradients(constrained, scale):
    gen = torch.Generator().manual_seed(21)
    crf = CRF(5, bioes_constraints(BIOES_TAGS) if constrained else None)
    randomise(crf, gen, scale=2.0)
    emissions = (torch.randn(16, 30, 5, generator=gen) * scale).requires_grad_()
    mask, _ = random_mask(16, 30, gen, force_lengths=(1, 30, 2))
    tags = torch.zeros(16, 30, dtype=torch.long)  # all-O: legal under BIOES
    ours = crf(emissions, tags, mask, reduction="none")
    grads = torch.autograd.grad(ours.sum(), [emissions, *crf.parameters()])
    start, end, trans = crf._scoring_params()
    theirs = log_partition_logspace(emissions, mask, crf) - crf._gold_score(
        emissions.float(), tags, mask, start, end, trans)
    ref_grads = torch.autograd.grad(theirs.sum(), [emissions, *crf.parameters()])
    # NLL = log Z - gold cancels: both float32 forms carry an error relative to log Z, not to the NLL.
    log_z = log_partition_logspace(emissions, mask, crf).detach()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * log_z.abs().max().item())
    for g, r in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


@needs_torchcrf
def test_nll_gradients_match_pytorch_crf():
    gen = torch.Generator().manual_seed(8)
    ref = torchcrf.CRF(9, batch_first=True)
    crf = CRF(9)
    crf.load_state_dict(ref.state_dict())
    emissions = torch.randn(32, 25, 9, generator=gen) * 3
    mask, _ = random_mask(32, 25, gen, force_lengths=(25, 1))
    tags = torch.randint(0, 9, (32, 25), generator=gen)
    e1, e2 = emissions.clone().requires_grad_(), emissions.clone().requires_grad_()
    ours = crf(e1, tags, mask, reduction="sum")
    theirs = -ref(e2, tags, mask, reduction="sum")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-5)
    for name, p in crf.named_parameters():
        torch.testing.assert_close(p.grad, getattr(ref, name).grad, rtol=1e-4, atol=1e-4)


def test_nll_finite_for_extreme_emissions_with_constraints():
    # Emissions with std 60 and strong transitions: beyond the range where the exp-space recursion is
    # exact (prefixes ~150 nats below a step's best are dropped). It must stay finite, never invent
    # mass (log Z <= the exact one), and give finite gradients and marginals.
    gen = torch.Generator().manual_seed(13)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen, scale=5.0)
    emissions = (torch.randn(8, 40, 5, generator=gen) * 60).requires_grad_()
    mask, _ = random_mask(8, 40, gen, force_lengths=(1, 40))
    tags, _ = crf.decode(emissions, mask)
    loss = crf(emissions, tags, mask, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert torch.isfinite(emissions.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in crf.parameters())
    start, end, trans = crf._scoring_params()
    log_z = (loss + crf._gold_score(emissions.float(), tags, mask, start, end, trans)).detach()
    exact = log_partition_logspace(emissions.detach(), mask, crf).detach()
    assert (log_z <= exact + 1e-5 * exact.abs() + 1e-3).all()
    marginals = crf.marginals(emissions, mask)
    assert torch.isfinite(marginals).all()
    torch.testing.assert_close(marginals.sum(2), mask.float(), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- dtypes, compile, memory

def test_new_methods_give_float32_for_bf16_and_under_autocast():
    gen = torch.Generator().manual_seed(17)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen)
    emissions = torch.randn(3, 6, 5, generator=gen).to(torch.bfloat16)
    mask, _ = random_mask(3, 6, gen, force_lengths=(1,))
    cont = continues_matrix(BIOES_TAGS, "bioes")
    paths = crf.decode(emissions, mask)[0]
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            k_paths, k_scores = crf.nbest(emissions, mask, 3)
            alpha, beta, log_z = crf.forward_backward(emissions, mask)
            marginals = crf.marginals(emissions, mask)
            _, _, log_prob = crf.span_log_probs(emissions, mask, paths, cont)
        for x in (k_scores, alpha, beta, log_z, marginals, log_prob):
            assert x.dtype == torch.float32
        assert k_paths.dtype == torch.long
        # Up-cast once, then all float32: same as float32 input holding the same values.
        torch.testing.assert_close(marginals, crf.marginals(emissions.float(), mask))
        torch.testing.assert_close(log_prob, crf.span_log_probs(emissions.float(), mask, paths, cont)[2])
    crf_bf16 = CRF(5).to(torch.bfloat16)
    assert crf_bf16.marginals(emissions, mask).dtype == torch.float32
    assert crf_bf16.nbest(emissions, mask, 2)[1].dtype == torch.float32


@pytest.mark.parametrize("method", ["nbest", "marginals"])
def test_nbest_and_marginals_compile_fullgraph(method):
    ok, reason = compile_available()
    if not ok:
        pytest.skip(reason)
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(6)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen)
    emissions = torch.randn(3, 6, 5, generator=gen)
    mask, _ = random_mask(3, 6, gen, force_lengths=(1, 6))
    if method == "nbest":
        fn = torch.compile(lambda e, m: crf.nbest(e, m, 3), fullgraph=True)
        (paths, scores), (ref_paths, ref_scores) = fn(emissions, mask), crf.nbest(emissions, mask, 3)
        assert torch.equal(paths, ref_paths)
        torch.testing.assert_close(scores, ref_scores)
    else:
        fn = torch.compile(crf.marginals, fullgraph=True)
        torch.testing.assert_close(fn(emissions, mask), crf.marginals(emissions, mask), rtol=1e-5, atol=1e-6)


def test_large_tag_set_memory_stays_linear_in_tags():
    """K=300, T=200, B=4: one (B, T, K, K) float32 tensor would be 288 MB. Run in a fresh process so
    that its peak RSS reflects only this work (pytest's own peak is whatever earlier tests left)."""
    script = textwrap.dedent(
        """
        import resource, sys, torch
        sys.path.insert(0, sys.argv[1])
        from ner_toolkit.model.crf import CRF
        torch.manual_seed(0)
        crf = CRF(300)
        small = torch.randn(4, 3, 300)
        crf.decode(small, torch.ones(4, 3, dtype=torch.bool))  # warm up allocator and kernels
        crf.nbest(small, torch.ones(4, 3, dtype=torch.bool), 3)
        crf.marginals(small, torch.ones(4, 3, dtype=torch.bool))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        em = torch.randn(4, 200, 300)
        mask = torch.arange(200) < torch.tensor([[200], [150], [1], [37]])
        paths, _ = crf.decode(em, mask)
        from ner_toolkit.model.crf.viterbi import kbest, viterbi  # the PyTorch ones too (CUDA, torch.compile)
        assert torch.equal(viterbi(*crf._inference_inputs(em, mask))[0], paths)
        k_paths, _ = crf.nbest(em, mask, 3)
        assert torch.equal(kbest(*crf._inference_inputs(em, mask), 3)[0], k_paths)
        marg = crf.marginals(em, mask)
        assert torch.equal(k_paths[:, 0], paths)
        assert torch.allclose(marg.sum(2), mask.float(), atol=1e-4)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        """
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    growth_mb = float(result.stdout.strip().splitlines()[-1])
    assert growth_mb < 120, f"peak RSS grew by {growth_mb:.0f} MB"
