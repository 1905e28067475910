"""User errors end with exit code 2 and one line ``error: PATH[:LINE]: ...`` on stderr: no traceback, no output.

A few cases run the real scripts in a subprocess (true exit code, the whole stderr); the rest call
``train_main`` / ``predict_main`` / ``evaluate_main`` in-process, which return the exit code.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ner_toolkit.cli import evaluate_main, predict_main, train_main

from conftest import assert_user_error, run_cli, slice_conll, tiny_config_text


def no_files_left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def workdir(tmp_path, tiny_config):
    """A fresh directory with a copy of the tiny config and an output path that must never appear."""
    shutil.copy(tiny_config, tmp_path / "exp.yaml")
    return tmp_path


def train_in_process(capsys, workdir: Path, *extra: str) -> tuple[int, str]:
    rc = train_main(["--config", str(workdir / "exp.yaml"), "--output-dir", str(workdir / "out"), *extra])
    captured = capsys.readouterr()
    return rc, captured.err


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --------------------------------------------------------------------------- config errors

def test_missing_config_file_subprocess(tmp_path):
    proc = run_cli("train.py", ["--config", tmp_path / "nope.yaml", "--output-dir", tmp_path / "out"])
    assert_user_error(proc.returncode, proc.stderr, str(tmp_path / "nope.yaml"), "not found")
    assert no_files_left(tmp_path) == []


def test_invalid_yaml_subprocess(tmp_path):
    config = write(tmp_path / "bad.yaml", "training:\n  epochs: 3\n   batch_size: 4\n")
    proc = run_cli("train.py", ["--config", config, "--output-dir", tmp_path / "out"])
    assert_user_error(proc.returncode, proc.stderr, f"{config}:3:", "column 14", "invalid YAML")
    assert not (tmp_path / "out").exists()


def test_unknown_key(workdir, capsys):
    config = write(workdir / "exp.yaml", (workdir / "exp.yaml").read_text() + "  epoch: 3\n")
    line = len(config.read_text().splitlines())
    rc, err = train_in_process(capsys, workdir)
    assert_user_error(rc, err, f"{config}:{line}:", "`training.epoch`", "`training.epochs`")
    assert not (workdir / "out").exists()


def test_unknown_key_from_set(workdir, capsys):
    rc, err = train_in_process(capsys, workdir, "--set", "training.seed=1", "--set", "model.lstm.hiden_size=8")
    assert_user_error(rc, err, "--set:2:", "`model.lstm.hiden_size`", "`model.lstm.hidden_size`")


def test_wrong_type(workdir, capsys):
    config = write(workdir / "exp.yaml", (workdir / "exp.yaml").read_text().replace("batch_size: 8", "batch_size: eight"))
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "batch_size: eight" in text)
    rc, err = train_in_process(capsys, workdir)
    assert_user_error(rc, err, f"{config}:{line}:", "`training.batch_size`", "an integer")
    assert not (workdir / "out").exists()


def test_bad_command_line(workdir, capsys):
    rc = train_main(["--config", str(workdir / "exp.yaml"), "--epochs", "3"])
    assert_user_error(rc, capsys.readouterr().err, "--epochs")
    rc = predict_main(["--model", "m", "x.txt", "--batch-size", "0"])
    assert_user_error(rc, capsys.readouterr().err, "--batch-size")


SCRATCH_BASE = "embedding_size: 16, num_hidden_layers: 1, intermediate_size: 64, max_position_embeddings: 128"


def test_scratch_encoder_key_typo(workdir, capsys):
    # AlbertConfig takes any keyword: a typo would silently train with the default instead.
    scratch = "{" + SCRATCH_BASE + ", hidden_size: 32, num_attention_heads: 2, hiden_dropout_prob: 0.3}"
    rc, err = train_in_process(capsys, workdir, "--set", "training.epochs=1", "--set", f"model.encoder.scratch={scratch}")
    assert_user_error(rc, err, "model.encoder.scratch", "hiden_dropout_prob", "hidden_dropout_prob")
    assert not (workdir / "out").exists()


def test_scratch_encoder_heads_do_not_divide_hidden_size(workdir, capsys):
    scratch = "{" + SCRATCH_BASE + ", hidden_size: 30, num_attention_heads: 4}"
    rc, err = train_in_process(capsys, workdir, "--set", "training.epochs=1", "--set", f"model.encoder.scratch={scratch}")
    assert_user_error(rc, err, "model.encoder.scratch", "num_attention_heads")
    assert not (workdir / "out").exists()


# --------------------------------------------------------------------------- training data errors

def test_missing_training_file(workdir, capsys):
    missing = workdir / "missing.txt"
    rc, err = train_in_process(capsys, workdir, "--set", f"data.train={missing}")
    assert_user_error(rc, err, str(missing), "data.train")
    assert not (workdir / "out").exists()


def test_missing_dev_file(workdir, capsys):
    missing = workdir / "dev-missing.txt"
    rc, err = train_in_process(capsys, workdir, "--set", f"data.dev={missing}")
    assert_user_error(rc, err, str(missing), "data.dev")


def test_column_count_changes_mid_file(workdir, capsys):
    bad = write(workdir / "bad.txt", "EU NNP I-ORG\nrejects VBZ O\n\nGerman JJ I-NP I-MISC\ncall NN O\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.train={bad}")
    assert_user_error(rc, err, f"{bad}:4:", "columns")
    assert not (workdir / "out").exists()


def test_single_column_training_file(workdir, capsys):
    bad = write(workdir / "tokens.txt", "EU\nrejects\n\nGerman\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.train={bad}")
    assert_user_error(rc, err, f"{bad}:1:", "label column")
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("tag, fragment", [("PERSON", '"PERSON"'), ("X-PER", '"X-PER"'), ("B-", '"B-"')])
def test_label_that_fits_no_scheme(workdir, capsys, tag, fragment):
    bad = write(workdir / "bad.txt", f"EU B-ORG\nrejects O\n\nPeter {tag}\nsaid O\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.train={bad}")
    assert_user_error(rc, err, f"{bad}:4:", fragment)
    assert not (workdir / "out").exists()


def test_bad_label_in_dev_file(workdir, capsys):
    bad = write(workdir / "dev.txt", "EU B-ORG\n\n\nPeter B-PER\nBlackburn PERSON\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.dev={bad}")
    assert_user_error(rc, err, f"{bad}:5:", '"PERSON"')


def test_dev_file_in_another_scheme_than_training(workdir, capsys):
    # data.train is IOB1; an S- tag in data.dev cannot be read in that scheme.
    dev = write(workdir / "dev.txt", "EU I-ORG\nsaid O\n\nPeter S-PER\nsaid O\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.dev={dev}")
    assert_user_error(rc, err, f"{dev}:4:", '"S-PER"', "IOB1")
    assert not (workdir / "out").exists()


def test_invalid_utf8_training_file(workdir, capsys):
    bad = write(workdir / "bad.txt", b"EU B-ORG\nrejects O\n\nM\xfcnchen B-LOC\n")
    rc, err = train_in_process(capsys, workdir, "--set", f"data.train={bad}")
    assert_user_error(rc, err, f"{bad}:4:", "UTF-8")


def test_dev_label_unseen_in_training_is_a_warning_and_a_miss(sample_data, tmp_path, capsys):
    train = slice_conll(sample_data.train, tmp_path / "train.txt", 15)
    dev = write(tmp_path / "dev.txt", "Acme I-FOO\nCorp I-FOO\nsaid O\n\nEU I-ORG\nsaid O\n")
    config = write(tmp_path / "c.yaml", tiny_config_text(train, dev, epochs=1))
    rc = train_main(["--config", str(config), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(dev) in warnings[0] and "FOO" in warnings[0], err
    metrics = json.loads((tmp_path / "out" / "model" / "metrics.json").read_text())
    foo = metrics["dev"]["per_type"]["FOO"]
    assert (foo["support"], foo["correct"], foo["recall"]) == (1, 0, 0.0)
    assert metrics["dev"]["micro"]["support"] == 2  # the unseen span is in the denominator

    # predict.py --evaluate on the same file: the same warning, exit 0, the span counted as a miss.
    rc = predict_main(["--model", str(tmp_path / "out"), str(dev), "--output", str(tmp_path / "p.txt"),
                       "--evaluate", "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert any(line.startswith("warning: ") and "FOO" in line for line in err.splitlines()), err
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["per_type"]["FOO"]["support"] == 1 and scores["per_type"]["FOO"]["correct"] == 0
    assert scores["micro"]["support"] == 2


# --------------------------------------------------------------------------- prediction errors

def test_invalid_utf8_prediction_input_subprocess(trained, tmp_path):
    bad = write(tmp_path / "in.txt", b"EU NNP I-ORG\nrejects VBZ O\n\nM\xfcnchen NNP I-LOC\n")
    out = tmp_path / "out.txt"
    proc = run_cli("predict.py", ["--model", trained.model_dir, bad, "--output", out])
    assert_user_error(proc.returncode, proc.stderr, f"{bad}:4:", "UTF-8")
    assert no_files_left(tmp_path) == ["in.txt"]  # no output, no temporary file
    assert proc.stdout == ""


def test_invalid_utf8_late_in_a_large_input(trained, sample_data, tmp_path, capsys):
    good = sample_data.dev.read_bytes()
    bad = write(tmp_path / "in.txt", good + b"\nM\xfcnchen NNP I-NP I-LOC\n")
    line = good.count(b"\n") + 2
    out = tmp_path / "out.txt"
    rc = predict_main(["--model", str(trained.model_dir), str(bad), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, f"{bad}:{line}:", "UTF-8")
    assert no_files_left(tmp_path) == ["in.txt"]


def test_missing_model_directory(sample_data, tmp_path, capsys):
    rc = predict_main(["--model", str(tmp_path / "no-model"), str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(tmp_path / "no-model"), "model directory")
    assert no_files_left(tmp_path) == []


@pytest.mark.parametrize("device", ["tpu", "cuda:7"])
def test_unusable_device(trained, sample_data, tmp_path, capsys, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    rc = predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--device", device,
                       "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, "--device", device)
    assert no_files_left(tmp_path) == []


def test_missing_input_file(trained, tmp_path, capsys):
    rc = predict_main(["--model", str(trained.model_dir), str(tmp_path / "nope.txt"), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(tmp_path / "nope.txt"))
    assert no_files_left(tmp_path) == []


@pytest.fixture
def model_copy(trained, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    return copy


@pytest.mark.parametrize("name", ["model.safetensors", "labels.json", "config.yaml", "word_vocab.txt"])
def test_model_directory_missing_a_file(model_copy, sample_data, tmp_path, capsys, name):
    (model_copy / name).unlink()
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(model_copy / name), "missing")
    assert not (tmp_path / "o.txt").exists()


def test_corrupted_weights_subprocess(model_copy, sample_data, tmp_path):
    import random

    write(model_copy / "model.safetensors", bytes(random.Random(0).randrange(256) for _ in range(4096)))
    proc = run_cli("predict.py", ["--model", model_copy, sample_data.dev, "--output", tmp_path / "o.txt"])
    assert_user_error(proc.returncode, proc.stderr, str(model_copy / "model.safetensors"), "corrupted")
    assert not (tmp_path / "o.txt").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "other-model"])
def test_damaged_weights(model_copy, sample_data, tmp_path, capsys, damage):
    weights = model_copy / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:  # a valid safetensors file of another shape
        from safetensors.torch import load_file, save_file

        state = load_file(weights)
        state["emissions.bias"] = state["emissions.bias"][:3].clone()
        save_file(state, str(weights))
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(weights))
    assert not (tmp_path / "o.txt").exists()


def test_corrupted_labels_and_encoder_config(model_copy, sample_data, tmp_path, capsys):
    (model_copy / "config.json").write_text("{garbage", encoding="utf-8")
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev)])
    assert_user_error(rc, capsys.readouterr().err, str(model_copy))
    (model_copy / "labels.json").write_text('{"labels": ["O"]}', encoding="utf-8")
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev)])
    assert_user_error(rc, capsys.readouterr().err, str(model_copy / "labels.json"))


def test_output_under_a_regular_file(trained, sample_data, tmp_path, capsys):
    blocker = write(tmp_path / "afile", "x")
    rc = predict_main(["--model", str(trained.model_dir), str(sample_data.dev), "--output", str(blocker / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(blocker / "o.txt"), "cannot write")
    assert no_files_left(tmp_path) == ["afile"]


def test_output_dir_under_a_regular_file_subprocess(trained, sample_data, tmp_path):
    blocker = write(tmp_path / "afile", "x")
    proc = run_cli("predict.py", ["--model", trained.model_dir, sample_data.dev, sample_data.test,
                                  "--output", blocker / "outdir"])
    assert_user_error(proc.returncode, proc.stderr, str(blocker / "outdir"))
    assert no_files_left(tmp_path) == ["afile"]


def test_a_failure_before_predicting_creates_no_output_directory(sample_data, tmp_path, capsys):
    rc = predict_main(["--model", str(tmp_path / "no-model"), str(sample_data.dev), str(sample_data.test),
                       "--output", str(tmp_path / "out" / "nested")])
    assert_user_error(rc, capsys.readouterr().err, "model directory")
    assert no_files_left(tmp_path) == []


def test_several_inputs_need_an_output_directory(trained, sample_data, tmp_path, capsys):
    rc = predict_main(["--model", str(trained.model_dir), str(sample_data.dev), str(sample_data.test)])
    assert_user_error(rc, capsys.readouterr().err, "--output")
    existing = write(tmp_path / "file.txt", "x")
    rc = predict_main(["--model", str(trained.model_dir), str(sample_data.dev), str(sample_data.test),
                       "--output", str(existing)])
    assert_user_error(rc, capsys.readouterr().err, str(existing), "directory")
    assert existing.read_text() == "x"


def test_output_onto_its_own_input_is_refused(trained, sample_data, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = slice_conll(sample_data.dev, inputs / "a.txt", 3)
    before = src.read_text()
    rc = predict_main(["--model", str(trained.model_dir), str(inputs), "--output", str(inputs)])
    assert_user_error(rc, capsys.readouterr().err, "overwrite")
    assert src.read_text() == before


def test_single_output_onto_its_own_input_is_refused(trained, sample_data, tmp_path, capsys):
    src = slice_conll(sample_data.dev, tmp_path / "a.txt", 3)
    before = src.read_text()
    rc = predict_main(["--model", str(trained.model_dir), str(src), "--output", str(tmp_path / "." / "a.txt")])
    assert_user_error(rc, capsys.readouterr().err, str(src), "overwrite")
    assert src.read_text() == before
    assert no_files_left(tmp_path) == ["a.txt"]


def test_evaluate_with_a_bad_gold_tag(trained, tmp_path, capsys):
    bad = write(tmp_path / "in.txt", "EU I-ORG\nrejects O\n\nPeter PERSON\n")
    rc = predict_main(["--model", str(trained.model_dir), str(bad), "--output", str(tmp_path / "o.txt"), "--evaluate"])
    assert_user_error(rc, capsys.readouterr().err, f"{bad}:4:", '"PERSON"')
    assert no_files_left(tmp_path) == ["in.txt"]


def test_evaluate_with_gold_tags_in_mixed_schemes_subprocess(trained, tmp_path):
    mixed = write(tmp_path / "in.txt", "John B-PER\nSmith M-PER\nSr E-PER\n\nParis I-LOC\n")
    proc = run_cli("predict.py", ["--model", trained.model_dir, mixed, "--evaluate"])
    assert_user_error(proc.returncode, proc.stderr, str(mixed), "M-")


def test_ner_evaluate_errors(tmp_path, capsys):
    one = write(tmp_path / "one.txt", "EU\nrejects\n")
    assert_user_error(evaluate_main([str(one)]), capsys.readouterr().err, f"{one}:1:", "two columns")
    bad = write(tmp_path / "bad.txt", "EU B-ORG B-ORG\nrejects O O\n\nPeter B-PER PER\n")
    assert_user_error(evaluate_main([str(bad)]), capsys.readouterr().err, f"{bad}:4:", '"PER"')
    empty = write(tmp_path / "empty.txt", "\n\n")
    assert_user_error(evaluate_main([str(empty)]), capsys.readouterr().err, str(empty))
    assert_user_error(evaluate_main([str(tmp_path / "nope.txt")]), capsys.readouterr().err, str(tmp_path / "nope.txt"))
