"""Training from partially labelled CoNLL files: `?` tags read, trained over, refused in dev/test."""
from __future__ import annotations

from conftest import assert_user_error, run_cli, tiny_config_text

from ner_toolkit.config import load_config
from ner_toolkit.data.simulate import hide_spans
from ner_toolkit.training.dataset import build_labels, input_scheme, known_ids, read_labelled, tag_ids


def test_known_ids_mark_unknown_positions(sample_data, tmp_path):
    partial = tmp_path / "train.txt"
    assert hide_spans(sample_data.train, partial, 0.5, 1)[0] > 0
    cfg = load_config(None, (f"data.train={partial}",)).data
    data = read_labelled(str(partial), cfg, "data.train")
    scheme = input_scheme(data, cfg)
    labels = build_labels(data, scheme, cfg)
    ids, user_tags = known_ids(data, labels, "?")
    tags, _ = tag_ids(data, labels, "?")
    assert [len(x) for x in ids] == [len(x) for x in data.gold] == [len(x) for x in tags]
    for gold, row in zip(data.gold, ids):
        for tag, u in zip(gold, row):
            assert (u == len(user_tags)) == (tag == "?")
            if tag != "?" and "?" in gold:
                assert user_tags[u] == tag


def test_train_from_partial_labels_end_to_end(sample_data, tmp_path):
    partial = tmp_path / "train.txt"
    hide_spans(sample_data.train, partial, 0.5, 2)
    config = tmp_path / "partial.yaml"
    config.write_text(tiny_config_text(partial, sample_data.dev, output_dir=str(tmp_path / "run"), epochs=2),
                      encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])
    assert proc.returncode == 0, proc.stderr
    losses = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert losses and "nan" not in " ".join(losses).lower()
    pred = tmp_path / "pred.txt"
    proc = run_cli("predict.py", ["--model", tmp_path / "run" / "model", sample_data.test, "--output", pred])
    assert proc.returncode == 0, proc.stderr
    assert "?" not in {line.split()[-1] for line in pred.read_text().splitlines() if line.strip()}


def test_unknown_tags_in_dev_are_a_user_error(sample_data, tmp_path):
    partial_dev = tmp_path / "dev.txt"
    hide_spans(sample_data.dev, partial_dev, 1.0, 3)
    config = tmp_path / "bad.yaml"
    config.write_text(tiny_config_text(sample_data.train, partial_dev, output_dir=str(tmp_path / "run")),
                      encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])
    assert_user_error(proc.returncode, proc.stderr, str(partial_dev), "only training data may be partially labelled")
