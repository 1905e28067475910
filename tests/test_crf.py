"""Tests for ner_toolkit.model.crf: brute-force reference, pytorch-crf parity, constraints, dtypes, compile,
n-best, marginals, span probabilities and memory."""

import itertools
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_toolkit.model.crf import CRF

# --------------------------------------------------------------------------- helpers

BIO_TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]
BIOES_TAGS = ["O", "B-A", "I-A", "E-A", "S-A"]


def bio_constraints(tags):
    """BIO: I-X only after B-X or I-X (also not at the start); anything may end."""

    def ok(prev, cur):
        if cur.startswith("I-"):
            return prev is not None and prev != "O" and prev[2:] == cur[2:]
        return True

    start = [ok(None, t) for t in tags]
    end = [True] * len(tags)
    trans = [[ok(a, b) for b in tags] for a in tags]
    return start, end, trans


def bioes_constraints(tags):
    """BIOES: B/I must be followed by I/E of the same type; E/S/O by O/B/S."""

    def open_(t):
        return t[0] in "BI"

    def ok(prev, cur):
        if prev is None or not open_(prev):
            return cur[0] in "OBS"
        return cur[0] in "IE" and cur[2:] == prev[2:]

    start = [ok(None, t) for t in tags]
    end = [not open_(t) for t in tags]
    trans = [[ok(a, b) for b in tags] for a in tags]
    return start, end, trans


def random_constraints(k, rng):
    """Random allowed-sets with tag 0 always usable (start, 0->0, end), so every length has a legal path."""
    start = [rng.random() < 0.6 for _ in range(k)]
    end = [rng.random() < 0.6 for _ in range(k)]
    trans = [[rng.random() < 0.6 for _ in range(k)] for _ in range(k)]
    start[0] = end[0] = trans[0][0] = True
    return start, end, trans


def randomise(crf, gen, scale=1.0):
    with torch.no_grad():
        for p in (crf.start_transitions, crf.end_transitions, crf.transitions):
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def random_mask(batch, seq_len, gen, force_lengths=()):
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=gen)
    for i, length in enumerate(force_lengths):
        lengths[i] = length
    mask = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
    return mask, lengths.tolist()


def legal(path, constraints):
    if constraints is None:
        return True
    start, end, trans = constraints
    if not start[path[0]] or not end[path[-1]]:
        return False
    return all(trans[a][b] for a, b in zip(path, path[1:]))


def path_score(path, em_row, crf):
    """Unpenalised float64 score of one path (em_row: (L, K))."""
    s = crf.start_transitions.double()[path[0]] + crf.end_transitions.double()[path[-1]]
    s = s + sum(em_row[t, tag].double() for t, tag in enumerate(path))
    s = s + sum(crf.transitions.double()[a, b] for a, b in zip(path, path[1:]))
    return float(s.detach())


def brute_force(crf, em_row, length, constraints):
    """All legal paths of `length` with their scores (float64)."""
    k = em_row.size(-1)
    out = {}
    for path in itertools.product(range(k), repeat=length):
        if legal(path, constraints):
            out[path] = path_score(path, em_row[:length], crf)
    assert out, "test setup must leave at least one legal path"
    return out


def logsumexp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


# --------------------------------------------------------------------------- brute force

CASES = [
    ("none", 1, 4),
    ("none", 3, 3),
    ("none", 5, 6),
    ("random", 2, 5),
    ("random", 4, 6),
    ("random", 5, 5),
    ("bio", 5, 6),
    ("bioes", 5, 6),
]


def make_constraints(kind, k, rng):
    if kind == "none":
        return None
    if kind == "random":
        return random_constraints(k, rng)
    if kind == "bio":
        return bio_constraints(BIO_TAGS)
    return bioes_constraints(BIOES_TAGS)


@pytest.mark.parametrize("kind,k,seq_len", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_brute_force_decode_and_nll(kind, k, seq_len, seed):
    rng = random.Random(seed * 100 + k * 10 + seq_len)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    constraints = make_constraints(kind, k, rng)
    crf = CRF(k, constraints)
    randomise(crf, gen)
    batch = 4
    emissions = torch.randn(batch, seq_len, k, generator=gen) * 2
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=(1, seq_len))

    refs = [brute_force(crf, emissions[b], lengths[b], constraints) for b in range(batch)]

    # Decode: exactly the brute-force argmax and its score.
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
def test_wide_and_narrow_batches_decode_alike(kind):
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
    paths, scores = crf.decode(emissions, mask)
    k_paths, k_scores = crf.nbest(emissions, mask, 2)
    assert torch.equal(k_paths[:, 0], paths) and torch.equal(k_scores[:, 0], scores)
    for b in range(batch):
        single_paths, single_scores = crf.decode(emissions[b : b + 1], mask[b : b + 1])
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
def test_brute_force_property(k, seq_len, batch, constrained, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    constraints = random_constraints(k, rng) if constrained else None
    crf = CRF(k, constraints)
    randomise(crf, gen)
    emissions = torch.randn(batch, seq_len, k, generator=gen)
    mask, lengths = random_mask(batch, seq_len, gen)
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

try:
    import torchcrf
except ImportError:  # pragma: no cover
    torchcrf = None

needs_torchcrf = pytest.mark.skipif(torchcrf is None, reason="pytorch-crf (torchcrf) not installed")


@needs_torchcrf
@pytest.mark.parametrize("seed", range(5))
def test_parity_with_pytorch_crf(seed):
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
def test_decoded_paths_are_legal_on_long_sequences(seed, scheme):
    tags = BIO_TAGS if scheme == "bio" else BIOES_TAGS
    constraints = bio_constraints(tags) if scheme == "bio" else bioes_constraints(tags)
    gen = torch.Generator().manual_seed(seed)
    crf = CRF(len(tags), constraints)
    randomise(crf, gen, scale=3.0)  # strong parameters that often favour illegal moves
    emissions = torch.randn(5, 30, len(tags), generator=gen) * 5
    mask, lengths = random_mask(5, 30, gen, force_lengths=(1, 30))
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


def test_single_time_step_batch():
    crf = CRF(3)
    emissions = torch.randn(2, 1, 3)
    mask = torch.ones(2, 1, dtype=torch.bool)
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

def _compile_available():
    try:
        # Probe the toolchain with a trivial function (not the CRF), so that a graph break in
        # CRF.decode fails the test below instead of skipping it.
        fn = torch.compile(lambda x: torch.sin(x) + 1, fullgraph=True)
        fn(torch.randn(3))
        return True, ""
    except Exception as exc:  # pragma: no cover - depends on the toolchain
        return False, f"torch.compile unavailable here: {type(exc).__name__}: {str(exc)[:200]}"


def test_decode_compiles_fullgraph():
    ok, reason = _compile_available()
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


# --------------------------------------------------------------------------- n-best, marginals, spans

def continues_matrix(labels, scheme):
    """continues[i][j]: label j right after label i extends i's segment (built from the label strings)."""
    inside = {"bio": "I", "bioes": "IE"}[scheme]

    def cont(a, b):
        return a[0] in "BI" and b[0] in inside and a[2:] == b[2:]

    return torch.tensor([[cont(a, b) for b in labels] for a in labels], dtype=torch.bool)


def segments(path, cont):
    """Maximal segments (s, t) of a tag sequence under `cont`."""
    out, s = [], 0
    for t in range(1, len(path) + 1):
        if t == len(path) or not cont[path[t - 1]][path[t]]:
            out.append((s, t - 1))
            s = t
    return out


def brute_alpha_beta(crf, em_row, length, constraints):
    """log alpha / log beta over legal prefixes / suffixes (float64, -inf where none is legal)."""
    k = em_row.size(-1)
    params = (crf.start_transitions, crf.end_transitions, crf.transitions)
    start, end, trans = (p.double().detach() for p in params)
    ok_start, ok_end, ok_trans = constraints if constraints is not None else (
        [True] * k, [True] * k, [[True] * k] * k)
    em = em_row.double()
    alpha = torch.full((length, k), -math.inf, dtype=torch.float64)
    beta = torch.full((length, k), -math.inf, dtype=torch.float64)
    for t in range(length):
        for prefix in itertools.product(range(k), repeat=t + 1):
            if not ok_start[prefix[0]] or not all(ok_trans[a][b] for a, b in zip(prefix, prefix[1:])):
                continue
            s = start[prefix[0]] + sum(em[u, y] for u, y in enumerate(prefix))
            s = s + sum(trans[a, b] for a, b in zip(prefix, prefix[1:]))
            alpha[t, prefix[-1]] = torch.logaddexp(alpha[t, prefix[-1]], torch.as_tensor(s).double())
        for suffix in itertools.product(range(k), repeat=length - t):
            if not ok_end[suffix[-1]] or not all(ok_trans[a][b] for a, b in zip(suffix, suffix[1:])):
                continue
            s = end[suffix[-1]] + sum(em[t + 1 + u, y] for u, y in enumerate(suffix[1:]))
            s = s + sum(trans[a, b] for a, b in zip(suffix, suffix[1:]))
            beta[t, suffix[0]] = torch.logaddexp(beta[t, suffix[0]], torch.as_tensor(s).double())
    return alpha, beta


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
def test_brute_force_nbest_marginals_forward_backward(kind, k, seq_len, seed):
    rng = random.Random(seed * 1000 + k * 10 + seq_len)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    constraints = make_constraints(kind, k, rng)
    crf = CRF(k, constraints)
    randomise(crf, gen)  # random transitions, not the near-zero init
    batch = 4
    emissions = torch.randn(batch, seq_len, k, generator=gen) * 2
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=(1, seq_len, 2))
    refs = [brute_force(crf, emissions[b], lengths[b], constraints) for b in range(batch)]

    # n-best: the top-n of the enumeration of legal (distinct) paths, best first; -inf beyond it.
    n = 7
    paths, scores = crf.nbest(emissions, mask, n)
    assert paths.shape == (batch, n, seq_len) and paths.dtype == torch.long
    assert scores.shape == (batch, n) and scores.dtype == torch.float32
    best_paths, best_scores = crf.decode(emissions, mask)
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


def brute_span_log_prob(ref, path, s, t, cont):
    """log P(y[s..t] == path[s..t] and y[t+1] does not continue path[t]) over legal paths."""
    z = logsumexp(list(ref.values()))
    hits = [
        score
        for y, score in ref.items()
        if y[s : t + 1] == tuple(path[s : t + 1]) and (t + 1 == len(y) or not cont[path[t]][y[t + 1]])
    ]
    return logsumexp(hits) - z if hits else -math.inf


@pytest.mark.parametrize(
    "kind,scheme",
    [("bio", "bio"), ("bioes", "bioes"), ("none", "bio"), ("none", "bioes"), ("random", "bioes")],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brute_force_span_log_probs(kind, scheme, seed):
    rng = random.Random(seed * 7 + len(kind) + len(scheme))
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    labels = BIO_TAGS if scheme == "bio" else BIOES_TAGS
    k, seq_len, batch = len(labels), 5, 4
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
def test_nbest_and_marginals_property(k, seq_len, batch, n, constrained, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    constraints = random_constraints(k, rng) if constrained else None
    crf = CRF(k, constraints)
    randomise(crf, gen)
    emissions = torch.randn(batch, seq_len, k, generator=gen)
    mask, lengths = random_mask(batch, seq_len, gen)
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


def test_nbest_pads_missing_ranks():
    crf = CRF(5, bioes_constraints(BIOES_TAGS))  # a single token can only be O or S-A
    emissions = torch.randn(3, 2, 5)
    mask = torch.tensor([[True, False], [True, True], [True, True]])
    paths, scores = crf.nbest(emissions, mask, 6)
    assert torch.isfinite(scores[0, :2]).all() and torch.isneginf(scores[0, 2:]).all()
    assert sorted(paths[0, :2, 0].tolist()) == [0, 4] and paths[0, 2:].eq(0).all()
    # Length 2 under BIOES: OO, OS, SO, SS, BE -> exactly 5 legal paths.
    assert torch.isfinite(scores[1:, :5]).all() and torch.isneginf(scores[1:, 5]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with pytest.raises(ValueError, match="k must be"):
        crf.nbest(emissions, mask, 0)


def test_disallowed_tags_get_no_probability():
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
    paths, scores = crf.nbest(emissions, mask, 4)
    for b, length in enumerate(lengths):
        for rank in range(4):
            if torch.isfinite(scores[b, rank]):
                assert legal(paths[b, rank, :length].tolist(), bioes_constraints(BIOES_TAGS))


# --------------------------------------------------------------------------- NLL: matrix form vs log space

def log_partition_logspace(emissions, mask, crf):
    """The textbook log-space forward algorithm (one (B, K, K) logsumexp per step), float32."""
    start, end, trans = crf._scoring_params()
    em = emissions.float()
    alpha = start + em[:, 0]
    for t in range(1, em.size(1)):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans + em[:, t].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


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
    ok, reason = _compile_available()
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
        k_paths, _ = crf.nbest(em, mask, 3)
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
