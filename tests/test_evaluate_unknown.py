"""Scoring against partially annotated gold (`?` tags, --ignore-unknown) and the empty label column."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, assert_user_error, run_cli

from ner_toolkit.config import load_config
from ner_toolkit.data.schemes import tag_runs, to_spans
from ner_toolkit.errors import UserError
from ner_toolkit.evaluate import evaluate_spans
from ner_toolkit.training.dataset import read_labelled


def test_hand_computed_partial_gold() -> None:
    gold = [["B-PER", "I-PER", "O", "?", "?", "O", "B-LOC"], ["?", "B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "B-LOC"],   # ORG lies on unknown tokens: not scored
            ["B-ORG", "I-ORG", "B-PER"]]                                # ORG reaches into ?: not scored; PER wrong
    r = evaluate_spans(gold, pred, unknown_tag="?")
    assert (r["micro"]["correct"], r["micro"]["predicted"], r["micro"]["support"]) == (2, 3, 3)
    assert r["unknown_tokens"] == 3 and r["tokens"] == 7
    assert r["token_accuracy"] == pytest.approx(5 / 7)  # I-ORG/B-ORG and B-PER/O differ at known positions
    with pytest.raises(Exception):
        evaluate_spans(gold, pred)  # `?` is no tag unless the caller says it means unknown


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "?"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_unknown_positions_score_like_the_known_stretches_alone(data) -> None:
    """With O predicted at every unknown position, the score is that of the known stretches scored as
    sentences of their own; and no counted predicted span ever covers an unknown position."""
    n = data.draw(st.integers(1, 6))
    gold = [data.draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8)) for _ in range(n)]
    pred = [data.draw(st.lists(st.sampled_from(TAGS[:-1]), min_size=len(g), max_size=len(g))) for g in gold]
    quiet = [[("O" if g == "?" else p) for g, p in zip(gs, ps)] for gs, ps in zip(gold, pred)]
    runs_gold, runs_pred = [], []
    for gs, ps in zip(gold, quiet):
        for offset, run in tag_runs(gs, "?"):
            runs_gold.append(run)
            runs_pred.append(ps[offset:offset + len(run)])
    if not runs_gold:
        return
    got = evaluate_spans(gold, quiet, scheme="BIO", unknown_tag="?")
    want = evaluate_spans(runs_gold, runs_pred, scheme="BIO")
    assert got["micro"] == want["micro"] and got["per_type"] == want["per_type"]
    assert got["tokens"] == want["tokens"] and got["token_accuracy"] == want["token_accuracy"]
    # Arbitrary predictions: the counted predicted spans are exactly those clear of unknown positions.
    full = evaluate_spans(gold, pred, scheme="BIO", unknown_tag="?")
    clear = sum(not any(gs[i] == "?" for i in range(s, e)) for gs, ps in zip(gold, pred) for _, s, e in to_spans(ps, "BIO"))
    assert full["micro"]["predicted"] == clear


def test_no_unknown_tag_changes_nothing() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG"]]
    with_flag = evaluate_spans(gold, pred, unknown_tag="?")
    assert with_flag.pop("unknown_tokens") == 0
    assert with_flag == evaluate_spans(gold, pred)


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from ner_toolkit.cli import evaluate_console; evaluate_console()",
                           *args], capture_output=True, text=True, cwd=REPO)


def test_ner_evaluate_ignore_unknown(tmp_path) -> None:
    scored = tmp_path / "scored.txt"
    scored.write_text("Peter B-PER B-PER\nwent O O\nto ? O\nParis ? B-LOC\n\nJapan B-LOC B-LOC\n", encoding="utf-8")
    proc = _evaluate(str(scored))
    assert_user_error(proc.returncode, proc.stderr, f"{scored}:3", "--ignore-unknown")
    proc = _evaluate(str(scored), "--ignore-unknown", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert "unknown (not scored): 2" in proc.stdout
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert (result["micro"]["correct"], result["micro"]["predicted"], result["micro"]["support"]) == (2, 2, 2)
    proc = _evaluate(str(scored), "--ignore-unknown", "--report")
    assert_user_error(proc.returncode, proc.stderr, "--report", "--ignore-unknown")
    other = tmp_path / "other.txt"
    other.write_text("Peter B-PER B-PER\nwent - O\n", encoding="utf-8")
    proc = _evaluate(str(other), "--ignore-unknown", "--unknown-tag", "-", "--json", "-")
    assert proc.returncode == 0 and '"unknown_tokens": 1' in proc.stdout, proc.stderr


def test_predict_evaluate_ignore_unknown(trained, sample_data, tmp_path) -> None:
    lines = sample_data.test.read_text(encoding="utf-8").splitlines()
    hidden, n = [], 0
    for line in lines:  # every third token line's gold becomes `?`
        if line.strip() and not line.startswith("-DOCSTART-"):
            n += 1
            if n % 3 == 0:
                line = " ".join(line.split()[:-1] + ["?"])
        hidden.append(line)
    partial = tmp_path / "partial.txt"
    partial.write_text("\n".join(hidden) + "\n", encoding="utf-8")
    proc = run_cli("predict.py", ["--model", trained.model_dir, partial, "--output", tmp_path / "p.txt", "--evaluate"])
    assert_user_error(proc.returncode, proc.stderr, "--ignore-unknown")
    assert not (tmp_path / "p.txt").exists()
    proc = run_cli("predict.py", ["--model", trained.model_dir, partial, "--output", tmp_path / "p.txt", "--evaluate",
                                  "--ignore-unknown", "--json", tmp_path / "scores.json"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert result["unknown_tokens"] == n // 3 and result["tokens"] == n - n // 3


def test_empty_label_column_is_unknown_in_training_only(tmp_path) -> None:
    train = tmp_path / "train.txt"
    train.write_text("Peter\tB-PER\nBlackburn\t\nwent\tO\n\nParis\tB-LOC\n", encoding="utf-8")
    cfg = load_config(None, (f"data.train={train}",)).data
    data = read_labelled(str(train), cfg, "data.train")
    assert data.gold == [["B-PER", "?", "O"], ["B-LOC"]]
    with pytest.raises(UserError, match="expected 2 columns"):
        read_labelled(str(train), cfg, "data.dev")
