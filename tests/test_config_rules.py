"""Choice keys and cross-field rules live in the schema: a bad value is refused at load with the FILE:LINE of
its key (before any data is read or model built), and every choice list is the owning module's constant."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from ner_toolkit import schema
from ner_toolkit.config import Config, load_config, reference_yaml
from ner_toolkit.data.pooling import POOLINGS
from ner_toolkit.data.schemes import scheme_names
from ner_toolkit.data.text import TOKENIZERS
from ner_toolkit.errors import UserError
from ner_toolkit.model.modes import PRECISIONS
from ner_toolkit.pretraining.config import load_pretrain_config

from conftest import REPO, TINY_SCRATCH_YAML, TOKENIZER, assert_user_error, run_cli, tiny_config_text


def _refused(text: str, tmp_path: Path, load=load_config) -> UserError:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load(path)
    err = info.value
    assert err.path == str(path), str(err)
    assert "\n" not in str(err)
    return err


# Each check that used to run in training, encoder or pretraining code (reporting "config"), with a file
# that breaks it and the line of the offending key.
MOVED = [
    ("model:\n  fusion: none\n  chars:\n    enabled: true\n", 4,
     "model.chars needs model.fusion concat or add"),                        # was training/trainer.py
    ("data:\n  train: t.txt\n  input_scheme: BIOS\n", 3,
     "`data.input_scheme` must be one of auto, IOB1, BIO, BIOES, BMES, BILOU, IOB2, IOBES, BIOUL, got 'BIOS'"),  # dataset.py
    ("data:\n  tag_scheme: XYZ\n", 2, "`data.tag_scheme` must be one of BIO, BIOES, BILOU, IOB2, IOBES, BIOUL"),  # dataset.py
    ("data:\n\n  tag_scheme: IOB1\n", 3, "`data.tag_scheme` must be one of BIO, BIOES, BILOU, IOB2, IOBES, BIOUL, got 'IOB1'"),
    (f"model:\n  encoder:\n    scratch: {TINY_SCRATCH_YAML}\n", 3,
     "`model.encoder.scratch` needs `model.encoder.tokenizer`"),             # was model/encoder.py
    ("training:\n  seed: 3\n  precision: fp8\n", 3,
     "`training.precision` must be one of fp32, bf16, fp16, got 'fp8'"),     # was model/precision.py
    ("data:\n  word_tokenizer: spaces\n", 2, "`data.word_tokenizer` must be one of auto, whitespace, conll, chars"),
    ("model:\n  encoder:\n    pooling: avg\n", 3, "`model.encoder.pooling` must be one of first, last, mean, first_last"),
]


@pytest.mark.parametrize("text, line, needle", MOVED)
def test_a_config_only_check_names_the_file_and_line_of_its_key(tmp_path, text, line, needle):
    err = _refused(text, tmp_path)
    assert err.line == line, str(err)
    assert needle in str(err), str(err)
    assert str(err).startswith(f"error: {tmp_path / 'bad.yaml'}:{line}: ")


def test_a_rule_broken_through_set_names_the_override():
    with pytest.raises(UserError) as info:
        load_config(None, ("model.fusion=none", "model.chars.enabled=true"))
    assert str(info.value).startswith("error: --set:2: model.chars needs model.fusion")


def test_a_typo_in_a_choice_gets_the_closest_name(tmp_path):
    assert "did you mean `BIOES`?" in str(_refused("data:\n  input_scheme: BIOS\n", tmp_path))
    assert "did you mean `first_last`?" in str(_refused("model:\n  encoder:\n    pooling: firstlast\n", tmp_path))
    assert "did you mean `bf16`?" in str(_refused("training:\n  precision: BF16\n", tmp_path))  # exact case here


@pytest.mark.parametrize("written, kept", [("bioes", "BIOES"), ("IOB2", "IOB2"), ("iob2", "IOB2"), ("Bio", "BIO")])
def test_scheme_names_are_case_insensitive_and_kept_as_the_table_spells_them(written, kept):
    config = load_config(None, (f"data.tag_scheme={written}", f"data.input_scheme={written}"))
    assert (config.data.tag_scheme, config.data.input_scheme) == (kept, kept)


def test_every_choice_list_is_the_owning_modules_constant():
    def choices(section: type, key: str) -> tuple:
        return {f.name: f for f in dataclasses.fields(section)}[key].metadata["choices"]

    from ner_toolkit.config import DataConfig, EncoderConfig, TrainingConfig

    assert choices(TrainingConfig, "precision") == PRECISIONS
    assert choices(EncoderConfig, "pooling") == tuple(POOLINGS)
    assert choices(DataConfig, "word_tokenizer") == ("auto", *TOKENIZERS)
    assert choices(DataConfig, "input_scheme") == ("auto", *scheme_names())
    assert choices(DataConfig, "tag_scheme") == scheme_names(internal_only=True)


def test_the_schema_imports_no_torch():
    code = "import sys, ner_toolkit.config, ner_toolkit.pretraining.config; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_a_moved_check_ends_train_py_with_exit_2_and_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    text = tiny_config_text(tmp_path / "never-read.txt") + "  precision: fp8\n"
    config.write_text(text, encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--output-dir", tmp_path / "out"])
    line = len(text.splitlines())
    assert_user_error(proc.returncode, proc.stderr, f"{config}:{line}:", "`training.precision`", "fp32, bf16, fp16")
    assert not (tmp_path / "out").exists()


def test_a_check_that_needs_the_run_still_names_the_config_file(tmp_path, capsys):
    """``data.train`` is only required to train: the trainer checks it, naming the config's `data:` line."""
    from ner_toolkit.cli import train_main

    config = tmp_path / "exp.yaml"
    config.write_text(f"output_dir: '{tmp_path / 'out'}'\ndata:\n  dev: null\nmodel:\n  encoder:\n"
                      f"    scratch: {TINY_SCRATCH_YAML}\n    tokenizer: {TOKENIZER}\n", encoding="utf-8")
    assert_user_error(train_main(["--config", str(config)]), capsys.readouterr().err,
                      f"error: {config}:2: `data.train` is required")


# --------------------------------------------------------------------------- the pretraining schema

PRETRAIN = [
    ("masking:\n  mask: 0.8\n  random: 0.3\n", 3, "`masking.mask` + `masking.random` must be at most 1"),
    ("model:\n  encoder:\n    scratch: {hidden_size: 32}\n", 3, "`model.encoder.scratch` needs `model.encoder.tokenizer`"),
    ("model:\n  encoder:\n    name_or_path: ckpt\n    scratch: {hidden_size: 32}\n", 3, "set exactly one of"),
    ("model:\n  encoder:\n    name_or_path: ckpt\ntraining:\n  precision: fp16\n", 5,
     "`training.precision` must be one of fp32, bf16, got 'fp16'"),
    ("data:\n  files: []\nmodel:\n  encoder:\n    name_or_path: ckpt\n", 2,
     "`data.files` must be a path or a non-empty list of paths, got []"),
]


@pytest.mark.parametrize("text, line, needle", PRETRAIN)
def test_pretraining_rules_name_the_file_and_line(tmp_path, text, line, needle):
    err = _refused(text, tmp_path, load_pretrain_config)
    assert err.line == line and needle in str(err), str(err)


def test_pretraining_paths_may_hold_spaces():
    config = load_pretrain_config(None, ("data.files=my corpus.txt", "model.encoder.name_or_path=ckpt"))
    assert config.data.files == ["my corpus.txt"]


def test_the_pretraining_schema_uses_only_the_public_api():
    text = (REPO / "ner_toolkit" / "pretraining" / "config.py").read_text(encoding="utf-8")
    assert "import _" not in text and "schema._" not in text and "def reference_yaml" in text
    assert "dataclasses.fields" not in text  # no copied schema walking


# --------------------------------------------------------------------------- the public machinery on its own

@dataclass
class Window:
    size: int = schema.field(8, "window size", schema.size(64))
    stride: int = schema.field(4, "stride", schema.size(64, 0))

    def check(self, here: schema.Here) -> None:
        if self.stride >= self.size:
            raise here.error(f"{here.key('stride')} must be below {here.key('size')}", "stride", "size")


@dataclass
class Toy:
    mode: str = schema.field("fast", "how", choices=("fast", "slow"), any_case=True)
    name: Optional[str] = schema.field(None, "a name", convert=lambda v: str(v).strip() or _empty())
    window: Window = schema.field(Window(), "windows")


def _empty() -> str:
    raise ValueError("must not be blank")


def test_a_schema_of_ones_own_gets_lines_choices_rules_and_a_reference(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("mode: SLOW\nwindow:\n  size: 4\n  stride: 6\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        schema.load(Toy, path, reference="toy.yaml")
    assert str(info.value) == f"error: {path}:4: `window.stride` must be below `window.size`"
    toy = schema.load(Toy, path, ("window.stride=2", "name= x "))
    assert (toy.mode, toy.name, toy.window.stride) == ("slow", "x", 2)
    assert schema.from_dict(Toy, schema.to_dict(toy)) == toy
    assert schema.here(toy.window).error("late", "size").line == 3  # a check that runs later names the line
    assert Window(**toy.window.__dict__) == toy.window  # the locations are kept beside a section, not in it
    assert schema.here(Window()).error("made in code").path == "config"
    with pytest.raises(UserError, match=r"`name` must not be blank, got ' '"):
        schema.load(Toy, None, ("name=' '",))
    with pytest.raises(UserError, match="see toy.yaml for valid keys"):
        schema.load(Toy, None, ("zzzz=1",), reference="toy.yaml")
    text = schema.reference_yaml(Toy, ["# toy"])
    assert text.splitlines()[:4] == ["# toy", "", "mode: fast  # how", "name: null  # a name"]
    assert "  size: 8  # window size; allowed: from 1 to 64" in text


def test_a_default_that_breaks_a_rule_is_reported_too():
    @dataclass
    class Bad:
        window: Window = schema.field(Window(size=2, stride=3), "windows")

    with pytest.raises(UserError, match="`window.stride` must be below"):
        schema.load(Bad)


def test_the_ner_reference_is_unchanged_by_the_split():
    assert reference_yaml() == (REPO / "configs" / "reference.yaml").read_text(encoding="utf-8")
    assert load_config(REPO / "configs" / "reference.yaml") == Config()
    assert typing.get_type_hints(Config)["data"] is not None


def test_checks_that_need_the_encoder_name_the_line_of_their_key(tmp_path):
    # An ALBERT scratch config of absurd size is refused where the encoder is built (the check needs
    # transformers' AlbertConfig defaults), still at the YAML line of `scratch`, not "config".
    from ner_toolkit.model.encoder import build_hf_encoder

    scratch = TINY_SCRATCH_YAML.replace("num_hidden_layers: 1", "num_hidden_layers: 0")
    path = tmp_path / "big.yaml"
    path.write_text(f"model:\n  encoder:\n    tokenizer: {TOKENIZER}\n\n    scratch: {scratch}\n")
    cfg = load_config(path).model.encoder
    with pytest.raises(UserError) as raised:
        build_hf_encoder(cfg)
    assert str(raised.value) == (f"error: {path}:5: `model.encoder.scratch`: `num_hidden_layers` must be at "
                                 "least 1, found 0")
