"""Bad data, killed processes and hostile model directories: clear errors, nothing lost, nothing executed."""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_toolkit.cli import predict_main, train_main
from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import is_legal
from ner_toolkit.streaming import predict_file

from conftest import REPO, assert_user_error


def token_line_count(path: Path) -> int:
    return sum(len(s.tokens) for s in read_sentences(path))


# --------------------------------------------------------------------------- bad input that is still usable

def test_crlf_bom_and_whitespace_separators_predict(trained, tmp_path, capsys):
    text = "\ufeff-DOCSTART- -X- O\r\n\r\nEU NNP B-ORG\r\nrejects VBZ O\r\n \t \r\nPeter NNP B-PER\r\n\t\r\nBlackburn NNP I-PER"
    source = tmp_path / "in.txt"
    source.write_bytes(text.encode("utf-8"))
    out = tmp_path / "out.txt"
    assert predict_main(["--model", str(trained.model_dir), str(source), "--output", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    # Every line comes back in place (separators verbatim), token lines gain one column.
    assert lines[:7] == ["-DOCSTART- -X- O O", "", lines[2], lines[3], " \t ", lines[5], "\t"]
    assert [len(line.split()) for line in (lines[2], lines[3], lines[5], lines[7])] == [4, 4, 4, 4]
    assert token_line_count(out) == 4


def test_illegal_sequences_are_repaired_and_reported(tiny_config, tmp_path, capsys):
    broken = tmp_path / "train.txt"
    legal = "John B-PER\nSmith I-PER\nvisited O\nParis B-LOC\n\n"
    # Two sentences with a BIO-illegal start (I- after O or at the start): read the conlleval way.
    broken.write_text("EU I-ORG\nrejects O\n\nPeter B-PER\nsaid O\nLondon I-LOC\n\n" + legal * 5, encoding="utf-8")
    rc = train_main(["--config", str(tiny_config), "--output-dir", str(tmp_path / "run"), "--set", f"data.train={broken}",
                     "--set", "data.dev=null", "--set", "data.input_scheme=BIO", "--set", "training.epochs=1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert f"{broken}: repaired 2 sentences with illegal BIO sequences" in err
    # The repair keeps the conlleval reading: I-ORG and I-LOC became entities of their own.
    labels = (tmp_path / "run" / "model" / "labels.json").read_text(encoding="utf-8")
    assert "ORG" in labels and "LOC" in labels


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"], ids=["empty", "blank", "docstart-only"])
def test_training_file_without_sentences(tiny_config, tmp_path, capsys, content):
    train = tmp_path / "train.txt"
    train.write_text(content, encoding="utf-8")
    rc = train_main(["--config", str(tiny_config), "--output-dir", str(tmp_path / "run"), "--set", f"data.train={train}"])
    assert_user_error(rc, capsys.readouterr().err, str(train), "no sentences")
    assert not (tmp_path / "run").exists()


def test_prediction_input_without_sentences(trained, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("-DOCSTART- -X- -X- O\n\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert predict_main(["--model", str(trained.model_dir), str(source), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "-DOCSTART- -X- -X- O O\n\n"


def test_ten_thousand_token_sentence(predictor):
    words = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."] * 1112
    words = words[:10_000]
    tags = predictor.predict([words])[0]
    assert len(tags) == 10_000
    assert is_legal(tags, predictor.labels.output_scheme)


# --------------------------------------------------------------------------- nothing lost

def test_killed_prediction_leaves_the_previous_file_or_none(trained, sample_data, tmp_path):
    """SIGKILL in the middle of writing: the output path holds the old complete file (or nothing)."""
    sentences = sample_data.dev.read_text(encoding="utf-8").split("\n\n")
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(s for s in sentences * 400 if s.strip()) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    previous = "an earlier, complete prediction\n"
    for existing in (None, previous):
        if existing is not None:
            out.write_text(existing, encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, str(REPO / "predict.py"), "--model", str(trained.model_dir), str(big),
                                 "--output", str(out), "--batch-size", "8"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        # Wait until the temporary output has content: the kill then lands mid-write.
        while time.time() < deadline and proc.poll() is None:
            partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.txt") and p.stat().st_size > 0]
            if partial:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "prediction finished before it could be killed; make the input larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if existing is None:
            assert not out.exists()
        else:
            assert out.read_text(encoding="utf-8") == existing


# --------------------------------------------------------------------------- nothing executed

class _Payload:
    """Unpickling this creates the marker file: the proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickles_are_never_unpickled(trained, sample_data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    # Pickles a model directory could hold, next to intact files: they must be ignored.
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                 "tokenizer.pkl", "vocab.pkl", "model.ckpt"):
        (model / name).write_bytes(payload)
    torch.save({"x": _Payload(marker)}, model / "checkpoint.pt")
    out = tmp_path / "out.txt"
    assert predict_main(["--model", str(model), str(sample_data.dev), "--output", str(out)]) == 0
    assert not marker.exists()
    capsys.readouterr()
    # Pickles in place of the files that are read: the load fails with a clear message.
    for name in ("model.safetensors", "word_vocab.txt", "labels.json", "config.json", "tokenizer.json"):
        damaged = tmp_path / f"damaged-{name}"
        shutil.copytree(trained.model_dir, damaged)
        if name == "model.safetensors":
            torch.save({"w": _Payload(marker)}, damaged / name)  # a torch pickle zip under the safetensors name
        else:
            (damaged / name).write_bytes(payload)
        rc = predict_main(["--model", str(damaged), str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and err.startswith("error: "), (name, err)
        assert not marker.exists(), name
    # YAML that would construct Python objects is refused (safe_load), never executed.
    hostile = tmp_path / "hostile"
    shutil.copytree(trained.model_dir, hostile)
    (hostile / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    rc = predict_main(["--model", str(hostile), str(sample_data.dev), "--output", str(tmp_path / "o.txt")])
    assert_user_error(rc, capsys.readouterr().err, "config.yaml")
    assert not marker.exists()


def test_hostile_training_config_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "exp.yaml"
    config.write_text(f"output_dir: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    rc = train_main(["--config", str(config)])
    assert_user_error(rc, capsys.readouterr().err, str(config), ":1:")
    assert not marker.exists()


# --------------------------------------------------------------------------- token lines in = token lines out

_TOKEN = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"),
                 min_size=1, max_size=30).filter(lambda t: t != "-DOCSTART-")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentences=st.lists(st.lists(_TOKEN, min_size=1, max_size=40), min_size=1, max_size=12),
       columns=st.integers(1, 4), separators=st.lists(st.sampled_from(["", " ", "\t", "  \t"]), min_size=1),
       docstart=st.booleans())
def test_prediction_keeps_every_token_line(predictor, sentences, columns, separators, docstart):
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for i, tokens in enumerate(sentences):
        for token in tokens:
            lines.append(" ".join([token] + ["X"] * (columns - 2) + (["O"] if columns > 1 else [])))
        lines.append(separators[i % len(separators)])
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.txt", Path(tmp) / "out.txt"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        predict_file(predictor, source, out)
        got = read_sentences(out)
        expected = read_sentences(source)
        assert [len(s.tokens) for s in got] == [len(s.tokens) for s in expected]
        for a, b in zip(got, expected):
            assert [c[:-1] for c in a.columns] == b.columns  # input columns kept, one added
        assert len(out.read_text(encoding="utf-8").split("\n")) == len(source.read_text(encoding="utf-8").split("\n"))
