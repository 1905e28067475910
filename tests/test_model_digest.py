"""The weights carry digests of labels.json and config.yaml's model section (``model/directory.py``):
a labels.json that lists the same labels in another order loads and tags wrongly otherwise (every shape
fits). Directories saved before the digests existed load as they did."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ner_toolkit.cli import predict_main
from ner_toolkit.errors import UserError
from ner_toolkit.model import directory_checks as checks

from conftest import assert_user_error, run_cli


def reorder_labels(model: Path) -> None:
    """The same labels, O first, the others reversed: a valid labels.json with every shape unchanged."""
    raw = json.loads((model / "labels.json").read_text(encoding="utf-8"))
    labels = raw["labels"]
    raw["labels"] = [labels[0]] + labels[1:][::-1]
    (model / "labels.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")


def strip_digests(model: Path) -> None:
    """The weights as a directory saved before the digests existed holds them."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(model / "model.safetensors"))
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def model_copy(trained, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    return copy


def test_training_records_the_digests(trained) -> None:
    metadata = checks.weight_header(trained.model_dir / "model.safetensors")[1]
    raw = json.loads((trained.model_dir / "labels.json").read_text(encoding="utf-8"))
    assert metadata[checks.LABELS_DIGEST] == checks.labels_digest(raw["labels"], raw["tag_scheme"])
    assert set(metadata) >= {checks.LABELS_DIGEST, checks.CONFIG_DIGEST}


def test_labels_in_another_order_are_refused_by_predict_py(model_copy: Path, sample_data, tmp_path: Path) -> None:
    reorder_labels(model_copy)
    out = tmp_path / "o.txt"
    proc = run_cli("predict.py", ["--model", model_copy, sample_data.dev, "--output", out])
    assert_user_error(proc.returncode, proc.stderr, str(model_copy / "labels.json"), "another order")
    assert not out.exists()


def test_labels_in_another_order_are_refused_by_load_model(model_copy: Path) -> None:
    from ner_toolkit.model.directory import load_model

    reorder_labels(model_copy)
    with pytest.raises(UserError) as info:
        load_model(model_copy)
    assert info.value.path == str(model_copy / "labels.json")


def test_a_changed_model_section_is_refused_and_other_edits_are_not(model_copy: Path, sample_data, tmp_path,
                                                                     capsys) -> None:
    config = model_copy / "config.yaml"
    text = config.read_text(encoding="utf-8")
    # Not the model: a comment, and the directory's own trust setting (which loading never reads).
    config.write_text("# my notes\n" + text.replace("trust_remote_code: false", "trust_remote_code: true"),
                      encoding="utf-8")
    assert predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "a")]) == 0
    assert "lowercase: false" in text
    config.write_text(text.replace("lowercase: false", "lowercase: true", 1), encoding="utf-8")
    capsys.readouterr()
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "b")])
    assert_user_error(rc, capsys.readouterr().err, str(config), "`model` section")


def test_a_directory_saved_before_the_digests_loads_unchecked(model_copy: Path, sample_data, tmp_path) -> None:
    strip_digests(model_copy)
    assert predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "a")]) == 0
    reorder_labels(model_copy)  # nothing to check it against: loads, as before
    assert predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(tmp_path / "b")]) == 0


def test_weights_files_are_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    """safetensors writes its metadata from a hash map, in an order that changes with each process; the
    model directory's weights must not (resumed runs are compared bit for bit)."""
    import subprocess
    import sys

    script = ("import sys, torch; from pathlib import Path; from ner_toolkit.model.directory import save_weights; "
              "save_weights({'w': torch.arange(6.0).view(2, 3), 'b': torch.ones(2, dtype=torch.float16)}, "
              "Path(sys.argv[1]), {f'key{i}': str(i) for i in range(8)} | {'format': 'pt'})")
    for i in range(4):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{i}.safetensors")], check=True)
    files = {(tmp_path / f"{i}.safetensors").read_bytes() for i in range(4)}
    assert len(files) == 1
