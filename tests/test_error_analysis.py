"""ner-evaluate --report: per-type error categories."""
from __future__ import annotations

import json

from ner_toolkit.cli import evaluate_main
from ner_toolkit.error_analysis import error_report


def test_every_category_on_a_handmade_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "O", "B-MISC", "O"]]
    counts = error_report(gold, pred, "BIO")
    assert counts["PER"] == {"correct": 1, "wrong_type": 0, "wrong_boundaries": 0, "missed": 1, "spurious": 0}
    assert counts["LOC"]["wrong_type"] == 1  # right boundaries, predicted ORG
    assert counts["ORG"]["wrong_boundaries"] == 1 and counts["ORG"]["correct"] == 0
    assert counts["MISC"]["spurious"] == 1
    # Every gold span falls in exactly one category.
    assert sum(c[k] for c in counts.values() for k in ("correct", "wrong_type", "wrong_boundaries", "missed")) == 4


def test_ner_evaluate_report_and_json(tmp_path, capsys):
    path = tmp_path / "scored.txt"
    path.write_text("John B-PER B-PER\nSmith I-PER O\nin O O\nParis B-LOC B-LOC\n\nRome B-LOC B-ORG\n", encoding="utf-8")
    assert evaluate_main([str(path), "--report", "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert "wrong boundaries" in out and "spurious" in out
    result = json.loads(out[out.index("\n{") + 1:])
    assert result["errors"]["PER"]["wrong_boundaries"] == 1
    assert result["errors"]["LOC"] == {"correct": 1, "wrong_type": 1, "wrong_boundaries": 0, "missed": 0, "spurious": 0}
