"""The model directory as others meet it: its model card, transformers refusing it clearly, the layout before
``encoder/`` still loading, and ``--model org/name`` resolved through a local Hugging Face cache."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from ner_toolkit.cli import predict_main
from ner_toolkit.errors import UserError
from ner_toolkit.model.card import build_card, front_matter
from ner_toolkit.model.directory import load_model, resolve_model_dir
from ner_toolkit.model.hub import cache_repo_root, parse_repo_id

from conftest import assert_user_error


def card_of(trained) -> str:
    return (trained.model_dir / "README.md").read_text(encoding="utf-8")


def code_blocks(card: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", card, flags=re.S)


# --------------------------------------------------------------------------- the card


def test_card_describes_the_trained_model(trained):
    card = card_of(trained)
    model = trained.model_dir
    labels = json.loads((model / "labels.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    front, body = card.split("---\n", 2)[1:]
    assert "library_name: ner_toolkit" in front and "- token-classification" in front and "- ner" in front
    for entity_type in ("LOC", "MISC", "ORG", "PER"):
        assert f"**{entity_type}**" in body
    assert "predictions are written in **IOB1**" in body and "works in **BIOES** over 17 labels" in body
    assert all(f"`{label}`" in body for label in labels["labels"])
    assert "**conll** word tokeniser" in body and "data.word_tokenizer" in body
    assert "randomly initialised ALBERT" in body and '"hidden_size": 32' in body and "builtin:albert-base-v2" in body
    assert "BiLSTM (1 x 32 per direction) -> CRF" in body
    assert "`config.yaml` in this directory" in body
    # The data: names, counts, checksums.
    data_dir = trained.config.parent
    for split, sentences in (("train", 60), ("dev", 30), ("test", 20)):
        digest = hashlib.sha256((data_dir / f"{split}.txt").read_bytes()).hexdigest()
        row = next(line for line in body.splitlines() if line.startswith(f"| {split} | `{split}.txt` |"))
        assert f"| {sentences} |" in row and digest in row, row
    # The command that trained it, as run.
    (command,) = [block for block in code_blocks(body, "bash") if "train.py" in block]
    argv = shlex.split(command)
    assert argv[0] == "python" and argv[1].endswith("train.py")
    assert argv[2:] == ["--config", str(trained.config), "--set", f"data.test={data_dir / 'test.txt'}",
                        "--output-dir", str(trained.output_dir)]
    # Every score is metrics.json's, in percent with two decimals.
    assert f"(epoch {metrics['epoch']}, the best dev F1)" in body
    evaluation = body.split("## Evaluation", 1)[1]
    for split in ("dev", "test"):
        section = evaluation.split(f"**{split}**", 1)[1].split("\n\n", 2)[1]
        micro = metrics[split]["micro"]
        assert (f"| **micro avg** | {100 * micro['precision']:.2f} | {100 * micro['recall']:.2f} | "
                f"{100 * micro['f1']:.2f} | {micro['support']} |") in section
        for name, row in metrics[split]["per_type"].items():
            assert (f"| {name} | {100 * row['precision']:.2f} | {100 * row['recall']:.2f} | {100 * row['f1']:.2f} | "
                    f"{row['support']} |") in section
    assert "License" in body and "Limitations" in body


def test_card_usage_snippet_runs(trained, capsys):
    (snippet,) = code_blocks(card_of(trained), "python")
    assert f"Predictor.load({str(trained.model_dir)!r})" in snippet
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the card's own example
    printed = capsys.readouterr().out.splitlines()
    tagger = namespace["tagger"]
    assert len(printed) == len(tagger.predict_text("EU rejects German call to boycott British lamb. "
                                                   "Peter Blackburn reported from Brussels."))


def test_card_predict_command_reproduces_the_test_score(trained, tmp_path, capsys):
    card = card_of(trained)
    (command,) = [block for block in code_blocks(card, "bash") if "--evaluate" in block]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "predict.py"]
    scores = tmp_path / "scores.json"
    assert predict_main(argv[2:] + ["--json", str(scores), "--output", str(tmp_path / "test.pred")]) == 0
    capsys.readouterr()
    metrics = json.loads((trained.model_dir / "metrics.json").read_text())
    got = json.loads(scores.read_text())
    assert got["micro"] == pytest.approx(metrics["test"]["micro"])
    assert set(got["per_type"]) == set(metrics["test"]["per_type"])
    for name, row in metrics["test"]["per_type"].items():
        assert got["per_type"][name] == pytest.approx(row), name


def front_matter_of(card: str) -> dict:
    """The card's YAML front matter, parsed as the Hub parses it (a YAML mapping between ``---`` lines)."""
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_front_matter_is_yaml_with_what_the_hub_reads(trained):
    card = card_of(trained)
    meta = front_matter_of(card)
    metrics = json.loads((trained.model_dir / "metrics.json").read_text())
    assert meta["library_name"] == "ner_toolkit" and meta["pipeline_tag"] == "token-classification"
    assert {"token-classification", "ner"} <= set(meta["tags"]) and meta["metrics"] == ["precision", "recall", "f1"]
    assert "license" not in meta and "add a `license:` to the front matter" in card  # not ours to choose
    (index,) = meta["model-index"]
    scored = {r["dataset"]["split"]: r for r in index["results"]}
    assert set(scored) == {"validation", "test"} and scored["test"]["dataset"]["name"] == "test.txt"
    for split, hub_split in (("dev", "validation"), ("test", "test")):
        result = scored[hub_split]
        assert result["task"]["type"] == "token-classification"
        values = {m["type"]: m["value"] for m in result["metrics"]}
        assert values == {k: round(100 * metrics[split]["micro"][k], 2) for k in ("precision", "recall", "f1")}
    # The Hub's own reader takes it: the same evaluation results.
    from huggingface_hub import ModelCard

    hub = ModelCard(card)
    assert hub.data.library_name == "ner_toolkit"
    f1 = {r.dataset_split: r.metric_value for r in hub.data.eval_results if r.metric_type == "f1"}
    assert f1 == {"validation": round(100 * metrics["dev"]["micro"]["f1"], 2),
                  "test": round(100 * metrics["test"]["micro"]["f1"], 2)}


@pytest.mark.parametrize("name", ["plain", "a: b", "#hash", "'quoted\"", "---", "- dash", "yes", "null", "über 日本"])
def test_front_matter_survives_any_name_and_path(name):
    """Names and paths go through PyYAML: whatever they hold, the front matter parses to them."""
    metrics = {"epoch": 1, "dev": None, "test": {"micro": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3}}}
    card = build_card({"data": {"test": f"/data/{name}"}}, {"labels": ["O"]}, metrics, None, f"/runs/{name}/model")
    meta = front_matter_of(card)
    assert meta == front_matter(name, metrics, None, {"test": f"/data/{name}"})
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == name and result["dataset"]["name"] == name
    assert [m["value"] for m in result["metrics"]] == [50.0, 25.0, 33.33]


def test_front_matter_without_scores_has_no_metrics():
    meta = front_matter("m", {"epoch": 1, "dev": None, "test": None})
    assert meta == {"library_name": "ner_toolkit", "tags": ["token-classification", "ner", "ner_toolkit", "bilstm-crf"],
                    "pipeline_tag": "token-classification"}
    assert front_matter_of(build_card({}, {"labels": ["O"]})) == meta


def test_build_card_is_pure_and_handles_a_run_in_progress():
    config = {"data": {"word_tokenizer": "chars", "train": "zh.txt"},
              "model": {"encoder": {"name_or_path": "org/encoder", "pooling": "mean"}, "fusion": "none",
                        "lstm": {"enabled": False}, "decoder": "softmax"},
              "training": {"epochs": 3}}
    labels = {"labels": ["O", "B-A|B", "I-A|B"], "tag_scheme": "BIO", "output_scheme": "BMES"}
    card = build_card(config, labels, {"epoch": 1, "dev": None, "test": None})
    assert card == build_card(config, labels, {"epoch": 1, "dev": None, "test": None})
    assert "No scores yet" in card and "**chars** word tokeniser" in card and "**BMES**" in card
    assert "pretrained `org/encoder`" in card and "-> softmax" in card and "BiLSTM" not in card
    assert "**A\\|B**" in card  # a pipe in a type name cannot break a table
    assert "counts and checksums not recorded" in card and "MODEL_DIR" in card


# --------------------------------------------------------------------------- transformers refuses it


def test_transformers_pipeline_refuses_the_directory_clearly(trained):
    import transformers

    model = str(trained.model_dir)
    for load in (lambda: transformers.pipeline("token-classification", model=model),
                 lambda: transformers.AutoModel.from_pretrained(model),
                 lambda: transformers.AutoModelForTokenClassification.from_pretrained(model)):
        with pytest.raises(ValueError) as info:
            load()
        message = str(info.value)
        assert "ner_toolkit: not a transformers model" in message
        assert "Predictor.load(DIR) or predict.py --model DIR" in message
    assert not (trained.model_dir / "encoder" / "model.safetensors").exists()


# --------------------------------------------------------------------------- layouts


def old_layout(trained, directory: Path) -> Path:
    """A directory as saved before encoder/: the encoder's config at the top level, no marker, no card."""
    shutil.copytree(trained.model_dir, directory)
    (directory / "config.json").unlink()
    (directory / "encoder" / "config.json").rename(directory / "config.json")
    (directory / "encoder").rmdir()
    (directory / "README.md").unlink()
    return directory


SENTENCES = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "went", "to", "Brussels", "."]]


def test_old_layout_still_loads(trained, predictor, tmp_path):
    from ner_toolkit.predict import Predictor

    old = old_layout(trained, tmp_path / "old")
    assert Predictor.load(old).predict(SENTENCES) == predictor.predict(SENTENCES)
    # Damage in the old layout's encoder config is still named.
    (old / "config.json").write_text('{"model_type": "evil"}', encoding="utf-8")
    with pytest.raises(UserError, match="`model_type` 'evil'") as info:
        load_model(old)
    assert info.value.path == str(old / "config.json")


def test_marker_is_optional_but_never_an_encoder_config(trained, predictor, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    (copy / "config.json").unlink()  # the marker gone: encoder/config.json is still found
    assert load_model(copy).tagger is not None
    shutil.copy(copy / "encoder" / "config.json", copy / "config.json")
    with pytest.raises(UserError, match="mixed") as info:
        load_model(copy)
    assert info.value.path == str(copy / "config.json")
    (copy / "config.json").unlink()
    (copy / "encoder" / "config.json").unlink()
    with pytest.raises(UserError, match="missing") as info:
        load_model(copy)
    assert info.value.path == str(copy / "encoder" / "config.json")


# --------------------------------------------------------------------------- symlinks


def test_symlinks_out_of_the_directory_are_refused(trained, sample_data, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    outside = tmp_path / "elsewhere.json"
    shutil.move(copy / "labels.json", outside)
    os.symlink(outside, copy / "labels.json")
    out = tmp_path / "o.txt"
    rc = predict_main(["--model", str(copy), str(sample_data.dev), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, str(copy / "labels.json"), "outside the model directory")
    assert not out.exists()
    # A link inside the directory is fine; one out of encoder/ is not.
    (copy / "labels.json").unlink()
    shutil.move(outside, copy / "labels.real.json")
    os.symlink("labels.real.json", copy / "labels.json")
    assert load_model(copy).labels.labels[0] == "O"
    shutil.move(copy / "encoder" / "config.json", tmp_path / "encoder.json")
    os.symlink(tmp_path / "encoder.json", copy / "encoder" / "config.json")
    with pytest.raises(UserError, match="outside the model directory"):
        load_model(copy)


# --------------------------------------------------------------------------- Hub repo ids via the HF cache


def lay_out_cache(hub: Path, repo_id: str, model_dir: Path, commit: str, refs: tuple[str, ...] = ("main",),
                  under: str = "") -> Path:
    """The HF cache layout: files in blobs/<sha256>, relative symlinks in snapshots/<commit>/, refs/<name>."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for source in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / under / source.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # as huggingface_hub writes it: no newline
    return snapshot


MAIN, V1 = "a" * 40, "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(trained, tmp_path, monkeypatch) -> Path:
    hub = tmp_path / "hub"
    lay_out_cache(hub, "org/name", trained.model_dir, MAIN)
    lay_out_cache(hub, "org/name", trained.model_dir, V1, refs=("v1",), under="model")  # a whole run directory
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_repo_id_parsing():
    assert parse_repo_id("org/name") == ("org/name", None)
    assert parse_repo_id("org/name@v1") == ("org/name", "v1")
    assert parse_repo_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    for bad in ("name", "org/name/x", "/abs/path", "./rel/x", "org/../x", "org--x/name", "org/name@", "~/x"):
        assert parse_repo_id(bad) is None, bad


def test_model_from_the_hf_cache(hub_cache, trained, predictor, sample_data, tmp_path, capsys):
    snapshot = hub_cache / "models--org--name" / "snapshots" / MAIN
    assert (snapshot / "labels.json").is_symlink() and (snapshot / "encoder" / "config.json").is_symlink()
    assert resolve_model_dir("org/name") == snapshot
    assert cache_repo_root(snapshot) == hub_cache / "models--org--name"
    assert load_model("org/name").tagger is not None
    for name, expected in (("org/name@v1", snapshot.parent / V1 / "model"),
                           (f"org/name@{V1}", snapshot.parent / V1 / "model"), (f"org/name@{MAIN}", snapshot)):
        assert resolve_model_dir(name) == expected, name
    # predict.py --model org/name: the same output as the local directory.
    local, cached = tmp_path / "local.txt", tmp_path / "cached.txt"
    assert predict_main(["--model", str(trained.model_dir), str(sample_data.test), "--output", str(local)]) == 0
    assert predict_main(["--model", "org/name@v1", str(sample_data.test), "--output", str(cached)]) == 0
    capsys.readouterr()
    assert cached.read_text(encoding="utf-8") == local.read_text(encoding="utf-8")


def test_hub_repo_not_cached(hub_cache, sample_data, tmp_path, capsys):
    with pytest.raises(UserError) as info:
        load_model("org/other")
    message = str(info.value)
    assert "not in the local HF cache" in message and "`hf download org/other`" in message
    assert "pass a local directory" in message and str(hub_cache) in message
    with pytest.raises(UserError, match="at revision v2 is not in the local HF cache.*--revision v2"):
        resolve_model_dir("org/name@v2")
    rc = predict_main(["--model", "org/other", str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, "org/other", "not in the local HF cache")
    # A path meant as local is never looked up on the Hub.
    with pytest.raises(UserError, match="model directory not found"):
        resolve_model_dir(str(tmp_path / "missing"))


def test_cache_symlink_out_of_the_repo_is_refused(hub_cache, tmp_path):
    snapshot = hub_cache / "models--org--name" / "snapshots" / MAIN
    outside = tmp_path / "labels.json"
    shutil.copy(snapshot / "labels.json", outside)
    (snapshot / "labels.json").unlink()
    os.symlink(outside, snapshot / "labels.json")
    with pytest.raises(UserError, match="outside the model directory") as info:
        load_model("org/name")
    assert info.value.path == str(snapshot / "labels.json")
