"""Partial-label NLL against brute-force enumeration of every legal path, in every user scheme."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from ner_toolkit.data.schemes import allowed_transitions, convert, labels_for_types, reading_tables
from ner_toolkit.model.crf import CRF
from ner_toolkit.model.crf.partial import with_unknown_row

CASES = [("BIOES", "IOB1"), ("BIOES", "BIO"), ("BIOES", "BIOES"), ("BMES", "BMES"), ("BIO", "IOB1"),
         ("BIO", "BIO"), ("BILOU", "BILOU"), ("BILOU", "IOB1"), ("BIOES", "BILOU"), ("BILOU", "BMES")]


def legal_paths(labels, internal, length):
    start, end, trans = allowed_transitions(labels, internal)
    for path in itertools.product(range(len(labels)), repeat=length):
        if start[path[0]] and end[path[-1]] and all(trans[a][b] for a, b in zip(path, path[1:])):
            yield path


def path_score(crf, em, path):
    s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    s = s + sum(em[t, k] for t, k in enumerate(path))
    return s + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))


def make_case(internal, user, seed, batch=6, max_len=4):
    rng = random.Random(seed)
    labels = labels_for_types(["A", "B"], internal)
    user_tags, first, pair = reading_tables(labels, internal, user)
    unknown = len(user_tags)
    lengths = [rng.randint(1, max_len) for _ in range(batch)]
    lengths[0] = max_len
    gold, known = [], []
    for b, length in enumerate(lengths):
        path = rng.choice(list(legal_paths(labels, internal, length)))
        tags = convert([labels[k] for k in path], internal, user)
        keep = [rng.random() < 0.5 for _ in range(length)]
        if b == 0:
            keep = [True] * length  # fully labelled
        if b == 1:
            keep = [False] * length  # nothing known
        gold.append(list(path) + [0] * (max_len - length))
        known.append([user_tags.index(t) if k else unknown for t, k in zip(tags, keep)]
                     + [unknown] * (max_len - length))
    g = torch.Generator().manual_seed(seed)
    crf = CRF(len(labels), allowed_transitions(labels, internal))
    with torch.no_grad():
        for p in (crf.start_transitions, crf.end_transitions, crf.transitions):
            p.copy_(torch.randn(p.shape, generator=g))
    em = torch.randn(batch, max_len, len(labels), generator=g, requires_grad=True)
    mask = torch.tensor([[t < n for t in range(max_len)] for n in lengths])
    tables = (with_unknown_row(torch.tensor(first)), with_unknown_row(torch.tensor(pair)))
    return labels, user_tags, crf, em, mask, torch.tensor(known), torch.tensor(gold), tables, lengths


@pytest.mark.parametrize("internal,user", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_partial_nll_equals_brute_force(internal, user, seed):
    labels, user_tags, crf, em, mask, known, gold, tables, lengths = make_case(internal, user, seed)
    got = crf.partial_nll(em, known, mask, *tables, reduction="none").detach()
    unknown = len(user_tags)
    for b, length in enumerate(lengths):
        every, agreeing = [], []
        for path in legal_paths(labels, internal, length):
            score = float(path_score(crf, em[b].detach(), path).detach())
            every.append(score)
            read = convert([labels[k] for k in path], internal, user)
            if all(u == unknown or user_tags[u] == read[t] for t, u in enumerate(known[b, :length].tolist())):
                agreeing.append(score)
        want = math.log(sum(math.exp(s) for s in every)) - math.log(sum(math.exp(s) for s in agreeing))
        assert float(got[b]) == pytest.approx(want, abs=1e-4), (b, length, known[b].tolist())


@pytest.mark.parametrize("internal,user", CASES)
def test_fully_known_is_the_gold_nll_and_nothing_known_is_zero(internal, user):
    labels, user_tags, crf, em, mask, known, gold, tables, lengths = make_case(internal, user, 11)
    got = crf.partial_nll(em, known, mask, *tables, reduction="none")
    assert float(got[0]) == pytest.approx(float(crf(em, gold, mask, reduction="none")[0]), abs=1e-4)
    assert float(got[1]) == 0.0
    got[1].backward()
    assert em.grad is not None and torch.count_nonzero(em.grad) == 0


def test_mean_counts_only_sentences_with_a_known_tag():
    labels, user_tags, crf, em, mask, known, gold, tables, lengths = make_case("BIOES", "IOB1", 3)
    per = crf.partial_nll(em, known, mask, *tables, reduction="none")
    labelled = ((known != len(user_tags)) & mask).any(1)
    assert not bool(labelled[1])
    mean = crf.partial_nll(em, known, mask, *tables, reduction="mean")
    assert float(mean) == pytest.approx(float(per.sum() / labelled.sum()), rel=1e-6)


@pytest.mark.parametrize("user", ["BIOES", "BMES", "BILOU"])
def test_bio_inside_cannot_read_a_closing_scheme(user):
    from ner_toolkit.data.schemes import SchemeError

    with pytest.raises(SchemeError, match="BILOU or BIOES tag scheme inside"):
        reading_tables(labels_for_types(["A"], "BIO"), "BIO", user)


def test_iob1_reading_depends_on_the_previous_label():
    labels = labels_for_types(["PER"], "BIOES")
    user_tags, first, pair = reading_tables(labels, "BIOES", "IOB1")
    b_per, s_per, e_per = labels.index("B-PER"), labels.index("S-PER"), labels.index("E-PER")
    # S-PER reads B-PER only right after a PER chunk ended, I-PER otherwise (and first in a sentence).
    assert pair[user_tags.index("B-PER")][e_per][s_per]
    assert pair[user_tags.index("I-PER")][labels.index("O")][s_per]
    assert first[user_tags.index("I-PER")][b_per] and not first[user_tags.index("B-PER")][b_per]
