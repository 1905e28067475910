"""A model directory is received, not trusted: every file is checked before use, and it never decides to run code.

Each case copies the session's trained model directory, damages one file, and expects ``predict.py`` to exit 2
with one line naming that file, before any output is written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from ner_toolkit.cli import predict_main
from ner_toolkit.model.directory_checks import check_sizes
from ner_toolkit.errors import UserError

from conftest import REPO, assert_user_error, run_cli


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A damage that rewrites ``name`` as ``change(its JSON object)`` (None: the object changed in place)."""
    def damage(model: Path) -> None:
        raw = json.loads((model / name).read_text(encoding="utf-8"))
        result = change(raw)
        (model / name).write_text(json.dumps(raw if result is None else result), encoding="utf-8")
    return damage


def remove(name: str) -> Callable[[Path], None]:
    return lambda model: (model / name).unlink()


def truncate(name: str) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[: len(data) // 2])
    return damage


def truncated_spiece_only(model: Path) -> None:
    """The slow tokenizer's only vocabulary, cut in half (the fast tokenizer.json gone)."""
    (model / "tokenizer.json").unlink()
    data = (REPO / "ner_toolkit" / "resources" / "albert-base-v2" / "spiece.model").read_bytes()
    (model / "spiece.model").write_bytes(data[: len(data) // 2])


def drop_last_word(model: Path) -> None:
    lines = (model / "word_vocab.txt").read_text(encoding="utf-8").splitlines()
    (model / "word_vocab.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")


def replace_label(old: str, new: object) -> Callable[[dict], None]:
    return lambda raw: raw.__setitem__("labels", [new if label == old else label for label in raw["labels"]])


CASES = {
    # tokenizer files: never a fallback tokenizer
    "no-tokenizer-vocabulary": (remove("tokenizer.json"), "tokenizer.json", "missing"),
    "no-tokenizer-config": (remove("tokenizer_config.json"), "tokenizer_config.json", "missing"),
    "tokenizer-json-truncated": (truncate("tokenizer.json"), "tokenizer.json", "damaged"),
    "tokenizer-json-not-a-tokenizer": (lambda m: (m / "tokenizer.json").write_text("{}"), "tokenizer.json", "damaged"),
    "tokenizer-config-damaged": (truncate("tokenizer_config.json"), "tokenizer_config.json", "damaged JSON"),
    "spiece-model-truncated": (truncated_spiece_only, "spiece.model", "damaged"),
    "tokenizer-custom-code": (edit_json("tokenizer_config.json", lambda r: r.__setitem__("auto_map", {
        "AutoTokenizer": ["evil.Tok", None]})), "tokenizer_config.json", "custom code"),
    "tokenizer-larger-than-encoder": (edit_json("encoder/config.json", lambda r: r.__setitem__("vocab_size", 1000)),
                                      "tokenizer_config.json", "vocab_size is 1000"),
    # labels.json
    "labels-not-an-object": (edit_json("labels.json", lambda r: r["labels"]), "labels.json", "JSON object"),
    "labels-extra-key": (edit_json("labels.json", lambda r: r.__setitem__("extra", 1)), "labels.json", "exactly"),
    "labels-duplicate": (edit_json("labels.json", lambda r: r["labels"].append("B-PER")), "labels.json", "twice"),
    "labels-not-a-list": (edit_json("labels.json", lambda r: r.__setitem__("labels", "O B-PER")), "labels.json",
                          "list of strings"),
    "labels-not-strings": (edit_json("labels.json", replace_label("S-PER", 7)), "labels.json", "list of strings"),
    "labels-empty-label": (edit_json("labels.json", replace_label("S-PER", "")), "labels.json", "`labels`: empty tag"),
    "labels-without-O": (edit_json("labels.json", replace_label("O", "S-XYZ")), "labels.json", 'lacks "O"'),
    "labels-illegal-for-scheme": (edit_json("labels.json", replace_label("S-PER", "M-PER")), "labels.json",
                                  "`labels`: tag \"M-PER\" does not belong to the BIOES"),
    "tag-scheme-unknown": (edit_json("labels.json", lambda r: r.__setitem__("tag_scheme", "XYZ")), "labels.json",
                           "`tag_scheme`: unknown tagging scheme"),
    "tag-scheme-not-internal": (edit_json("labels.json", lambda r: r.__setitem__("tag_scheme", "IOB1")),
                                "labels.json", "`tag_scheme` 'IOB1' is not one of BIO, BIOES"),
    "output-scheme-unknown": (edit_json("labels.json", lambda r: r.__setitem__("output_scheme", "XYZ")),
                              "labels.json", "`output_scheme`"),
    "output-scheme-not-a-string": (edit_json("labels.json", lambda r: r.__setitem__("output_scheme", 3)),
                                   "labels.json", "`output_scheme` must be a string"),
    # config.json
    "config-json-a-list": (edit_json("encoder/config.json", lambda r: [r]), "encoder/config.json", "JSON object"),
    "config-json-unknown-model-type": (edit_json("encoder/config.json", lambda r: r.__setitem__("model_type", "evil")),
                                       "encoder/config.json", "`model_type` 'evil'"),
    "config-json-size-a-string": (edit_json("encoder/config.json", lambda r: r.__setitem__("hidden_size", "32")),
                                  "encoder/config.json", "`hidden_size` must be an integer"),
    "config-json-size-zero": (edit_json("encoder/config.json", lambda r: r.__setitem__("num_hidden_layers", 0)),
                              "encoder/config.json", "`num_hidden_layers` must be at least 1"),
    "config-json-heads-do-not-divide": (edit_json("encoder/config.json", lambda r: r.__setitem__("hidden_size", 33)),
                                        "encoder/config.json", "multiple of num_attention_heads"),
    "config-json-huge-vocabulary": (edit_json("encoder/config.json", lambda r: r.__setitem__("vocab_size", 10**12)),
                                    "encoder/config.json", "refusing to allocate"),
    "config-json-huge-hidden-size": (edit_json("encoder/config.json", lambda r: r.__setitem__("hidden_size", 10**7)),
                                     "encoder/config.json", "refusing to allocate"),
    "config-json-huge-in-total": (edit_json("encoder/config.json", lambda r: r.update(
                                      hidden_size=2**16, intermediate_size=2**18, num_attention_heads=1)),
                                  "encoder/config.json", "GiB limit"),
    # word_vocab.txt: its size decides a weight's shape, and the message says which file disagrees
    "word-vocab-short": (drop_last_word, "model.safetensors", "word_vocab.txt needs"),
}


@pytest.fixture
def model_copy(trained, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    return copy


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_file_names_it(case, model_copy, sample_data, tmp_path, capsys):
    damage, name, phrase = CASES[case]
    damage(model_copy)
    out = tmp_path / "o.txt"
    rc = predict_main(["--model", str(model_copy), str(sample_data.dev), "--output", str(out)])
    assert_user_error(rc, capsys.readouterr().err, str(model_copy / name), phrase)
    assert not out.exists()


def plant_custom_code(model: Path, marker: Path) -> None:
    """A module the directory's config.json asks transformers to import; importing it writes ``marker``."""
    (model / "encoder" / "custom_albert.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import AlbertConfig, AlbertModel\n"
        "class CustomConfig(AlbertConfig):\n"
        "    pass\n"
        "class CustomModel(AlbertModel):\n"
        "    config_class = CustomConfig\n", encoding="utf-8")
    raw = json.loads((model / "encoder" / "config.json").read_text(encoding="utf-8"))
    raw["auto_map"] = {"AutoConfig": "custom_albert.CustomConfig", "AutoModel": "custom_albert.CustomModel"}
    (model / "encoder" / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    # The directory's own config.yaml asks for remote code too: it must not count.
    config = model / "config.yaml"
    text = config.read_text(encoding="utf-8")
    assert "trust_remote_code: false" in text
    config.write_text(text.replace("trust_remote_code: false", "trust_remote_code: true"), encoding="utf-8")


def test_directory_cannot_switch_on_remote_code(model_copy, sample_data, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    plant_custom_code(model_copy, marker)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))  # run_cli passes the environment on
    out = tmp_path / "o.txt"
    proc = run_cli("predict.py", ["--model", model_copy, sample_data.dev, "--output", out])
    assert_user_error(proc.returncode, proc.stderr, str(model_copy / "encoder" / "config.json"), "custom code",
                      "--trust-remote-code")
    assert not marker.exists()
    assert not out.exists()


def test_remote_code_runs_only_when_the_user_says_so(model_copy, sample_data, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    plant_custom_code(model_copy, marker)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    out = tmp_path / "o.txt"
    proc = run_cli("predict.py", ["--model", model_copy, sample_data.dev, "--output", out, "--trust-remote-code"])
    assert proc.returncode == 0, proc.stderr
    assert marker.exists() and out.exists()


def test_load_model_ignores_the_directory_trust_setting(model_copy, tmp_path):
    from ner_toolkit.model.directory import load_model

    marker = tmp_path / "pwned"
    plant_custom_code(model_copy, marker)
    with pytest.raises(UserError, match="custom code"):
        load_model(model_copy)
    assert not marker.exists()


def test_scratch_encoder_too_large_for_memory():
    from ner_toolkit.config import EncoderConfig

    from ner_toolkit.model.encoder import scratch_config

    for scratch, phrase in (({"hidden_size": 10**7, "num_attention_heads": 1}, "refusing to allocate"),
                            ({"hidden_size": 2**16, "num_attention_heads": 1, "intermediate_size": 2**18}, "GiB"),
                            ({"num_hidden_layers": -1}, "at least 1"), ({"hidden_size": 1.5}, "integer")):
        with pytest.raises(UserError, match=phrase) as info:
            scratch_config(EncoderConfig(scratch=scratch, tokenizer="builtin:albert-base-v2"), 30000)
        assert "model.encoder.scratch" in str(info.value)


def test_size_bound_keeps_real_encoders():
    # albert-xxlarge (shared layers) and bert-large must stay loadable.
    check_sizes({"model_type": "albert", "vocab_size": 30000, "embedding_size": 128, "hidden_size": 4096,
                 "num_attention_heads": 64, "intermediate_size": 16384, "num_hidden_layers": 12,
                 "num_hidden_groups": 1, "inner_group_num": 1, "max_position_embeddings": 512}, "config.json", "x")
    check_sizes({"model_type": "bert", "vocab_size": 30522, "hidden_size": 1024, "num_attention_heads": 16,
                 "intermediate_size": 4096, "num_hidden_layers": 24}, "config.json", "x")
