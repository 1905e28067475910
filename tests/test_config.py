"""The experiment config: defaults, YAML + --set overrides, validation messages, the reference file."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ner_toolkit.config import Config, all_keys, load_config, parse_override, reference_yaml, to_dict
from ner_toolkit.errors import UserError

from conftest import REPO, TINY_SCRATCH, TINY_SCRATCH_YAML

REFERENCE = REPO / "configs" / "reference.yaml"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raises_user_error(*args, **kwargs) -> UserError:
    with pytest.raises(UserError) as info:
        load_config(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- loading and overrides

def test_no_file_and_no_overrides_gives_the_defaults():
    assert load_config() == Config()
    assert Config().training.epochs == 10 and Config().model.encoder.pooling == "first"


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing set\n")) == Config()


def test_a_section_with_every_key_commented_out_gives_its_defaults(tmp_path):
    config = load_config(write(tmp_path, "training:\n  # epochs: 3\nmodel:\n  lstm:\n"))
    assert config == Config()


def test_duplicate_keys_are_an_error_not_silently_dropped(tmp_path):
    # PyYAML keeps the last of two equal keys: the whole first `training:` section would vanish.
    path = write(tmp_path, "training:\n  epochs: 3\ndata:\n  train: a.txt\ntraining:\n  seed: 5\n")
    err = raises_user_error(path)
    assert (err.path, err.line) == (str(path), 5)
    assert "`training`" in str(err) and "line 1" in str(err)
    err = raises_user_error(write(tmp_path, "model:\n  lstm: {hidden_size: 8, hidden_size: 9}\n"))
    assert "`model.lstm.hidden_size`" in str(err) and err.line == 2


def test_yaml_values_and_repeated_overrides(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\n  batch_size: 4\ndata:\n  train: a.txt\n")
    config = load_config(path, (
        "training.epochs=7",            # overrides the file
        "training.epochs=9",            # the last --set of a key wins
        "data.dev=null",                # YAML null
        "model.lstm.enabled=false",     # YAML bool
        "training.lr.crf=0.5",          # YAML float, nested three deep
        f"model.encoder.scratch={TINY_SCRATCH_YAML}",  # a whole mapping
        "model.encoder.tokenizer=builtin:albert-base-v2",  # a scratch encoder needs one
        "output_dir=runs/x=y",          # only the first '=' splits key from value
    ))
    assert config.training.epochs == 9
    assert config.training.batch_size == 4  # untouched file value
    assert config.data.train == "a.txt" and config.data.dev is None
    assert config.model.lstm.enabled is False
    assert config.training.lr.crf == 0.5 and config.training.lr.encoder == Config().training.lr.encoder
    assert config.model.encoder.scratch == TINY_SCRATCH
    assert isinstance(config.model.encoder.scratch, dict)
    assert config.output_dir == "runs/x=y"


def test_override_creates_sections_missing_from_the_file(tmp_path):
    config = load_config(write(tmp_path, "output_dir: o\n"), ("model.encoder.pooling=mean",))
    assert config.model.encoder.pooling == "mean" and config.output_dir == "o"


def test_ints_are_accepted_for_floats_and_stored_as_floats():
    config = load_config(None, ("training.lr.encoder=1", "model.dropout=0"))
    assert config.training.lr.encoder == 1.0 and isinstance(config.training.lr.encoder, float)
    assert isinstance(config.model.dropout, float)


@pytest.mark.parametrize("text", ["1e-4", "2E-5", "5e3", "1.5E-3"])
def test_exponent_floats_without_a_dot_are_numbers(tmp_path, text):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; users write learning rates like this all the time.
    assert load_config(None, (f"training.lr.encoder={text}",)).training.lr.encoder == float(text)
    assert load_config(write(tmp_path, f"training:\n  lr:\n    crf: {text}\n")).training.lr.crf == float(text)


def test_parse_override_parses_the_value_as_yaml():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override(" a.b = x ") == ("a.b", "x")
    assert parse_override("a.b=") == ("a.b", None)


@pytest.mark.parametrize("bad", ["training.epochs", "=3", ""])
def test_malformed_override_names_the_expected_form(bad):
    err = raises_user_error(None, (bad,))
    assert "KEY=VALUE" in str(err) and str(err).startswith("error: --set")


def test_quickstart_config_loads():
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.data.train == "data/sample/train.txt"
    assert config.model.encoder.scratch and config.model.encoder.tokenizer == "builtin:albert-base-v2"


@pytest.mark.parametrize("key", ["data.train", "data.dev", "data.test", "training.epochs", "training.batch_size",
                                 "training.seed", "output_dir"])
def test_documented_key_paths_exist(key):
    assert key in all_keys()
    value = 5 if key.startswith("training.") else "some/path"
    config = load_config(None, (f"{key}={value}",))
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    assert node == value


# --------------------------------------------------------------------------- validation messages

def test_unknown_key_names_path_line_and_closest_key(tmp_path):
    path = write(tmp_path, "data:\n  train: a.txt\ntraining:\n  seed: 1\n  epoch: 3\n")
    err = raises_user_error(path)
    assert err.path == str(path) and err.line == 5
    text = str(err)
    assert text.startswith(f"error: {path}:5: ")
    assert "`training.epoch`" in text and "did you mean `training.epochs`" in text


def test_unknown_section_key_in_override_names_it():
    err = raises_user_error(None, ("training.lr.lsmt=0.1",))
    assert "`training.lr.lsmt`" in str(err) and "`training.lr.lstm`" in str(err)


def test_unknown_key_far_from_any_key_points_to_the_reference(tmp_path):
    text = str(raises_user_error(write(tmp_path, "zzzzqqq: 1\n")))
    assert "`zzzzqqq`" in text and "reference.yaml" in text


@pytest.mark.parametrize("yaml_text, line, key, expected", [
    ("training:\n  epochs: ten\n", 2, "training.epochs", "an integer"),
    ("training:\n  epochs: 2.5\n", 2, "training.epochs", "an integer"),
    ("training:\n  epochs: true\n", 2, "training.epochs", "an integer"),
    ("model:\n  lstm:\n    enabled: 3\n", 3, "model.lstm.enabled", "true or false"),
    ("training:\n  lr:\n    crf: fast\n", 3, "training.lr.crf", "a number"),
    ("data:\n  train: [a, b]\n", 2, "data.train", "a string"),
    ("model:\n  encoder:\n    pooling: max\n", 3, "model.encoder.pooling", "first, last, mean, first_last"),
    ("model:\n  encoder:\n    scratch: 12\n", 3, "model.encoder.scratch", "a mapping"),
    ("training: 5\n", 1, "training", "mapping"),
])
def test_wrong_type_names_key_line_and_expected_type(tmp_path, yaml_text, line, key, expected):
    path = write(tmp_path, yaml_text)
    err = raises_user_error(path)
    assert (err.path, err.line) == (str(path), line)
    assert f"`{key}`" in str(err) and expected in str(err)


def test_wrong_type_in_override_names_the_override():
    err = raises_user_error(None, ("training.seed=1", "training.batch_size=big"))
    assert "`training.batch_size`" in str(err) and "an integer" in str(err)
    assert str(err).startswith("error: --set:2: ")  # the second --set


def test_override_below_a_value_is_rejected(tmp_path):
    err = raises_user_error(write(tmp_path, "training:\n  epochs: 3\n"), ("training.epochs.x=1",))
    assert "`training.epochs`" in str(err) and "not a section" in str(err)
    assert err.line == 2  # where training.epochs was set
    err = raises_user_error(None, ("training.epochs.x=1",))
    assert "`training.epochs`" in str(err) and "an integer" in str(err)


@pytest.mark.parametrize("text, line, column", [
    ("training:\n  epochs: 3\n   batch_size: 4\n", 3, 14),
    ("data:\n  train: [a, b\n", 3, 1),
    ("a: 1\nb: @x\n", 2, 4),
])
def test_invalid_yaml_names_line_and_column(tmp_path, text, line, column):
    path = write(tmp_path, text)
    err = raises_user_error(path)
    assert (err.path, err.line) == (str(path), line)
    assert f"column {column}" in str(err) and "invalid YAML" in str(err)
    assert "\n" not in str(err)


def test_top_level_must_be_a_mapping(tmp_path):
    err = raises_user_error(write(tmp_path, "- a\n- b\n"))
    assert "mapping" in str(err) and err.line == 1


def test_missing_config_file_names_the_path(tmp_path):
    err = raises_user_error(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(err) and "not found" in str(err)


# --------------------------------------------------------------------------- the reference config

def test_reference_file_is_the_generated_one():
    proc = subprocess.run([sys.executable, "-m", "ner_toolkit.config"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference_yaml()
    assert REFERENCE.read_text(encoding="utf-8") == proc.stdout, \
        "configs/reference.yaml is stale: python -m ner_toolkit.config > configs/reference.yaml"


def test_reference_lists_every_key_with_its_default():
    raw = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    for key in all_keys():
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} missing from configs/reference.yaml"
            node = node[part]
    # Loading the reference gives exactly the defaults, so every value in it is valid and current.
    assert load_config(REFERENCE) == Config()


def test_every_key_has_a_help_text_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "  # " in line, f"no help text: {line!r}"


def test_saved_config_round_trips(tmp_path):
    from ner_toolkit.config import from_dict, save_config

    config = load_config(None, (f"model.encoder.scratch={TINY_SCRATCH_YAML}", "training.lr.encoder=2.0e-5",
                                "data.train=x.txt", "model.encoder.tokenizer=builtin:albert-base-v2"))
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert from_dict(to_dict(config)) == config
    assert dataclasses.asdict(config)["model"]["encoder"]["scratch"] == TINY_SCRATCH


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("pretrain_")),
                         ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    """A typo in a shipped recipe would only surface when a user runs it: every config must load.
    (``pretrain_*.yaml`` are ner-pretrain configs, loaded by tests/test_pretraining.py.)"""
    config = load_config(path)
    if path.name != "reference.yaml":
        assert config.data.train, f"{path.name} names no training file"
