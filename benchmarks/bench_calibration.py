"""Calibration of span confidences on CoNLL-2003 test, before and after the temperature fitted on dev.

    python benchmarks/bench_calibration.py --model runs/partial_labels/full/model [--plot reliability.png]

Fits the temperature the way training does (``training.calibration.fit_temperature`` on dev: binary
cross-entropy of the predicted spans' CRF probabilities), whatever the model directory's calibration.json
says, and prints a markdown table: expected calibration error (10 bins), maximum calibration error, mean confidence
against the fraction of predicted spans that are right, and the cross-entropy, at T = 1 and at the fitted
T, on dev and on test. ``--plot`` draws both test reliability curves.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"

from ner_toolkit.calibration import calibration_error, reliability_diagram  # noqa: E402
from ner_toolkit.config import load_config  # noqa: E402
from ner_toolkit.predict import Predictor  # noqa: E402
from ner_toolkit.training.calibration import decode_once, fit_temperature, span_nll, span_probabilities  # noqa: E402
from ner_toolkit.training.dataset import read_labelled  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--dev", type=Path, default=CONLL / "dev.txt")
    ap.add_argument("--test", type=Path, default=CONLL / "test.txt")
    ap.add_argument("--plot", type=Path, help="reliability diagram PNG of test, before and after")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = ap.parse_args()
    predictor = Predictor.load(args.model, precision=args.precision)
    cfg = load_config(None, (f"data.train={args.dev}",)).data
    dev, test = (read_labelled(str(p), cfg, "data.dev") for p in (args.dev, args.test))
    scored_dev = decode_once(predictor, dev.tokens, dev.gold, dev.documents)
    fit = fit_temperature(predictor, scored_dev)
    if fit is None:
        sys.exit("too few predicted spans (or all right / all wrong) on dev to fit a temperature")
    scored_test = decode_once(predictor, test.tokens, test.gold, test.documents)
    print(f"model {args.model}; temperature fitted on {args.dev.name}: {fit.temperature:.3f}\n")
    print("| data | T | spans | ECE | MCE | mean confidence | correct | span NLL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    curves = []
    for name, scored in (("dev", scored_dev), ("test", scored_test)):
        for t in (1.0, fit.temperature):
            p, correct = span_probabilities(predictor, scored, t)
            r = calibration_error(p.tolist(), correct.tolist())
            print(f"| {name} | {t:.3f} | {r['spans']} | {100 * r['ece']:.2f}% | {100 * r['mce']:.2f}% | "
                  f"{100 * r['mean_confidence']:.2f}% | {100 * r['accuracy']:.2f}% | {span_nll(p, correct):.4f} |")
            if name == "test":
                curves.append((f"T = {t:.2f}", r))
    if args.plot:
        note = reliability_diagram(curves, args.plot, f"CoNLL-2003 test: span confidence ({args.model.parent.name})")
        print(f"\n{note or f'reliability diagram: {args.plot}'}")


if __name__ == "__main__":
    main()
