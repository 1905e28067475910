"""The Python training API: ``ner_toolkit.train`` from a dict, a YAML path with overrides, or a Config;
errors raise UserError (FILE:LINE) and never exit; nothing is printed; a finished model is never silently
replaced; ``import ner_toolkit`` stays free of torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ner_toolkit
from conftest import REPO, Data, assert_user_error, run_cli, tiny_config_text
from ner_toolkit import Predictor, TrainResult, UserError


def tiny(sample_data: Data, output_dir: Path, epochs: int = 2) -> dict:
    return yaml.safe_load(tiny_config_text(sample_data.train, sample_data.dev, sample_data.test, str(output_dir),
                                           epochs=epochs))


def test_train_from_a_dict(sample_data: Data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = ner_toolkit.train(tiny(sample_data, tmp_path / "unused"), {"training.epochs": 1},
                               output_dir=tmp_path / "run")
    assert isinstance(result, TrainResult)
    assert result.output_dir == tmp_path / "run" and result.model_dir == tmp_path / "run" / "model"
    assert result.config.training.epochs == 1 and result.best_epoch == 1
    assert 0.0 <= result.dev_f1 <= 1.0 and result.test_f1 == result.metrics["test"]["micro"]["f1"]
    assert result.metrics["dev"]["micro"]["f1"] == pytest.approx(result.dev_f1)
    assert capsys.readouterr().out == ""  # the summary line is a log record, not a print
    tagger = Predictor.load(result.model_dir)
    tokens = ["EU", "rejects", "German", "call", "."]
    [tags] = tagger.predict([tokens])
    assert len(tags) == len(tokens) and all(isinstance(t, str) for t in tags)


def test_train_from_a_yaml_path_with_overrides(sample_data: Data, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(tiny_config_text(sample_data.train, sample_data.dev, None, str(tmp_path / "out"), epochs=3),
                    encoding="utf-8")
    with caplog.at_level("INFO", logger="ner_toolkit"):
        result = ner_toolkit.train(str(path), overrides=["training.epochs=1", "training.seed=3"])
    assert result.output_dir == tmp_path / "out" and result.config.training.seed == 3
    assert result.test_f1 is None and result.metrics["test"] is None
    assert any(r.getMessage().startswith("done:") for r in caplog.records)
    assert (result.model_dir / "model.safetensors").is_file()
    # A Config object runs too; its finished model is not replaced unless asked.
    with pytest.raises(UserError, match="holds a finished model .* --overwrite"):
        ner_toolkit.train(result.config)
    again = ner_toolkit.train(result.config, overwrite=True)
    assert again.model_dir == result.model_dir


def test_a_bad_config_raises_user_error_with_its_line(tmp_path: Path, sample_data: Data) -> None:
    path = tmp_path / "bad.yaml"
    text = tiny_config_text(sample_data.train, None, None, str(tmp_path / "out")).replace("epochs: 5", "epochs: -1")
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  epochs: -1") + 1
    with pytest.raises(UserError) as caught:
        ner_toolkit.train(path)
    assert str(caught.value).startswith(f"error: {path}:{line}: ")
    with pytest.raises(UserError) as caught:  # an override of a mapping is named as the CLI's --set is
        ner_toolkit.train(tiny(sample_data, tmp_path), {"training.seed": 1, "training.epochs": 0})
    assert str(caught.value).startswith("error: --set:2: ") and "training.epochs" in str(caught.value)
    with pytest.raises(UserError, match=r"^error: --set: cannot set `training.epochs.x`: `training.epochs` is "
                                        "not a section"):
        ner_toolkit.train(tiny(sample_data, tmp_path), ["training.epochs.x=1"])
    with pytest.raises(UserError, match="not one string"):
        ner_toolkit.train(path, "training.epochs=1")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="not int"):
        ner_toolkit.train(3)


def test_re_running_a_config_refuses_to_replace_its_model(tmp_path: Path, sample_data: Data) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(tiny_config_text(sample_data.train, None, None, str(tmp_path / "out"), epochs=1),
                    encoding="utf-8")
    first = run_cli("train.py", ["--config", path])
    assert first.returncode == 0, first.stderr
    weights = (tmp_path / "out" / "model" / "model.safetensors").read_bytes()
    again = run_cli("train.py", ["--config", path])
    assert_user_error(again.returncode, again.stderr, str(tmp_path / "out"), "--overwrite", "--resume",
                      "--set output_dir=")
    assert (tmp_path / "out" / "model" / "model.safetensors").read_bytes() == weights
    both = run_cli("train.py", ["--config", path, "--overwrite", "--resume"])
    assert_user_error(both.returncode, both.stderr, "--overwrite", "--resume")
    replaced = run_cli("train.py", ["--config", path, "--overwrite", "--set", "training.seed=5"])
    assert replaced.returncode == 0 and "done:" in replaced.stdout, replaced.stderr


def test_importing_the_package_imports_no_torch() -> None:
    code = ("import sys, ner_toolkit; assert 'torch' not in sys.modules; "
            "assert callable(ner_toolkit.train) and 'torch' not in sys.modules; print(sorted(dir(ner_toolkit)))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in ner_toolkit.__all__)
    with pytest.raises(AttributeError):
        ner_toolkit.no_such_name  # noqa: B018


def test_overwrite_and_resume_together_are_refused(sample_data: Data, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="give one of them"):
        ner_toolkit.train(tiny(sample_data, tmp_path / "out"), resume=True, overwrite=True)
