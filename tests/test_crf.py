"""CRF NLL and Viterbi: brute-force reference, pytorch-crf parity, constraints, dtypes, compile."""

import random

import pytest
import torch
from crf_reference import (
    BIO_TAGS,
    BIOES_TAGS,
    CASES,
    DECODERS,
    bio_constraints,
    bioes_constraints,
    brute_force,
    compile_available,
    continues_matrix,
    decoder,
    legal,
    logsumexp,
    make_constraints,
    needs_torchcrf,
    random_constraints,
    random_mask,
    random_problem,
    randomise,
    torchcrf,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.model.crf import CRF


@pytest.mark.parametrize("kind,k,seq_len", CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("impl", DECODERS)
def test_brute_force_decode_and_nll(kind, k, seq_len, seed, impl):
    rng = random.Random(seed * 100 + k * 10 + seq_len)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    constraints = make_constraints(kind, k, rng)
    batch = 4
    crf, emissions, mask, lengths = random_problem(k, constraints, gen, batch, seq_len, 2.0, (1, seq_len))

    refs = [brute_force(crf, emissions[b], lengths[b], constraints) for b in range(batch)]

    # Decode: exactly the brute-force argmax and its score.
    with decoder(impl):
        paths, scores = crf.decode(emissions, mask)
    assert paths.dtype == torch.long and scores.dtype == torch.float32
    assert paths.shape == (batch, seq_len) and scores.shape == (batch,)
    for b, ref in enumerate(refs):
        best = max(ref, key=ref.get)
        assert tuple(paths[b, : lengths[b]].tolist()) == best
        assert paths[b, lengths[b] :].eq(0).all()
        assert scores[b].item() == pytest.approx(ref[best], rel=1e-5, abs=1e-4)

    # NLL of random legal gold paths: -(gold - logsumexp over legal paths).
    tags = torch.zeros(batch, seq_len, dtype=torch.long)
    expected = []
    for b, ref in enumerate(refs):
        gold = rng.choice(sorted(ref))
        tags[b, : lengths[b]] = torch.tensor(gold)
        expected.append(logsumexp(list(ref.values())) - ref[gold])
    nll = crf(emissions, tags, mask, reduction="none")
    assert nll.dtype == torch.float32
    torch.testing.assert_close(nll.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["none", "bioes", "random"])
@pytest.mark.parametrize("impl", DECODERS)
def test_wide_and_narrow_batches_decode_alike(kind, impl):
    # Batches of >= 16 sentences run batch-last, smaller ones batch-first: both must give the
    # brute-force best path, the same scores, and nbest's rank 0.
    rng = random.Random(len(kind))
    gen = torch.Generator().manual_seed(31)
    k, seq_len, batch = 5, 5, 24
    constraints = make_constraints(kind, k, rng)
    crf = CRF(k, constraints)
    randomise(crf, gen)
    emissions = torch.randn(batch, seq_len, k, generator=gen) * 2
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=(1, seq_len))
    with decoder(impl):
        paths, scores = crf.decode(emissions, mask)
        singles = [crf.decode(emissions[b : b + 1], mask[b : b + 1]) for b in range(batch)]
    k_paths, k_scores = crf.nbest(emissions, mask, 2)
    assert torch.equal(k_paths[:, 0], paths) and torch.equal(k_scores[:, 0], scores)
    for b, (single_paths, single_scores) in enumerate(singles):
        assert torch.equal(single_paths[0], paths[b]) and torch.equal(single_scores[0], scores[b])
        if b < 8:
            ref = brute_force(crf, emissions[b], lengths[b], constraints)
            assert tuple(paths[b, : lengths[b]].tolist()) == max(ref, key=ref.get)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    seq_len=st.integers(1, 5),
    batch=st.integers(1, 3),
    constrained=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.parametrize("impl", DECODERS)
def test_brute_force_property(impl, k, seq_len, batch, constrained, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    constraints = random_constraints(k, rng) if constrained else None
    crf, emissions, mask, lengths = random_problem(k, constraints, gen, batch, seq_len)
    with decoder(impl):
        paths, scores = crf.decode(emissions, mask)
    tags = torch.zeros(batch, seq_len, dtype=torch.long)
    expected = []
    for b in range(batch):
        ref = brute_force(crf, emissions[b], lengths[b], constraints)
        best = max(ref, key=ref.get)
        assert tuple(paths[b, : lengths[b]].tolist()) == best
        assert scores[b].item() == pytest.approx(ref[best], rel=1e-5, abs=1e-4)
        gold = rng.choice(sorted(ref))
        tags[b, : lengths[b]] = torch.tensor(gold)
        expected.append(logsumexp(list(ref.values())) - ref[gold])
    nll = crf(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(nll.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- pytorch-crf parity


@needs_torchcrf
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("impl", DECODERS)
def test_parity_with_pytorch_crf(seed, impl):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    k, batch, seq_len = 7, (6, 40)[seed % 2], 11  # narrow and wide batches take different layouts
    ref = torchcrf.CRF(k, batch_first=True)
    crf = CRF(k)
    crf.load_state_dict(ref.state_dict())
    emissions = torch.randn(batch, seq_len, k, generator=gen) * 3
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=(seq_len, 1))
    tags = torch.randint(0, k, (batch, seq_len), generator=gen)

    for reduction in ("sum", "none", "mean", "token_mean"):
        ours = crf(emissions, tags, mask, reduction=reduction)
        theirs = -ref(emissions, tags, mask, reduction=reduction)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    with decoder(impl):
        paths, _ = crf.decode(emissions, mask)
    their_paths = ref.decode(emissions, mask)
    for b in range(batch):
        assert paths[b, : lengths[b]].tolist() == their_paths[b]
        assert paths[b, lengths[b] :].eq(0).all()


@needs_torchcrf
def test_state_dict_has_pytorch_crf_keys_and_no_constraint_buffers():
    constraints = bioes_constraints(BIOES_TAGS)
    crf = CRF(5, constraints)
    assert set(crf.state_dict()) == {"start_transitions", "end_transitions", "transitions"}
    ref = torchcrf.CRF(5, batch_first=True)
    crf.load_state_dict(ref.state_dict())  # strict
    assert crf.constrained
    assert torch.equal(crf.transitions, ref.transitions)


def test_init_is_uniform_like_pytorch_crf():
    crf = CRF(50)
    for p in (crf.start_transitions, crf.end_transitions, crf.transitions):
        assert p.min() >= -0.1 and p.max() <= 0.1 and p.std() > 0.02


# --------------------------------------------------------------------------- constraints

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scheme=st.sampled_from(["bio", "bioes"]))
@pytest.mark.parametrize("impl", DECODERS)
def test_decoded_paths_are_legal_on_long_sequences(impl, seed, scheme):
    tags = BIO_TAGS if scheme == "bio" else BIOES_TAGS
    constraints = bio_constraints(tags) if scheme == "bio" else bioes_constraints(tags)
    gen = torch.Generator().manual_seed(seed)
    crf = CRF(len(tags), constraints)
    randomise(crf, gen, scale=3.0)  # strong parameters that often favour illegal moves
    emissions = torch.randn(5, 30, len(tags), generator=gen) * 5
    mask, lengths = random_mask(5, 30, gen, force_lengths=(1, 30))
    with decoder(impl):
        paths, _ = crf.decode(emissions, mask)
    for b in range(5):
        assert legal(paths[b, : lengths[b]].tolist(), constraints)


def test_constraints_do_not_modify_parameters():
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    before = {n: p.detach().clone() for n, p in crf.named_parameters()}
    emissions = torch.randn(2, 4, 5)
    mask = torch.ones(2, 4, dtype=torch.bool)
    crf(emissions, torch.zeros(2, 4, dtype=torch.long), mask)
    crf.decode(emissions, mask)
    for n, p in crf.named_parameters():
        assert torch.equal(p, before[n])


def test_gradients_finite_with_constraints():
    gen = torch.Generator().manual_seed(3)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen)
    emissions = (torch.randn(4, 9, 5, generator=gen) * 4).requires_grad_()
    mask, _ = random_mask(4, 9, gen, force_lengths=(1, 9))
    tags = torch.zeros(4, 9, dtype=torch.long)  # all-O is legal under BIOES
    loss = crf(emissions, tags, mask, reduction="token_mean")
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emissions.grad).all()
    for p in crf.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # Disallowed transitions carry no probability mass, hence (almost) no gradient.
    disallowed = ~torch.tensor(bioes_constraints(BIOES_TAGS)[2])
    assert crf.transitions.grad[disallowed].abs().max() < 1e-6


def test_unreachable_tag_gives_finite_loss_and_gradients():
    # Tag 2 can never be used at all: every row of its logsumexp is fully penalised.
    k = 3
    start = [True, True, False]
    end = [True, True, False]
    trans = [[True, True, False], [True, True, False], [False, False, False]]
    crf = CRF(k, (start, end, trans))
    emissions = torch.randn(2, 5, k, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    loss = crf(emissions, torch.zeros(2, 5, dtype=torch.long), mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emissions.grad).all()
    paths, _ = crf.decode(emissions, mask)
    assert not paths.eq(2).any()


def test_constraint_shape_errors():
    with pytest.raises(ValueError, match="trans_allowed"):
        CRF(3, ([True] * 3, [True] * 3, [[True] * 2] * 3))
    with pytest.raises(ValueError, match="start_allowed"):
        CRF(3, ([True] * 2, [True] * 3, [[True] * 3] * 3))
    with pytest.raises(ValueError):
        CRF(3, ([True] * 3, [True] * 3))
    with pytest.raises(ValueError):
        CRF(0)


# --------------------------------------------------------------------------- reductions, padding, dtypes

def test_reductions_and_padding_values_ignored():
    gen = torch.Generator().manual_seed(7)
    crf = CRF(4)
    emissions = torch.randn(3, 6, 4, generator=gen)
    mask, _ = random_mask(3, 6, gen, force_lengths=(6, 2, 1))
    tags = torch.randint(0, 4, (3, 6), generator=gen)
    none = crf(emissions, tags, mask, reduction="none")
    assert none.shape == (3,)
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="sum"), none.sum())
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="mean"), none.mean())
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="token_mean"), none.sum() / mask.sum())
    torch.testing.assert_close(crf(emissions, tags, mask), none.mean())  # default is mean
    assert (none > 0).all()  # a loss: NLL is positive
    # Padded positions may hold anything (e.g. -100 as an ignore index) and change nothing.
    noisy_tags = tags.masked_fill(~mask, -100)
    noisy_em = emissions.masked_fill(~mask.unsqueeze(2), 1e3)
    torch.testing.assert_close(crf(noisy_em, noisy_tags, mask, reduction="none"), none)
    p1, s1 = crf.decode(emissions, mask)
    p2, s2 = crf.decode(noisy_em, mask)
    assert torch.equal(p1, p2)
    torch.testing.assert_close(s1, s2)
    with pytest.raises(ValueError, match="reduction"):
        crf(emissions, tags, mask, reduction="avg")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_emissions_give_float32(dtype):
    gen = torch.Generator().manual_seed(11)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    emissions = torch.randn(3, 7, 5, generator=gen).to(dtype)
    mask, _ = random_mask(3, 7, gen)
    tags = torch.zeros(3, 7, dtype=torch.long)
    nll = crf(emissions, tags, mask, reduction="none")
    paths, scores = crf.decode(emissions, mask)
    assert nll.dtype == torch.float32 and scores.dtype == torch.float32
    assert paths.dtype == torch.long
    # Same as running on the up-cast emissions.
    torch.testing.assert_close(nll, crf(emissions.float(), tags, mask, reduction="none"))
    assert torch.equal(paths, crf.decode(emissions.float(), mask)[0])
    # Also under autocast, and with a bf16 module.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert crf(emissions, tags, mask).dtype == torch.float32
        assert crf.decode(emissions, mask)[1].dtype == torch.float32
    crf_bf16 = CRF(5).to(torch.bfloat16)
    assert crf_bf16(emissions, tags, mask).dtype == torch.float32


def test_decode_outputs_on_input_device_and_zero_padded():
    crf = CRF(4)
    emissions = torch.randn(3, 5, 4) + 10  # large positive so tag 0 is no default winner
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    paths, scores = crf.decode(emissions, mask)
    assert paths.device == emissions.device and scores.device == emissions.device
    assert paths[~mask].eq(0).all()
    assert paths.shape == (3, 5) and scores.shape == (3,)


@pytest.mark.parametrize("impl", DECODERS)
def test_single_time_step_batch(impl):
    crf = CRF(3)
    emissions = torch.randn(2, 1, 3)
    mask = torch.ones(2, 1, dtype=torch.bool)
    with decoder(impl):
        paths, scores = crf.decode(emissions, mask)
    expected = emissions[:, 0] + crf.start_transitions + crf.end_transitions
    assert torch.equal(paths[:, 0], expected.argmax(1))
    torch.testing.assert_close(scores, expected.max(1).values)


# --------------------------------------------------------------------------- validation

def test_validation_errors():
    crf = CRF(4)
    em = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3, dtype=torch.bool)
    tags = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="3-D"):
        crf.decode(torch.randn(2, 3), mask)
    with pytest.raises(ValueError, match="num_tags=4"):
        crf.decode(torch.randn(2, 3, 5), mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        crf.decode(em, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="tags must have shape"):
        crf(em, torch.zeros(3, 3, dtype=torch.long), mask)
    with pytest.raises(ValueError, match="integer"):
        crf(em, tags.float(), mask)
    bad = mask.clone()
    bad[1, 0] = False
    with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
        crf(em, tags, bad)
    with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
        crf.decode(em, bad)
    with pytest.raises(ValueError, match="at least one time step"):
        crf.decode(torch.randn(2, 0, 4), torch.ones(2, 0, dtype=torch.bool))
    for call in (lambda m: crf.nbest(em, m, 2), lambda m: crf.marginals(em, m),
                 lambda m: crf.forward_backward(em, m)):
        with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
            call(bad)
    cont = torch.zeros(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="paths must have shape"):
        crf.span_log_probs(em, mask, tags[:, :2], cont)
    with pytest.raises(ValueError, match="continues must be"):
        crf.span_log_probs(em, mask, tags, cont[:3])


# --------------------------------------------------------------------------- torch.compile


def test_decode_compiles_fullgraph():
    ok, reason = compile_available()
    if not ok:
        pytest.skip(reason)
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen)
    compiled = torch.compile(crf.decode, fullgraph=True)
    emissions = torch.randn(4, 8, 5, generator=gen)
    mask, _ = random_mask(4, 8, gen, force_lengths=(1, 8))
    paths, scores = compiled(emissions, mask)
    ref_paths, ref_scores = crf.decode(emissions, mask)
    assert torch.equal(paths, ref_paths)
    torch.testing.assert_close(scores, ref_scores)


# --------------------------------------------------------------------------- accelerator (skipped on CPU-only hosts)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_nothing_syncs():
    gen = torch.Generator().manual_seed(9)
    crf = CRF(5, bioes_constraints(BIOES_TAGS))
    randomise(crf, gen)
    emissions = torch.randn(8, 20, 5, generator=gen)
    mask, _ = random_mask(8, 20, gen, force_lengths=(1, 20))
    tags = torch.zeros(8, 20, dtype=torch.long)
    ref_paths, ref_scores = crf.decode(emissions, mask)
    ref_nll = crf(emissions, tags, mask, reduction="none")
    cont = continues_matrix(BIOES_TAGS, "bioes")
    ref_k = crf.nbest(emissions, mask, 3)
    ref_marg = crf.marginals(emissions, mask)
    ref_spans = crf.span_log_probs(emissions, mask, ref_paths, cont)
    gpu = crf.cuda()
    em_c, mask_c, tags_c = emissions.cuda(), mask.cuda(), tags.cuda()
    paths, scores = gpu.decode(em_c, mask_c)
    assert paths.device.type == "cuda" and scores.device.type == "cuda"
    assert torch.equal(paths.cpu(), ref_paths)
    torch.testing.assert_close(scores.cpu(), ref_scores, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gpu(em_c, tags_c, mask_c, reduction="none").cpu(), ref_nll, rtol=1e-5, atol=1e-4)
    # No method synchronises with the host (the mask[:, 0] guard only runs for CPU tensors).
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        em_grad = em_c.clone().requires_grad_()
        gpu(em_grad, tags_c, mask_c).backward()
        paths = gpu.decode(em_c, mask_c)[0]
        k_paths, k_scores = gpu.nbest(em_c, mask_c, 3)
        marg = gpu.marginals(em_c, mask_c)
        alpha, beta, log_z = gpu.forward_backward(em_c, mask_c)
        spans = gpu.span_log_probs(em_c, mask_c, paths, cont.cuda())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(k_paths.cpu(), ref_k[0])
    torch.testing.assert_close(k_scores.cpu(), ref_k[1], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(marg.cpu(), ref_marg, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(em_grad.grad).all() and torch.isfinite(log_z).all()
    for got, want in zip(spans, ref_spans):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)


