"""Training and prediction speed and peak memory: fp32 vs bf16, fixed vs token-budget batches.

    python benchmarks/bench_train.py [--train-sentences 3200]

The reference tiny architecture of bench_pipeline.py on CoNLL-2003 (first N training sentences for
training, the test set for prediction). Each configuration runs in its own process (so each peak RSS
is its own): ``run_epoch`` over the training sentences as train.py runs it, then ``Predictor.predict``
on the test set, batch 64.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    ("fp32", "batch 32", ["training.precision=fp32", "training.batch_size=32"]),
    ("fp32", "1,000 subwords", ["training.precision=fp32", "training.batch_tokens=1000"]),
    ("bf16", "batch 32", ["training.precision=bf16", "training.batch_size=32"]),
    ("bf16", "1,000 subwords", ["training.precision=bf16", "training.batch_tokens=1000"]),
]


def one(train_sentences: int, overrides: list[str]) -> dict:
    """Measure one configuration in this process; returns the numbers as a dict."""
    import random
    import resource
    import tempfile
    import time

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import CONLL, REFERENCE, head  # noqa: E402

    from ner_toolkit.config import load_config
    from ner_toolkit.training.trainer import make_optimization, prepare, run_epoch

    tmp = Path(tempfile.mkdtemp())
    train_file = head(CONLL / "train.txt", train_sentences, tmp / "train.txt")
    config = load_config(None, tuple(REFERENCE + [f"data.train={train_file}", f"data.test={CONLL / 'test.txt'}",
                                                  f"output_dir={tmp / 'run'}"] + overrides))
    setup = prepare(config)
    tc = config.training
    run_epoch(setup.items[:256], setup.collator, make_optimization(setup), tc, random.Random(0), setup.device)
    optimization = make_optimization(setup)
    t0 = time.perf_counter()
    run_epoch(setup.items, setup.collator, optimization, tc, random.Random(1), setup.device)
    train_rate = len(setup.items) / (time.perf_counter() - t0)
    sentences = setup.test.tokens
    setup.predictor.predict(sentences[:256])
    t0 = time.perf_counter()
    setup.predictor.predict(sentences)
    predict_rate = len(sentences) / (time.perf_counter() - t0)
    return {"train": train_rate, "predict": predict_rate,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-sentences", type=int, default=3200)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON list of overrides, run in a child
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.train_sentences, json.loads(args.one))))
        return
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    print(f"{args.train_sentences} CoNLL-2003 training sentences; prediction on CoNLL-2003 test (batch 64)\n")
    print(f"{'precision':10}{'batches':16}{'train sent/s':>14}{'predict sent/s':>16}{'peak RSS MB':>13}")
    for precision, batches, overrides in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--train-sentences", str(args.train_sentences),
                              "--one", json.dumps(overrides)], env=env, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{precision:10}{batches:16}{r['train']:>14.1f}{r['predict']:>16.1f}{r['rss']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
