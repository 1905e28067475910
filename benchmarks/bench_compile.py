"""Eager against ``torch.compile`` (inductor) on the reference architecture, in one process.

    python benchmarks/bench_compile.py [--train-sentences 3200] [--rounds 3] [--precision bf16]

* training sent/s: ``run_epoch`` over the first N CoNLL-2003 training sentences, batch 32, padded to a
  multiple of 16 (``training.pad_to_multiple``, what bf16 runs of this size get). Eager and compiled epochs
  alternate (the machine's speed drifts between runs; alternating keeps the ratio honest). The first
  compiled epoch includes the compile: it is reported as "first epoch", and the compile time apart.
* prediction sent/s: ``Predictor.predict`` on CoNLL-2003 test, batch 64, with the weights trained above;
  same alternation. Compile time of the evaluation graph apart.
* agreement: predicted tags on CoNLL-2003 test, compiled against eager, in the benchmark's precision and
  in fp32, and the emissions' largest difference.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_pipeline as bp  # noqa: E402  (sets the environment and sys.path)

import torch  # noqa: E402

from ner_toolkit.config import load_config  # noqa: E402
from ner_toolkit.model.compiled import CompiledEmissions, compile_network  # noqa: E402
from ner_toolkit.training.trainer import make_optimization, prepare, run_epoch  # noqa: E402


def eager(tagger) -> None:
    tagger.__dict__.pop("compute_emissions", None)


def compiled(tagger, wrapper: CompiledEmissions) -> None:
    tagger.compute_emissions = wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-sentences", type=int, default=3200)
    ap.add_argument("--rounds", type=int, default=3, help="eager/compiled pairs of epochs and of test passes")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if not bp.CONLL.is_dir():
        sys.exit(f"CoNLL-2003 not found at {bp.CONLL}")
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    train_file = bp.head(bp.CONLL / "train.txt", args.train_sentences, tmp / "train.txt")
    config = load_config(None, tuple(bp.REFERENCE + [
        f"data.train={train_file}", f"data.test={bp.CONLL / 'test.txt'}", f"output_dir={tmp / 'run'}",
        f"training.precision={args.precision}", "training.pad_to_multiple=16"]))
    setup = prepare(config)
    tc, tagger = config.training, setup.tagger
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}; "
          f"{len(setup.items)} training sentences", flush=True)

    optimization = make_optimization(setup)
    run_epoch(setup.items[:256], setup.collator, optimization, tc, random.Random(0), setup.device)  # warm-up
    wrapper = compile_network(tagger)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    first_compiled = 0.0
    for r in range(args.rounds):
        for mode in ("eager", "compiled"):
            (eager(tagger) if mode == "eager" else compiled(tagger, wrapper))
            t0 = time.perf_counter()
            run_epoch(setup.items, setup.collator, optimization, tc, random.Random(r), setup.device)
            seconds = time.perf_counter() - t0
            if mode == "compiled" and r == 0:
                first_compiled = seconds
            else:
                times[mode].append(seconds)
            print(f"  training {mode} round {r}: {seconds:.1f} s", flush=True)
    train_compile = wrapper.compile_seconds
    n = len(setup.items)
    train_eager = n / statistics.median(times["eager"])
    train_comp = n / statistics.median(times["compiled"]) if times["compiled"] else float("nan")

    sentences = setup.test.tokens
    predictor = setup.predictor
    eager(tagger)
    want = predictor.predict(sentences)  # also the eager warm-up
    compiled(tagger, wrapper)
    before = wrapper.compile_seconds
    t0 = time.perf_counter()
    got = predictor.predict(sentences)
    first_pred = time.perf_counter() - t0
    pred_compile = wrapper.compile_seconds - before
    pred_times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for mode in ("eager", "compiled"):
            (eager(tagger) if mode == "eager" else compiled(tagger, wrapper))
            t0 = time.perf_counter()
            predictor.predict(sentences)
            pred_times[mode].append(time.perf_counter() - t0)
    m = len(sentences)
    pred_eager = m / statistics.median(pred_times["eager"])
    pred_comp = m / statistics.median(pred_times["compiled"])

    def differing(a: list[list[str]], b: list[list[str]]) -> int:
        return sum(x != y for s, t in zip(a, b) for x, y in zip(s, t))

    tokens = sum(len(s) for s in sentences)
    agreement = [(args.precision, differing(want, got))]
    if args.precision != "fp32":
        predictor.precision = "fp32"
        eager(tagger)
        want32 = predictor.predict(sentences)
        compiled(tagger, wrapper)
        got32 = predictor.predict(sentences)
        agreement.append(("fp32", differing(want32, got32)))
        predictor.precision = args.precision

    print(f"\n| {args.precision} | eager sent/s | compiled sent/s | compiled/eager | first compiled pass (s) "
          f"| of it compiling (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| training, {n} sentences (batch 32) | {train_eager:.1f} | {train_comp:.1f} | "
          f"{train_comp / train_eager:.2f}x | {first_compiled:.1f} | {train_compile:.1f} |")
    print(f"| prediction, CoNLL-2003 test (batch 64) | {pred_eager:.1f} | {pred_comp:.1f} | "
          f"{pred_comp / pred_eager:.2f}x | {first_pred:.1f} | {pred_compile:.1f} |")
    eager_epoch = n / train_eager
    saved = eager_epoch - n / train_comp
    payback = (f"the compile pays back after {train_compile / saved:.1f} epochs of this size" if saved > 0
               else "a compiled epoch is no faster, so the compile never pays back")
    print(f"\ntraining epoch including the compile: {first_compiled:.1f} s against {eager_epoch:.1f} s eager; "
          f"{payback}")
    for precision, count in agreement:
        print(f"tags that differ, compiled against eager ({precision}): {count} of {tokens}")
    print(f"compile fell back to eager: {wrapper.failed}")


if __name__ == "__main__":
    main()
