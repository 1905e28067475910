"""Active learning on CoNLL-2003, simulated: does choosing by CRF uncertainty beat choosing at random?

    python benchmarks/bench_active_learning.py [--initial 500] [--step 500] [--rounds 5] [--epochs 12]
        [--strategies entropy,random] [--seed 1] [--plot curve.png] [--device cpu] [--precision bf16]
        [--train-sentences N] [--test-sentences N] [--threads N] [--work-dir DIR]

Every strategy starts from the same ``--initial`` training sentences, drawn at random with ``--seed``. Each
round trains a model from scratch on the labelled sentences with the from-scratch reference recipe
(``configs/conll03_scratch.yaml``: its architecture, learning rates, dropouts and precision, with
``--epochs`` epochs, ``--seed`` as the training seed, and no dev set, so the last epoch is kept: an
annotation project that picks sentences would not hold a 3,250-sentence dev set back), scores it on the
CoNLL-2003 test set, and then ranks the rest of the training set exactly as ``ner-select`` does
(``selection.uncertainties`` and ``selection.select`` in this process) and adds the ``--step`` most
uncertain sentences with their gold tags from the training file: the simulated annotator. ``random``
ranks by a seeded draw (seed ``--seed`` + round). Round 0 is the same training for every strategy (same
sentences, same seed), so the curves start at one point.

``--epochs`` defaults to 12, the recipe's own: each round is then the recipe on a subset, and a small
training set has fewer steps per epoch, so it needs no fewer epochs. The defaults make 2 strategies x 6
trainings on 500 to 3,000 sentences (1,750 on average, 12 epochs each), a test pass after each, and a
selection pass over the ~13,000 unlabelled training sentences per entropy round. Measured: with
``--epochs 4 --test-sentences 1500 --precision fp32 --threads 1`` it took 2,394 s on a 2-core AMD EPYC
(no AVX-512) that was running another benchmark beside it; the default 12 epochs take about 3x the training.

Output: a markdown table (round, labelled sentences, test span F1 and labelled tokens per strategy) on stdout, progress on
stderr, and with ``--plot`` the learning curves as a PNG (matplotlib). For quick trials,
``--train-sentences`` / ``--test-sentences`` take only the first N sentences of the training set (the
universe) and of the test set. ``--precision`` defaults to the recipe's bf16: on a CPU without
AVX512-BF16 or AMX, bf16 autocast is emulated and several times slower than ``--precision fp32``.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench_pipeline as bp  # noqa: E402  (sets the environment and sys.path)

import torch  # noqa: E402

from ner_toolkit.config import load_config  # noqa: E402
from ner_toolkit.data.conll import Sentence, format_sentence, is_docstart, read_conll  # noqa: E402
from ner_toolkit.predict import Predictor  # noqa: E402
from ner_toolkit.selection import STRATEGIES, select, uncertainties  # noqa: E402
from ner_toolkit.training.trainer import train  # noqa: E402

RECIPE = bp.ROOT / "configs" / "conll03_scratch.yaml"


def read_universe(path: Path, limit: int | None) -> tuple[list[Sentence], list[int]]:
    """The training file's sentences (first ``limit``) and their document numbers."""
    sentences, documents, document = [], [], 0
    for item in read_conll(path):
        if is_docstart(item):
            document += 1
        elif isinstance(item, Sentence):
            sentences.append(item)
            documents.append(document)
            if limit is not None and len(sentences) >= limit:
                break
    return sentences, documents


def write_labelled(sentences: list[Sentence], chosen: set[int], out: Path) -> Path:
    """The chosen sentences, gold tags and all, in file order (their original lines)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(format_sentence(sentences[i], []) + "\n" for i in sorted(chosen)), encoding="utf-8")
    return out


def train_round(train_file: Path, test_file: Path, output_dir: Path, args: argparse.Namespace) -> tuple[float, Path]:
    """Train the recipe from scratch on ``train_file``; (test F1, model directory)."""
    overrides = [f"data.train={train_file}", "data.dev=null", f"data.test={test_file}",
                 f"output_dir={output_dir}", f"training.epochs={args.epochs}", f"training.seed={args.seed}",
                 f"training.device={args.device}", "training.progress=false"]
    if args.precision:
        overrides.append(f"training.precision={args.precision}")
    with contextlib.redirect_stdout(sys.stderr):  # train's summary line: stdout keeps only the table
        summary = train(load_config(RECIPE, tuple(overrides)), command=["bench_active_learning.py"])
    return summary["test_f1"], Path(summary["model_dir"])


def run_strategy(strategy: str, sentences: list[Sentence], documents: list[int], initial: set[int],
                 test_file: Path, work: Path, args: argparse.Namespace) -> list[tuple[int, int, float]]:
    """(labelled sentences, labelled tokens, test F1) per round for one strategy. Tokens are what an
    annotator's time goes by: a strategy that prefers short sentences gets fewer of them per round."""
    labelled = set(initial)
    curve = []
    for r in range(args.rounds + 1):
        t0 = time.perf_counter()
        round_dir = work / strategy / f"round-{r}"
        f1, model_dir = train_round(write_labelled(sentences, labelled, round_dir / "train.txt"), test_file,
                                    round_dir / "run", args)
        curve.append((len(labelled), sum(len(sentences[i].tokens) for i in labelled), f1))
        trained_s = time.perf_counter() - t0
        note = ""
        if r < args.rounds:
            t1 = time.perf_counter()
            pool = [i for i in range(len(sentences)) if i not in labelled]
            predictor = None if strategy == "random" else Predictor.load(model_dir, args.device, 64,
                                                                          args.precision or "bf16")
            scores = uncertainties(predictor, [sentences[i].tokens for i in pool], strategy,
                                   [documents[i] for i in pool], seed=args.seed + r)
            labelled.update(pool[i] for i in select(scores, args.step))
            note = f", selection {time.perf_counter() - t1:.0f} s over {len(pool)} sentences"
        shutil.rmtree(round_dir / "run", ignore_errors=True)  # ~50 MB a model; only the numbers are kept
        print(f"[{strategy}] round {r}: {curve[-1][0]} labelled ({curve[-1][1]} tokens), test F1 {100 * f1:.2f} "
              f"(training {trained_s:.0f} s"
              f"{note})", file=sys.stderr, flush=True)
    return curve


def plot(curves: dict[str, list[tuple[int, int, float]]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for column, (ax, unit) in enumerate(zip(axes, ("sentences", "tokens"))):
        for strategy, curve in curves.items():
            ax.plot([point[column] for point in curve], [100 * f for *_, f in curve], "o-", label=strategy)
        ax.set_xlabel(f"labelled training {unit}")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("CoNLL-2003 test span F1 (%)")
    fig.suptitle(f"active learning, from-scratch recipe, {args.epochs} epochs a round, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--initial", type=int, default=500, help="random training sentences to start from")
    ap.add_argument("--step", type=int, default=500, help="sentences added each round")
    ap.add_argument("--rounds", type=int, default=5, help="selection rounds after the initial training")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of each training (default 12, the recipe's)")
    ap.add_argument("--strategies", default="entropy,random", help="comma-separated ner-select strategies")
    ap.add_argument("--seed", type=int, default=1, help="initial sample and training seed, for every strategy")
    ap.add_argument("--plot", type=Path, help="write the learning curves to this PNG")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                    help="default: the recipe's (bf16); fp32 on a CPU without AVX512-BF16/AMX")
    ap.add_argument("--train-sentences", type=int, help="only the first N training sentences are the universe")
    ap.add_argument("--test-sentences", type=int, help="score on the first N test sentences only")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (on a busy machine 1 is often fastest)")
    ap.add_argument("--work-dir", type=Path, help="where the rounds' training files go (default: a temporary one)")
    args = ap.parse_args()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        sys.exit(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    if not bp.CONLL.is_dir():
        sys.exit(f"CoNLL-2003 not found at {bp.CONLL}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sentences, documents = read_universe(bp.CONLL / "train.txt", args.train_sentences)
    if args.initial + args.rounds * args.step > len(sentences):
        sys.exit(f"{args.initial} + {args.rounds} x {args.step} sentences is more than the {len(sentences)} there are")
    initial = set(random.Random(args.seed).sample(range(len(sentences)), args.initial))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_al_"))
    work.mkdir(parents=True, exist_ok=True)
    test_file = bp.CONLL / "test.txt"
    if args.test_sentences:
        test_file = bp.head(test_file, args.test_sentences, work / "test.txt")
    started = time.perf_counter()
    curves = {s: run_strategy(s, sentences, documents, initial, test_file, work, args) for s in strategies}
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    tested = f"first {args.test_sentences} test sentences" if args.test_sentences else "test set"
    print(f"\nCoNLL-2003 span F1 (%) on the {tested}, from-scratch recipe, {args.epochs} epochs a round, seed "
          f"{args.seed}, {len(sentences)} training sentences in the universe ({time.perf_counter() - started:.0f} s)\n")
    print("| round | labelled sentences | " + " | ".join(f"{s} F1 (tokens)" for s in strategies) + " |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in strategies) + " |")
    for r in range(args.rounds + 1):
        row = [f"{100 * curves[s][r][2]:.2f} ({curves[s][r][1]})" for s in strategies]
        print(f"| {r} | {curves[strategies[0]][r][0]} | " + " | ".join(row) + " |")
    if args.plot:
        plot(curves, args.plot, args)
        print(f"\nlearning curves: {args.plot}")


if __name__ == "__main__":
    main()
