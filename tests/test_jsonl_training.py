"""Training, prediction and scoring from character-offset JSONL, end to end through the command lines,
and the misalignment report a user sees."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_user_error, run_cli, tiny_config_text

from ner_toolkit.evaluate import evaluate_offsets

SAMPLE_JSONL = REPO / "data" / "sample_jsonl"
MISALIGNED = SAMPLE_JSONL / "misaligned.jsonl"


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("jsonl")
    train = _head(SAMPLE_JSONL / "train.jsonl", d / "train.jsonl", 60)
    dev = _head(SAMPLE_JSONL / "dev.jsonl", d / "dev.jsonl", 30)
    test = _head(SAMPLE_JSONL / "test.jsonl", d / "test.jsonl", 30)
    config = d / "c.yaml"
    config.write_text(tiny_config_text(train, dev, test, str(d / "run"), epochs=3), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])  # data.format auto: .jsonl
    assert proc.returncode == 0, proc.stderr
    return d, proc


def test_a_jsonl_corpus_trains_predicts_and_scores(jsonl_run):
    d, proc = jsonl_run
    model = d / "run"
    saved = yaml.safe_load((model / "model" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["word_tokenizer"] == "conll"
    assert "test F1" in proc.stderr + proc.stdout
    pred = d / "test.pred.jsonl"
    scores = d / "scores.json"
    proc = run_cli("predict.py", ["--model", model, "--input-format", "jsonl", "--format", "jsonl", d / "test.jsonl",
                                  "--output", pred, "--evaluate", "--json", scores])
    assert proc.returncode == 0, proc.stderr
    assert "mode: offsets" in proc.stdout
    predicted = json.loads(scores.read_text(encoding="utf-8"))
    gold_records = [json.loads(line) for line in (d / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    records = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == [g["id"] for g in gold_records]  # other keys carried, order kept
    assert predicted["micro"]["support"] == sum(len(g["entities"]) for g in gold_records)
    # ner-evaluate on the written predictions gives the same numbers as predict.py --evaluate.
    again = d / "again.json"
    from ner_toolkit.cli import evaluate_main

    assert evaluate_main([str(pred), "--gold", str(d / "test.jsonl"), "--json", str(again)]) == 0
    assert json.loads(again.read_text(encoding="utf-8"))["micro"] == predicted["micro"]
    # And the same as scoring the predicted character spans by hand.
    gold = [[(label, s, e) for s, e, label in g["entities"]] for g in gold_records]
    mine = [[(e["label"], e["start"], e["end"]) for e in r["entities"]] for r in records]
    assert evaluate_offsets(gold, mine)["micro"] == predicted["micro"]


def test_ner_evaluate_jsonl_errors(jsonl_run, tmp_path):
    from ner_toolkit.cli import evaluate_main

    d, _ = jsonl_run
    other = _head(SAMPLE_JSONL / "dev.jsonl", tmp_path / "other.jsonl", 30)
    def evaluate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from ner_toolkit.cli import evaluate_console; evaluate_console()",
                               *args], capture_output=True, text=True, cwd=REPO)

    proc = evaluate(str(other), "--gold", str(d / "test.jsonl"))
    assert_user_error(proc.returncode, proc.stderr, f"{other}:1", "differs from the gold document")
    short = _head(d / "test.jsonl", tmp_path / "short.jsonl", 5)
    proc = evaluate(str(short), "--gold", str(d / "test.jsonl"))
    assert_user_error(proc.returncode, proc.stderr, "5 documents", "has 30")
    proc = evaluate(str(short))
    assert_user_error(proc.returncode, proc.stderr, "--gold GOLD.jsonl")
    assert evaluate_main([str(short), "--gold", str(short)]) == 0  # gold against itself


def test_misaligned_spans_are_counted_and_reported_with_their_lines(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(MISALIGNED.read_text(encoding="utf-8")
                     + _head(SAMPLE_JSONL / "train.jsonl", tmp_path / "h.jsonl", 20).read_text(encoding="utf-8"),
                     encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(train, output_dir=str(tmp_path / "run"), epochs=1), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])
    assert proc.returncode == 0, proc.stderr
    report = [line for line in proc.stderr.splitlines() if line.startswith(str(train))]
    assert report[0].startswith(f"{train}: ") and "2 expanded to token edges, 2 skipped" in report[0]
    assert f"{train}:1: span [24, 28) 'Pari' LOC does not fall on token boundaries: expanded to [24, 29) 'Paris'" \
        in report
    assert any(line.startswith(f"{train}:5: ") and "overlaps another span" in line for line in report)
    assert any(line.startswith(f"{train}:6: ") and "skipped" in line for line in report)

    proc = run_cli("train.py", ["--config", config, "--set", "data.misaligned=skip", "--set",
                                f"output_dir={tmp_path / 'skip'}"])
    assert proc.returncode == 0, proc.stderr
    assert "0 expanded to token edges, 4 skipped" in proc.stderr

    proc = run_cli("train.py", ["--config", config, "--set", "data.misaligned=error", "--set",
                                f"output_dir={tmp_path / 'err'}"])
    assert_user_error(proc.returncode, proc.stderr, f"{train}:1:", "'Pari'", "data.misaligned")
    assert not (tmp_path / "err" / "model").exists()


def test_hf_rows_with_tag_ids_and_names(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rows = [{"tokens": ["Peter", "Blackburn", "went", "to", "Paris"], "ner_tags": [1, 2, 0, 0, 3]},
            {"tokens": ["Anna", "visited", "New", "York"], "ner_tags": [1, 0, 3, 4]}] * 10
    train = tmp_path / "rows.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config_text(train, output_dir=str(tmp_path / "run"), epochs=1), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])
    assert_user_error(proc.returncode, proc.stderr, f"{train}:1", "tag_names")
    proc = run_cli("train.py", ["--config", config, "--set", f"data.tag_names={json.dumps(names)}"])
    assert proc.returncode == 0, proc.stderr
    labels = json.loads((tmp_path / "run" / "model" / "labels.json").read_text(encoding="utf-8"))
    assert labels["output_scheme"] == "BIO" and {"B-PER", "B-LOC"} <= set(labels["labels"])
