"""torch.compile of the network before the CRF: same emissions and tags as eager, batches of one sentence
and of one word included; eager fallback with a warning when compiling cannot work; training with it."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from conftest import run_cli

from ner_toolkit.model.compiled import CompiledEmissions, compile_network, compile_seconds
from ner_toolkit.predict import Predictor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="inductor's CPU backend needs a C++ compiler")

SENTENCES = [["Peter", "Blackburn"], ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
             ["Germany"], ["The", "European", "Commission", "said", "on", "Thursday", "it", "disagreed"]]


def test_compiled_emissions_and_tags_equal_eager(trained) -> None:
    eager = Predictor.load(trained.model_dir)
    compiled = Predictor.load(trained.model_dir, compile=True)
    wrapper = compiled.tagger.compute_emissions
    assert isinstance(wrapper, CompiledEmissions)
    assert compile_network(compiled.tagger) is wrapper  # idempotent
    eager.tagger.eval()
    compiled.tagger.eval()
    # One sentence of one word, one sentence, then mixed lengths: the shapes dynamo would specialise.
    for batch_sentences in ([SENTENCES[2]], [SENTENCES[1]], SENTENCES, SENTENCES[:2]):
        items = eager._encode(batch_sentences, None)
        batch = eager.collator(items).to(eager.device)
        with torch.inference_mode():
            want = eager.tagger.compute_emissions(batch)
            got = compiled.tagger.compute_emissions(batch)
        mask = batch.mask.unsqueeze(-1).expand_as(want)
        assert torch.allclose(got[mask], want[mask], atol=1e-4, rtol=1e-4)
    assert not wrapper.failed
    assert compile_seconds(compiled.tagger) > 0
    assert compile_seconds(eager.tagger) == 0
    assert compiled.predict(SENTENCES) == eager.predict(SENTENCES)
    scored_e = eager.predict_detailed(SENTENCES, scores=True)
    scored_c = compiled.predict_detailed(SENTENCES, scores=True)
    for a, b in zip(scored_e, scored_c):
        assert a.token_confidence == pytest.approx(b.token_confidence, abs=1e-4)


def test_no_compiler_falls_back_to_eager_with_one_warning(trained, tmp_path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n\n".join("\n".join(s) for s in SENTENCES) + "\n", encoding="utf-8")
    outputs = {}
    for name, extra, env in (("eager", [], {}), ("compiled", ["--compile"], {"CXX": str(tmp_path / "no-such-c++")})):
        out = tmp_path / f"{name}.txt"
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            proc = run_cli("predict.py", ["--model", trained.model_dir, src, "--output", out, *extra])
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = (out.read_text(encoding="utf-8"), proc.stderr)
    assert outputs["compiled"][0] == outputs["eager"][0]
    warnings = [line for line in outputs["compiled"][1].splitlines() if "torch.compile failed" in line]
    assert len(warnings) == 1 and "runs eager" in warnings[0]
    assert "Traceback" not in outputs["compiled"][1]


def test_compile_rejected_for_an_onnx_export(tmp_path) -> None:
    from ner_toolkit.errors import UserError

    (tmp_path / "export.json").write_text("{}", encoding="utf-8")  # what marks an export directory
    with pytest.raises(UserError, match="--compile"):
        Predictor.load(tmp_path, compile=True)


def test_training_with_compile(tiny_config, tmp_path) -> None:
    out = tmp_path / "run"
    proc = run_cli("train.py", ["--config", tiny_config, "--output-dir", out, "--set", "training.epochs=2",
                                "--set", "training.compile=true"])
    assert proc.returncode == 0, proc.stderr
    assert "torch.compile failed" not in proc.stderr
    done = [line for line in proc.stdout.splitlines() if line.startswith("done:")]
    assert done and "compiling took" in done[0]
    # The saved weights are the plain state dict: an eager load tags with them.
    tagged = Predictor.load(out / "model").predict(SENTENCES)
    assert [len(tags) for tags in tagged] == [len(s) for s in SENTENCES]
