"""The real pretrained checkpoint and word vectors in ../shared, used exactly as shipped: all-MiniLM-L6-v2
(BERT, uncased, a tokenizer.json that fixes padding and truncation at 128, a pooler the tagger does not use)
and GloVe 6B 50-d (400,000 words). Train, save, load, predict and export, as a user runs them.

Skipped when ../shared is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Data, run_cli, tiny_config_text

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
GLOVE = SHARED / "vectors" / "glove.6B.50d.txt.gz"
pytestmark = pytest.mark.skipif(not ((MINILM / "model.safetensors").is_file() and GLOVE.is_file()),
                                reason="../shared/models/all-MiniLM-L6-v2 or the GloVe file not found")


@pytest.fixture(scope="module")
def minilm_run(sample_data: Data, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One epoch over the sliced sample: MiniLM + GloVe + characters -> BiLSTM -> CRF, through train.py."""
    directory = tmp_path_factory.mktemp("minilm")
    config = directory / "minilm.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.dev, sample_data.test, epochs=1),
                      encoding="utf-8")
    out = directory / "out"
    proc = run_cli("train.py", ["--config", config, "--output-dir", out,
                                "--set", f"model.encoder={{name_or_path: '{MINILM}'}}",
                                "--set", f"model.words={{dim: 50, vectors: '{GLOVE}'}}",
                                "--set", "model.chars.enabled=true", "--set", "training.lr.encoder=5.0e-5"],
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def test_loading_says_one_line_about_the_unused_pooler(minilm_run: tuple[Path, str]) -> None:
    _, stderr = minilm_run
    assert "LOAD REPORT" not in stderr and "Loading weights" not in stderr
    lines = [line for line in stderr.splitlines() if "pooler" in line]
    assert len(lines) == 1 and lines[0].startswith("encoder: 2 weights") and "left out (pooler.*)" in lines[0]
    assert "388,026 more words of the file kept" not in stderr  # the sample's vocabulary is not CoNLL's
    assert "more words of the file kept for words training never sees" in stderr


def test_words_become_the_subwords_of_the_word_alone(minilm_run: tuple[Path, str], sample_data: Data) -> None:
    from ner_toolkit.predict import Predictor

    predictor = Predictor.load(minilm_run[0])
    words = [line.split()[0] for line in sample_data.test.read_text().splitlines()
             if line.strip() and not line.startswith("-DOCSTART-")]
    pieces = predictor.aligner.pieces([words])[0]
    tokenizer = predictor.aligner.tokenizer
    assert pieces == [tokenizer(w, add_special_tokens=False)["input_ids"][:24] or [tokenizer.unk_token_id]
                      for w in words]
    assert sum(map(len, pieces)) < 2 * len(words)  # not 128 a word
    # The vocabulary keeps GloVe's words that training never saw: the test's unseen words mostly have a row.
    unseen = [w for w in words if predictor.vocab.lookup(w) >= predictor.vocab.trained]
    assert len(unseen) > 0


def test_predict_and_evaluate_as_a_user(minilm_run: tuple[Path, str], sample_data: Data, tmp_path: Path) -> None:
    out = tmp_path / "pred.txt"
    proc = run_cli("predict.py", ["--model", minilm_run[0], sample_data.test, "--output", out, "--evaluate"])
    assert proc.returncode == 0, proc.stderr
    source = sample_data.test.read_text().splitlines()
    written = out.read_text().splitlines()
    assert len(written) == len(source)
    assert all(w.startswith(s) for s, w in zip(source, written))
    assert "micro avg" in proc.stdout + proc.stderr


def test_onnx_export_tags_as_pytorch(minilm_run: tuple[Path, str], tmp_path: Path) -> None:
    """The ONNX export of the whole model (MiniLM, the float16 GloVe rows, characters): the runtime, without
    torch, tags as PyTorch does, unseen words included. The TorchScript exporter: ner-export tries the dynamo
    exporter first, which takes minutes on a 6-layer BERT (README, Serve and export)."""
    pytest.importorskip("onnxruntime")
    from ner_toolkit.export.onnx_export import export_model
    from ner_toolkit.export.runtime import OnnxPredictor
    from ner_toolkit.predict import Predictor

    export = tmp_path / "onnx"
    assert export_model(minilm_run[0], export, exporter_choice="torchscript")["exporter"] == "torchscript"
    sentences = [s.split() for s in ("EU rejects German call to boycott British lamb .",
                                     "Kuznetsov scored twice for Uzbekistan in Tashkent on Sunday .")]
    onnx, torch_predictor = OnnxPredictor(export), Predictor.load(minilm_run[0])
    assert onnx.vocab.encode(sentences[1]) == torch_predictor.vocab.encode(sentences[1])
    assert onnx.predict(sentences) == torch_predictor.predict(sentences)
