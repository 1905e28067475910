"""Brute-force references and shared helpers for the CRF tests (enumerate every path of small cases)."""

import contextlib
import itertools
import math
from unittest import mock

import pytest
import torch

from ner_toolkit.model.crf import CRF, native

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



try:
    import torchcrf
except ImportError:  # pragma: no cover
    torchcrf = None

needs_torchcrf = pytest.mark.skipif(torchcrf is None, reason="pytorch-crf (torchcrf) not installed")



#: The two Viterbi implementations CRF.decode picks between on the CPU: the compiled C loop and PyTorch.
DECODERS = ["native", "torch"]


@contextlib.contextmanager
def decoder(name):
    """Make ``CRF.decode`` use one implementation (``native`` skips where no C compiler could build it)."""
    if name == "native":
        if native.library() is None:
            pytest.skip("the C Viterbi could not be built here (no C compiler)")
        yield
    else:
        with mock.patch.object(native, "usable", lambda em: False):
            yield


def compile_available():
    try:
        # Probe the toolchain with a trivial function (not the CRF), so that a graph break in
        # CRF.decode fails the test below instead of skipping it.
        fn = torch.compile(lambda x: torch.sin(x) + 1, fullgraph=True)
        fn(torch.randn(3))
        return True, ""
    except Exception as exc:  # pragma: no cover - depends on the toolchain
        return False, f"torch.compile unavailable here: {type(exc).__name__}: {str(exc)[:200]}"


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


def brute_span_log_prob(ref, path, s, t, cont):
    """log P(y[s..t] == path[s..t] and y[t+1] does not continue path[t]) over legal paths."""
    z = logsumexp(list(ref.values()))
    hits = [
        score
        for y, score in ref.items()
        if y[s : t + 1] == tuple(path[s : t + 1]) and (t + 1 == len(y) or not cont[path[t]][y[t + 1]])
    ]
    return logsumexp(hits) - z if hits else -math.inf


def log_partition_logspace(emissions, mask, crf):
    """The textbook log-space forward algorithm (one (B, K, K) logsumexp per step), float32."""
    start, end, trans = crf._scoring_params()
    em = emissions.float()
    alpha = start + em[:, 0]
    for t in range(1, em.size(1)):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans + em[:, t].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def random_problem(k, constraints, gen, batch, seq_len, scale=1.0, force_lengths=()):
    """A CRF with random parameters, random emissions and random lengths: (crf, emissions, mask, lengths)."""
    crf = CRF(k, constraints)
    randomise(crf, gen)  # random transitions, not the near-zero init
    emissions = torch.randn(batch, seq_len, k, generator=gen) * scale
    mask, lengths = random_mask(batch, seq_len, gen, force_lengths=force_lengths)
    return crf, emissions, mask, lengths
