"""ONNX export (ner-export) and its torch-free runtime: the same tags as PyTorch, the same scores, dynamic
shapes, int8, no torch in the runtime's import chain, and the CLI's user errors."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ner_toolkit.data.batching import encode_sentences  # noqa: E402
from ner_toolkit.data.conll import read_sentences  # noqa: E402
from ner_toolkit.export import is_export, numpy_crf  # noqa: E402
from ner_toolkit.model.crf import CRF  # noqa: E402

from conftest import REPO, assert_user_error  # noqa: E402


def sentences_of(path) -> list[list[str]]:
    return [s.tokens for s in read_sentences(path)]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from ner_toolkit.cli import export_main

    out = tmp_path_factory.mktemp("export") / "onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = export_main(["--model", str(trained.output_dir), "--output", str(out), "--quantize", "int8"])
    assert rc == 0
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def runtimes(exported):
    from ner_toolkit.export.runtime import OnnxPredictor

    return OnnxPredictor.load(exported[0], graph="fp32"), OnnxPredictor.load(exported[0])


@pytest.fixture(scope="module")
def sample_sentences(sample_data):
    return sentences_of(sample_data.dev) + sentences_of(sample_data.test)


def test_export_directory_round_trip(exported, trained):
    out, printed = exported
    assert is_export(out) and not is_export(trained.model_dir)
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and "model.int8.onnx" in lines[0], printed
    for name in ("model.onnx", "model.int8.onnx", "crf.npz", "export.json", "labels.json", "config.yaml",
                 "word_vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["graph"] == "model.int8.onnx" and manifest["tokenizer"] == "tokenizers"
    assert manifest["check"]["max_abs_diff_fp32"] <= 1e-4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def test_fp32_tags_equal_pytorch(runtimes, predictor, sample_sentences):
    fp32, _ = runtimes
    ours, theirs = fp32.predict(sample_sentences), predictor.predict(sample_sentences)
    differing = sum(a != b for x, y in zip(ours, theirs) for a, b in zip(x, y))
    assert [len(x) for x in ours] == [len(s) for s in sample_sentences]
    assert differing == 0


def test_scores_and_nbest_match_pytorch(runtimes, predictor, sample_sentences):
    fp32, _ = runtimes
    subset = sample_sentences[:25]
    ours = fp32.predict_detailed(subset, nbest=3, scores=True)
    theirs = predictor.predict_detailed(subset, nbest=3, scores=True)
    for a, b in zip(ours, theirs):
        assert a.tags == b.tags
        np.testing.assert_allclose(a.token_confidence, b.token_confidence, atol=1e-4)
        assert [(s.label, s.start, s.end) for s in a.spans] == [(s.label, s.start, s.end) for s in b.spans]
        for sa, sb in zip(a.spans, b.spans):
            assert (sa.confidence is None) == (sb.confidence is None)
            if sa.confidence is not None:
                assert abs(sa.confidence - sb.confidence) < 1e-4
        assert [t for t, _ in a.nbest] == [t for t, _ in b.nbest]
        np.testing.assert_allclose([s for _, s in a.nbest], [s for _, s in b.nbest], atol=1e-3, rtol=1e-5)
    text = "Peter Blackburn met the European Commission in Brussels on Thursday ."
    got, want = fp32.predict_text(text), predictor.predict_text(text)
    assert [(e.label, e.start, e.end, e.text) for e in got] == [(e.label, e.start, e.end, e.text) for e in want]
    assert all(abs(e.score - f.score) < 1e-4 for e, f in zip(got, want))


def test_dynamic_shapes_batch_sizes_and_windows(runtimes, predictor, sample_sentences):
    fp32, _ = runtimes
    words = [w for s in sample_sentences for w in s]
    long = (words * 3)[:400]  # far more subwords than the tiny encoder's 128-position window
    items = encode_sentences(fp32.aligner, fp32.vocab, [long])
    assert fp32.collator(items).input_ids.shape[0] >= 3, "the long sentence must need several windows"
    for batch in ([sample_sentences[0]], sample_sentences[:17], [long, ["a"], *sample_sentences[:3]]):
        fp32.batch_size = predictor.batch_size = len(batch)
        assert fp32.predict(batch) == predictor.predict(batch)
    fp32.batch_size = predictor.batch_size = 64
    # The emissions themselves, on a batch of new sizes on every axis.
    batch_np = fp32.collator(encode_sentences(fp32.aligner, fp32.vocab, [long, *sample_sentences[:16]]))
    items_t = encode_sentences(predictor.aligner, predictor.vocab, [long, *sample_sentences[:16]])
    with torch.inference_mode():
        ref = predictor.tagger.crf_scores(predictor.collator(items_t).to(torch.device("cpu"))).numpy()
    got = fp32.emissions(batch_np)
    assert np.abs(got - ref)[batch_np.mask].max() < 1e-4


def test_int8_tags_every_token_and_mostly_agrees(runtimes, sample_sentences):
    fp32, int8 = runtimes
    assert int8.graph == "int8"
    a, b = fp32.predict(sample_sentences), int8.predict(sample_sentences)
    assert [len(x) for x in b] == [len(s) for s in sample_sentences]
    total = sum(len(x) for x in a)
    same = sum(p == q for x, y in zip(a, b) for p, q in zip(x, y))
    assert same / total >= 0.95


def test_runtime_never_imports_torch(exported, sample_data):
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from ner_toolkit.export import OnnxPredictor
p = OnnxPredictor.load({str(exported[0])!r})
tags = p.predict([["Peter", "Blackburn", "in", "London"]])
p.predict_detailed([["EU", "rejects", "German", "call"]], nbest=2, scores=True)
p.predict_text("Peter Blackburn lives in London .")
assert len(tags[0]) == 4
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_predictor_load_and_predict_cli_take_an_export(exported, runtimes, sample_data, tmp_path):
    """Once ``Predictor.load`` dispatches export directories to ``OnnxPredictor`` (skipped before)."""
    from ner_toolkit.errors import UserError
    from ner_toolkit.export.runtime import OnnxPredictor
    from ner_toolkit.predict import Predictor

    try:
        loaded = Predictor.load(exported[0])
    except UserError:
        pytest.skip("Predictor.load does not dispatch ONNX exports yet")
    assert isinstance(loaded, OnnxPredictor)
    from conftest import run_cli

    out = tmp_path / "pred.txt"
    proc = run_cli("predict.py", ["--model", exported[0], str(sample_data.test), "--output", out])
    assert proc.returncode == 0, proc.stderr
    tags = [line.split()[-1] for line in out.read_text().splitlines() if line.strip() and not line.startswith("-DOC")]
    assert tags == [t for s in runtimes[1].predict(sentences_of(sample_data.test)) for t in s]


def run_export(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", "import sys; from ner_toolkit.cli import export_main; "
                           "sys.exit(export_main())", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_user_errors(trained, tmp_path):
    proc = run_export("--model", str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert_user_error(proc.returncode, proc.stderr, "model directory not found")
    proc = run_export("--model", str(trained.model_dir), "--output", str(trained.model_dir / "onnx"))
    assert_user_error(proc.returncode, proc.stderr, "inside")
    proc = run_export("--model", str(trained.model_dir), "--output", str(trained.output_dir))
    assert_user_error(proc.returncode, proc.stderr)
    assert not (trained.model_dir / "onnx").exists()


# ------------------------------------------------------------------ torch-free parts vs the torch ones
def test_tokenizer_and_encoding_equal_pytorch(runtimes, predictor, sample_sentences):
    fp32, _ = runtimes
    sentences = sample_sentences + [["Müller", "naïve", "\u200b", "東京", "x" * 300, "U.S."]]
    ours = encode_sentences(fp32.aligner, fp32.vocab, sentences)  # the exported tokenizer.json, torch-free
    theirs = encode_sentences(predictor.aligner, predictor.vocab, sentences)
    assert [(e.word_ids, e.pieces) for e in ours] == [(e.word_ids, e.pieces) for e in theirs]


def _random_crf(seed: int, num_tags: int, constrained: bool) -> tuple[CRF, numpy_crf.CRFParams]:
    torch.manual_seed(seed)
    constraints = None
    if constrained:
        g = torch.Generator().manual_seed(seed)
        start = (torch.rand(num_tags, generator=g) > 0.3).tolist()
        end = (torch.rand(num_tags, generator=g) > 0.3).tolist()
        trans = (torch.rand(num_tags, num_tags, generator=g) > 0.4).tolist()
        start[0] = end[0] = trans[0][0] = True
        constraints = (start, end, trans)
    crf = CRF(num_tags, constraints)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0, 1)
    params = numpy_crf.CRFParams.from_arrays(
        crf.start_transitions.detach().numpy(), crf.end_transitions.detach().numpy(), crf.transitions.detach().numpy(),
        None if constraints is None else tuple(np.array(c, dtype=bool) for c in constraints))
    return crf, params


@pytest.mark.parametrize("constrained", [False, True])
def test_numpy_crf_matches_torch_crf(constrained, monkeypatch):
    from ner_toolkit import native_build

    for seed in range(4):
        crf, params = _random_crf(seed, 7, constrained)
        B, T = (6, 11) if seed < 3 else (3, 1)  # and a one-token batch
        em = torch.randn(B, T, 7) * 3
        lengths = torch.tensor([11, 1, 5, 2, 11, 7])[:B].clamp(max=T)
        mask = torch.arange(T)[None] < lengths[:, None]
        paths, scores = crf.decode(em, mask)
        for native in (True, False):
            monkeypatch.setattr(native_build, "library", (lambda *a: None) if not native else native_build.library)
            p, s = numpy_crf.viterbi(em.numpy(), mask.numpy(), params)
            np.testing.assert_array_equal(p, paths.numpy())
            np.testing.assert_allclose(s, scores.numpy(), rtol=1e-5, atol=1e-4)
            kp, ks = crf.nbest(em, mask, 4)
            op, os_ = numpy_crf.nbest(em.numpy(), mask.numpy(), params, 4)
            np.testing.assert_allclose(os_, ks.numpy(), rtol=1e-5, atol=1e-4)
            np.testing.assert_array_equal(op[:, 0], kp[:, 0].numpy())
        monkeypatch.undo()
        np.testing.assert_allclose(numpy_crf.marginals(em.numpy(), mask.numpy(), params),
                                   crf.marginals(em, mask).numpy(), atol=1e-4)
        continues = torch.rand(7, 7, generator=torch.Generator().manual_seed(seed)) > 0.6
        is_end, start, log_p = crf.span_log_probs(em, mask, paths, continues)
        o_end, o_start, o_log_p = numpy_crf.span_log_probs(em.numpy(), mask.numpy(), params, paths.numpy(),
                                                            continues.numpy())
        np.testing.assert_array_equal(o_end, is_end.numpy())
        np.testing.assert_array_equal(o_start, start.numpy())
        np.testing.assert_allclose(np.exp(o_log_p)[o_end], log_p.exp().numpy()[o_end], atol=1e-4)


@pytest.mark.parametrize("pooling", ["first", "first_last"])
def test_torchscript_exporter_with_characters(pooling, sample_data, tmp_path):
    """The TorchScript exporter (ner-export's fallback) on a model with a character CNN: char_ids reach
    the graph as char_ids whatever the number of pooling inputs before it, and the tags are PyTorch's."""
    from conftest import run_cli, tiny_config_text
    from ner_toolkit.export.onnx_export import export_model
    from ner_toolkit.export.runtime import OnnxPredictor
    from ner_toolkit.predict import Predictor

    config = tmp_path / "chars.yaml"
    config.write_text(tiny_config_text(sample_data.train, epochs=1), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config, "--output-dir", tmp_path / "out", "--set",
                                "model.chars.enabled=true", "--set", f"model.encoder.pooling={pooling}"])
    assert proc.returncode == 0, proc.stderr
    assert export_model(tmp_path / "out", tmp_path / "onnx", exporter_choice="torchscript")["exporter"] == "torchscript"
    sentences = sentences_of(sample_data.test)
    assert OnnxPredictor(tmp_path / "onnx").predict(sentences) == Predictor.load(tmp_path / "out").predict(sentences)
