"""Calibrated confidences: ECE, the temperature in the CRF's marginals, its fit on dev, calibration.json."""
from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch

from conftest import assert_user_error, run_cli
from crf_reference import brute_force, make_constraints, random_problem

from ner_toolkit.calibration import calibration_error, read_temperature, span_outcomes
from ner_toolkit.training.calibration import golden_section
from ner_toolkit.errors import UserError


def test_ece_by_hand() -> None:
    result = calibration_error([0.95, 0.95, 0.15, 0.15, 1.0], [True, False, False, False, True])
    # bin 0.9-1.0: mean confidence (0.95 + 0.95 + 1) / 3, 2 of 3 right; bin 0.1-0.2: 0.15, none right
    gap_high = abs(2 / 3 - 2.9 / 3)
    assert result["ece"] == pytest.approx(3 / 5 * gap_high + 2 / 5 * 0.15)
    assert result["mce"] == pytest.approx(gap_high)
    assert [row["count"] for row in result["bins"]] == [0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
    assert result["bins"][0]["accuracy"] is None
    assert calibration_error([], [])["ece"] == 0.0
    with pytest.raises(ValueError, match="probability"):
        calibration_error([1.5], [True])


def test_span_outcomes_match_gold_exactly() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["?", "B-ORG"]]
    spans = [[("PER", 0, 2, 0.9), ("LOC", 2, 4, 0.4)], [("ORG", 0, 2, 0.7), ("ORG", 1, 2, 0.6)]]
    conf, ok = span_outcomes(gold[:1], spans[:1], "BIO")
    assert (conf, ok) == ([0.9, 0.4], [True, False])
    conf, ok = span_outcomes(gold, spans, "BIO", unknown_tag="?")
    assert (conf, ok) == ([0.9, 0.4, 0.6], [True, False, True])  # the span over `?` is left out


def test_golden_section_finds_the_minimum() -> None:
    assert golden_section(lambda x: (x - 0.3) ** 2 + 1, -1.0, 2.0) == pytest.approx(0.3, abs=1e-4)
    assert golden_section(lambda x: abs(x + 2.5), -3.0, 3.0) == pytest.approx(-2.5, abs=1e-4)


@pytest.mark.parametrize("kind,k,seq_len", [("none", 3, 4), ("bio", 5, 4), ("bioes", 5, 4)])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_marginals_and_span_probabilities_at_a_temperature_are_brute_force(kind, k, seq_len, temperature) -> None:
    """P_T(path) ∝ exp(score / T) over the legal paths: marginals and exact-span probabilities."""
    rng = random.Random(k * 10 + seq_len)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    constraints = make_constraints(kind, k, rng)
    batch = 3
    crf, emissions, mask, lengths = random_problem(k, constraints, gen, batch, seq_len, 2.0, (1, seq_len))
    marginals = crf.marginals(emissions, mask, temperature)
    paths = crf.decode(emissions, mask)[0]
    continues = torch.zeros(k, k, dtype=torch.bool)  # every tag its own segment: span = one position
    _, _, log_p = crf.span_log_probs(emissions, mask, paths, continues, temperature)
    for b in range(batch):
        ref = brute_force(crf, emissions[b], lengths[b], constraints)
        z = math.log(sum(math.exp(s / temperature) for s in ref.values()))
        for t in range(lengths[b]):
            for tag in range(k):
                want = sum(math.exp(s / temperature - z) for p, s in ref.items() if p[t] == tag)
                assert marginals[b, t, tag].item() == pytest.approx(want, abs=1e-5)
            assert math.exp(log_p[b, t].item()) == pytest.approx(marginals[b, t, paths[b, t]].item(), abs=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        crf.marginals(emissions, mask, 0.0)


@pytest.fixture(scope="module")
def calibrated(sample_data, tmp_path_factory):
    """A tiny run whose dev is its training file: enough predicted spans, right and wrong, to fit on."""
    from conftest import tiny_config_text

    out = tmp_path_factory.mktemp("calibrated")
    config = out / "c.yaml"
    config.write_text(tiny_config_text(sample_data.train, sample_data.train, sample_data.test,
                                       output_dir=str(out / "run"), epochs=10), encoding="utf-8")
    proc = run_cli("train.py", ["--config", config])
    assert proc.returncode == 0, proc.stderr
    return out / "run" / "model", proc.stderr


def test_training_fits_and_prediction_applies_the_temperature(calibrated, sample_data) -> None:
    """Training fitted T on dev: calibration.json, applied on load, tags unchanged, and T is the minimum
    of the span cross-entropy it was fitted on."""
    from ner_toolkit.config import load_config
    from ner_toolkit.predict import Predictor
    from ner_toolkit.training.calibration import decode_once, span_probabilities
    from ner_toolkit.training.calibration import span_nll as _nll
    from ner_toolkit.training.dataset import read_labelled

    model_dir, stderr = calibrated
    record = json.loads((model_dir / "calibration.json").read_text(encoding="utf-8"))
    t = record["temperature"]
    predictor = Predictor.load(model_dir)
    assert predictor.temperature == pytest.approx(t) and t != 1.0
    assert record["ece_after"] <= record["ece_before"] and record["nll_after"] <= record["nll_before"]
    assert "test_ece_after" in record and "calibration: temperature" in stderr
    cfg = load_config(None, (f"data.train={sample_data.train}",)).data
    dev = read_labelled(str(sample_data.train), cfg, "data.dev")
    scored = decode_once(predictor, dev.tokens, dev.gold, dev.documents)
    p, correct = span_probabilities(predictor, scored, t)
    assert p.numel() == record["spans"]
    at = _nll(p, correct)
    for other in (t * 1.1, t / 1.1):
        assert _nll(span_probabilities(predictor, scored, other)[0], correct) >= at - 1e-9
    # Confidences follow the temperature; tags do not.
    sentences = dev.tokens[:20]
    calibrated = predictor.predict_detailed(sentences, scores=True)
    predictor.temperature = 1.0
    try:
        raw = predictor.predict_detailed(sentences, scores=True)
    finally:
        predictor.temperature = t
    assert [c.tags for c in calibrated] == [r.tags for r in raw]
    pairs = [(a.confidence, b.confidence) for c, r in zip(calibrated, raw) for a, b in zip(c.spans, r.spans)]
    assert pairs and any(abs(a - b) > 1e-4 for a, b in pairs)


@pytest.mark.parametrize("content", ['{"temperature": "hot"}', '{"temperature": NaN}', '{"temperature": -1}',
                                     '[1.0]', '{"temperature": 1e9}', "{"])
def test_hostile_calibration_file_is_one_error_line(trained, sample_data, tmp_path, content) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    (model / "calibration.json").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match="calibration.json"):
        read_temperature(model)
    if content == '{"temperature": NaN}':  # and the CLI says it in one line, writing nothing
        out = tmp_path / "out.txt"
        proc = run_cli("predict.py", ["--model", model, sample_data.test, "--output", out])
        assert_user_error(proc.returncode, proc.stderr, "calibration.json", "temperature")
        assert not out.exists()


def test_ner_evaluate_calibration_reads_predict_scores(trained, predictor, sample_data, tmp_path) -> None:
    """predict.py --scores, then ner-evaluate --calibration: the ECE of the spans' probabilities, equal to
    the one computed from the Predictor in memory, and a reliability diagram."""
    import subprocess
    import sys

    from conftest import REPO
    from ner_toolkit.data.conll import read_sentences

    scored = tmp_path / "scored.txt"
    proc = run_cli("predict.py", ["--model", trained.model_dir, sample_data.test, "--scores", "--output", scored])
    assert proc.returncode == 0, proc.stderr

    def evaluate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from ner_toolkit.cli import evaluate_console; evaluate_console()",
                               *map(str, args)], capture_output=True, text=True, cwd=REPO)

    png = tmp_path / "rel.png"
    proc = evaluate(scored, "--gold-column", "-4", "--pred-column", "-3", "--calibration", png, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert "calibration of span confidences" in proc.stdout
    result = json.loads(proc.stdout[proc.stdout.index("{"):])["calibration"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    sentences = read_sentences(sample_data.test)
    predictions = predictor.predict_detailed([s.tokens for s in sentences], scores=True)
    spans = [[(x.label, x.start, x.end, x.confidence) for x in p.spans] for p in predictions]
    want = calibration_error(*span_outcomes([s.labels for s in sentences], spans, "IOB1"))
    assert result["spans"] == want["spans"] > 0
    assert result["ece"] == pytest.approx(want["ece"], abs=1e-3)
    # The default diagram path sits beside the scored file; the wrong column is one error line.
    proc = evaluate(scored, "--gold-column", "-4", "--pred-column", "-3", "--calibration")
    assert proc.returncode == 0 and (tmp_path / "scored.reliability.png").exists(), proc.stderr
    proc = evaluate(scored, "--gold-column", "-4", "--pred-column", "-3", "--calibration", png,
                    "--confidence-column", "-3")
    assert_user_error(proc.returncode, proc.stderr, str(scored), "not a probability")
    proc = evaluate(scored, "--gold-column", "-4", "--pred-column", "-3", "--calibration", scored)
    assert proc.returncode == 2 and "--calibration" in proc.stderr


def test_model_card_reports_the_calibration(calibrated) -> None:
    model_dir, _ = calibrated
    record = json.loads((model_dir / "calibration.json").read_text(encoding="utf-8"))
    assert json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))["calibration"] == record
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert f"temperature {record['temperature']:.3f} fitted on dev" in card
    assert f"{100 * record['test_ece_after']:.2f}% after" in card


def test_span_probabilities_never_exceed_one() -> None:
    """Near-certain spans of confident CRFs (large scores, low temperatures): float32 rounding once put
    log P above 0 (P = 1.0000013), which a probability may never be (the calibration refused it)."""
    from ner_toolkit.export import numpy_crf

    worst = -1.0
    for seed in range(60):
        rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        constraints = make_constraints("bioes", 5, rng)
        crf, emissions, mask, _ = random_problem(5, constraints, gen, 8, 30, 8.0)
        paths = crf.decode(emissions, mask)[0]
        continues = torch.rand(5, 5, generator=gen) < 0.5
        for t in (1.0, 0.3):
            worst = max(worst, crf.span_log_probs(emissions, mask, paths, continues, t)[2].max().item())
        params = numpy_crf.CRFParams.from_arrays(crf.start_transitions.detach().numpy(),
                                                 crf.end_transitions.detach().numpy(),
                                                 crf.transitions.detach().numpy(),
                                                 tuple(torch.as_tensor(c).numpy() for c in constraints))
        log_p = numpy_crf.span_log_probs(emissions.numpy(), mask.numpy(), params, paths.numpy(), continues.numpy())[2]
        worst = max(worst, float(log_p.max()))
    assert worst <= 0.0


def test_ner_evaluate_never_claims_a_temperature_the_file_does_not_hold(calibrated, sample_data, tmp_path) -> None:
    """Scores written at the model's fitted T (not 1): the report does not say "temperature 1"; the file does
    not record T, so no temperature is claimed; a caller that knows it gets it shown."""
    from ner_toolkit.calibration import format_calibration
    from ner_toolkit.cli import evaluate_main

    model_dir, _ = calibrated
    t = json.loads((model_dir / "calibration.json").read_text(encoding="utf-8"))["temperature"]
    scored = tmp_path / "scored.txt"
    proc = run_cli("predict.py", ["--model", model_dir, sample_data.test, "--scores", "--output", scored])
    assert proc.returncode == 0, proc.stderr
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = evaluate_main([str(scored), "--gold-column", "-4", "--pred-column", "-3",
                            "--calibration", str(tmp_path / "rel.png")])
    assert rc == 0
    line = next(x for x in out.getvalue().splitlines() if x.startswith("calibration of span confidences"))
    assert "temperature" not in line and t != 1.0
    result = {"ece": 0.1, "mce": 0.2, "spans": 3, "bins": [], "mean_confidence": 0.5, "accuracy": 0.5}
    assert f"(temperature {t:.3g})" in format_calibration(result, t)


def test_a_reliability_diagram_of_no_spans_is_drawn_not_a_crash(tmp_path):
    # A model that predicts no span at all (an early or tiny one) leaves every bin empty: ner-evaluate
    # --calibration crashed inside matplotlib's log axis instead of drawing the empty diagram.
    pytest.importorskip("matplotlib")
    from ner_toolkit.calibration import reliability_diagram

    path = tmp_path / "reliability.png"
    assert reliability_diagram([("test", calibration_error([], []))], path) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
