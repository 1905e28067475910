"""Training from partial labels on CoNLL-2003: what hiding entity annotations costs, told as `O` or as `?`.

    python benchmarks/bench_partial_labels.py [--fractions 0.5,0.8] [--epochs 8] [--seed 1] [--precision bf16|fp32]
                                              [--threads N] [--train-sentences N] [--out runs/partial_labels]

A random ``fraction`` of the training entity spans is hidden (``ner_toolkit.data.simulate.hide_spans``, the same
spans for both treatments of one fraction). Three kinds of run of the from-scratch recipe
(``configs/conll03_scratch.yaml``, ``--epochs`` epochs, dev scored each epoch, the best epoch kept):

* ``full``: every label;
* ``hidden→O``: the hidden spans' tokens tagged ``O`` (what a toolkit without partial labels must assume);
* ``hidden→?``: their tokens tagged ``?`` (``data.unknown_tag``), trained with the CRF's partial-label loss
  (the marginal likelihood of every legal path that agrees with the known tags).

Each run is ``train.py`` in a subprocess; a run whose ``model/metrics.json`` exists is read, not rerun, so an
interrupted benchmark continues where it stopped. Prints a markdown table of test F1 (and dev F1).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"

from ner_toolkit.data.simulate import hide_spans  # noqa: E402


def run(name: str, train_file: Path, out: Path, epochs: int, seed: int, precision: str, threads: int) -> dict:
    """Train (unless done before) and return the run's metrics.json (dev and test scores)."""
    metrics = out / name / "model" / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "conll03_scratch.yaml"),
               "--set", f"data.train={train_file}", "--set", f"data.dev={CONLL / 'dev.txt'}",
               "--set", f"data.test={CONLL / 'test.txt'}", "--set", f"training.epochs={epochs}",
               "--set", f"training.seed={seed}", "--set", f"training.precision={precision}",
               "--output-dir", str(out / name)] + (["--set", f"training.num_threads={threads}"] if threads else [])
        print(f"# {name}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(metrics.read_text(encoding="utf-8"))


def head(src: Path, sentences: int, dst: Path) -> Path:
    """The first ``sentences`` sentences of a CoNLL file (its -DOCSTART- lines kept)."""
    out, count, in_sentence = [], 0, False
    for line in src.read_text(encoding="utf-8").splitlines():
        token = bool(line.strip()) and not line.startswith("-DOCSTART-")
        if in_sentence and not token:
            count += 1
            if count == sentences:
                break
        in_sentence = token
        out.append(line)
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    return dst


def f1(metrics: dict, key: str) -> str:
    return f"{100 * metrics[key]['micro']['f1']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="0.5,0.8", help="fractions of training spans hidden, comma separated")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1, help="training seed and the seed that picks hidden spans")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "partial_labels")
    ap.add_argument("--train-sentences", type=int, help="train on the first N training sentences only")
    ap.add_argument("--threads", type=int, default=0, help="training.num_threads (0: torch's default)")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                    help="the recipe's bf16 needs AVX-512 BF16 / AMX (or a GPU) to be fast; fp32 elsewhere")
    args = ap.parse_args()
    if not CONLL.is_dir():
        sys.exit(f"CoNLL-2003 not found at {CONLL}")
    args.out.mkdir(parents=True, exist_ok=True)
    train = CONLL / "train.txt"
    if args.train_sentences:
        train = head(train, args.train_sentences, args.out / "train.txt")
    rows = [("all labels", "full", "-", run("full", train, args.out, args.epochs, args.seed, args.precision, args.threads))]
    for fraction in (float(f) for f in args.fractions.split(",")):
        pct = f"{100 * fraction:.0f}"
        for replacement, treatment in (("O", "hidden→O"), ("?", "hidden→?")):
            name = f"hidden{pct}_{'O' if replacement == 'O' else 'unknown'}"
            train_file = args.out / f"{name}.txt"
            hidden, total = hide_spans(train, train_file, fraction, args.seed, replacement)
            rows.append((f"{pct}% hidden ({hidden} of {total} spans)", treatment, pct,
                         run(name, train_file, args.out, args.epochs, args.seed, args.precision, args.threads)))
    size = f"the first {args.train_sentences} training sentences" if args.train_sentences else "all of train"
    print(f"\nCoNLL-2003 ({size}), {args.epochs} epochs, seed {args.seed}, {args.precision} "
          f"(configs/conll03_scratch.yaml)\n")
    print("| training labels | treatment | dev F1 | test F1 |")
    print("|---|---|---:|---:|")
    for label, treatment, _, metrics in rows:
        print(f"| {label} | {treatment} | {f1(metrics, 'dev')} | {f1(metrics, 'test')} |")


if __name__ == "__main__":
    main()
