"""PyTorch vs the ONNX export (fp32 and int8): differing tokens, test F1 and sentences/s on CoNLL-2003 test.

    python benchmarks/onnx_agreement.py [--model runs/quickstart] [--test FILE] [--output DIR]

Trains ``configs/quickstart.yaml`` first when the default model is missing (~20 s). Exports the model with
``--quantize int8`` (into a temporary directory unless ``--output``), then tags the test file with
``Predictor`` (PyTorch, CPU, fp32), ``OnnxPredictor`` on model.onnx and on model.int8.onnx, with the same
batch size, and prints one table. Tags are converted to the gold's scheme before scoring.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ner_toolkit.data.conll import read_sentences  # noqa: E402
from ner_toolkit.data.schemes import convert, detect_scheme  # noqa: E402
from ner_toolkit.evaluate import evaluate_spans  # noqa: E402

# ../shared beside the checkout, as the other benchmarks read it (never one machine's absolute path)
CONLL_TEST = REPO.parent / "shared" / "datasets" / "conll2003" / "test.txt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/quickstart")
    p.add_argument("--test", default=None, help=f"CoNLL file (default {CONLL_TEST}, else data/sample/test.txt)")
    p.add_argument("--output", default=None, help="keep the export here (default: a temporary directory)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch / onnxruntime intra-op threads")
    args = p.parse_args()
    model = Path(args.model)
    if not model.exists() and args.model == "runs/quickstart":
        print("training runs/quickstart (configs/quickstart.yaml) ...", file=sys.stderr)
        subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/quickstart.yaml")],
                       cwd=REPO, check=True)
    test = Path(args.test) if args.test else (CONLL_TEST if CONLL_TEST.exists() else REPO / "data/sample/test.txt")
    sentences = read_sentences(test)
    tokens = [s.tokens for s in sentences]
    gold = [s.labels for s in sentences]

    import torch

    from ner_toolkit.export.onnx_export import export_model
    from ner_toolkit.export.runtime import OnnxPredictor
    from ner_toolkit.predict import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="onnx-agreement-")) / "export"
    started = time.perf_counter()
    summary = export_model(model, out, "int8")
    print(f"exported {model} -> {out} in {time.perf_counter() - started:.1f}s "
          f"(max |diff| fp32 {summary['max_abs_diff_fp32']:.1e}, int8 {summary['max_abs_diff_int8']:.1e})",
          file=sys.stderr)

    runners = {"pytorch": Predictor.load(model, batch_size=args.batch_size)}
    for graph in ("fp32", "int8"):
        runtime = OnnxPredictor(out, batch_size=args.batch_size, graph=graph, threads=args.threads)
        runners[f"onnx {graph}"] = runtime
    results = {}
    for name, runner in runners.items():
        runner.predict(tokens[:64])  # warm up
        t0 = time.perf_counter()
        pred = runner.predict(tokens)
        seconds = time.perf_counter() - t0
        results[name] = (pred, seconds)
    scheme = detect_scheme(gold)
    ref = results["pytorch"][0]
    n_tokens = sum(len(t) for t in tokens)
    print(f"\n{test}: {len(tokens)} sentences, {n_tokens} tokens; model {model}; batch {args.batch_size}, "
          f"threads {torch.get_num_threads() if not args.threads else args.threads}\n")
    print(f"| {'runtime':<12} | {'tokens':>7} | {'differing tokens':>16} | {'test F1':>7} | {'sentences/s':>11} |")
    print(f"|{'-' * 14}|{'-' * 9}|{'-' * 18}|{'-' * 9}|{'-' * 13}|")
    output_scheme = runners["pytorch"].labels.output_scheme
    for name, (pred, seconds) in results.items():
        differing = sum(a != b for x, y in zip(pred, ref) for a, b in zip(x, y))
        f1 = evaluate_spans(gold, [convert(t, output_scheme, scheme) for t in pred])["micro"]["f1"]
        print(f"| {name:<12} | {n_tokens:>7} | {differing:>16} | {100 * f1:>7.2f} | {len(tokens) / seconds:>11.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
