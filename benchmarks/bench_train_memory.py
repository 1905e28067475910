"""Training memory against corpus size: peak RSS of ``train.py`` for 1 epoch with dev scoring.

    python benchmarks/bench_train_memory.py [--sizes 2000,14041,140410] [--precision bf16] [--until first-step]
                                            [--micro-batch-subwords N] [--threads N]

The reference architecture (scratch ALBERT: embedding 128, hidden 256, 4 layers, 4 heads, intermediate
1024, the albert-base-v2 vocabulary; (+) 100-d words; BiLSTM 256; CRF), batch 32, on the first N
sentences of CoNLL-2003 train (repeated past its 14,041), CoNLL-2003 dev scored after the epoch, no
test. Each size runs ``train.py`` in a fresh process; its peak RSS comes from ``wait4``. Prints one row
per size and the ratio of each to the smallest (target, issue 15: <= 1.1x from 2,000 to 140,410, and
<= 1.2 GB at 14,041). Needs ../shared/datasets/conll2003.

``--until first-step`` stops each run at its first training step (``--profile-startup`` marks it) and
reads the peak RSS so far from /proc: the data read, checked and encoded and the model built, without
the epoch. It isolates what the corpus itself costs, in seconds instead of an epoch per size.

The "longest sentence" column says why the epoch's peak can grow with the corpus even when the data costs
little: a batch of 32 is padded to its longest sentence, and the first 2,000 sentences of train hold none
longer than 54 words where all of train holds one of 113. ``--micro-batch-subwords N`` runs any batch of
more than N padded subwords as micro-batches (``training.micro_batch_subwords``), which bounds that.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_predict_memory import repeat_to, run, sentences_of  # same folder: the same corpus and RSS helpers

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"
REFERENCE = [
    "model.encoder.scratch={embedding_size: 128, hidden_size: 256, num_hidden_layers: 4, "
    "num_attention_heads: 4, intermediate_size: 1024, max_position_embeddings: 512}",
    "model.lstm.hidden_size=256", "training.batch_size=32", "training.epochs=1", "data.test=null",
    "training.progress=false",
]


def run_to_first_step(cmd: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``train.py --profile-startup`` up to its first training step."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd + ["--profile-startup"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("profile: first training step at"):
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = next(int(v.split()[1]) for v in status.splitlines() if v.startswith("VmHWM:"))
                return time.perf_counter() - t0, hwm / 1024
        sys.exit(f"no first training step (exit {proc.wait()}): {shlex.join(cmd)}")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,14041,140410", help="training sentences per run")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--until", default="epoch", choices=("epoch", "first-step"),
                    help="run the epoch and the dev scoring, or stop at the first training step")
    ap.add_argument("--micro-batch-subwords", type=int, help="training.micro_batch_subwords (default: null)")
    ap.add_argument("--threads", type=int, help="training.num_threads (default: torch's)")
    args = ap.parse_args()
    if not (CONLL / "train.txt").is_file():
        sys.exit(f"needs {CONLL}/train.txt and dev.txt")
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    blocks = sentences_of(CONLL / "train.txt")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            train = repeat_to(blocks, n, Path(tmp) / f"train-{n}.txt")
            cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "quickstart.yaml"),
                   "--output-dir", str(Path(tmp) / f"run-{n}"), "--set", f"data.train={train}",
                   "--set", f"data.dev={CONLL / 'dev.txt'}", "--set", f"training.precision={args.precision}"]
            for override in REFERENCE:
                cmd += ["--set", override]
            if args.micro_batch_subwords:
                cmd += ["--set", f"training.micro_batch_subwords={args.micro_batch_subwords}"]
            if args.threads:
                cmd += ["--set", f"training.num_threads={args.threads}"]
            longest = max(block.count("\n") + 1 for block in blocks[:n])
            seconds, rss = run(cmd, env) if args.until == "epoch" else run_to_first_step(cmd, env)
            rows.append((n, longest, seconds, rss))
            print(f"  {n} sentences: {seconds:.0f} s, peak RSS {rss:.0f} MB", flush=True)
            train.unlink()
    base = rows[0][3]
    what = "1 epoch, CoNLL-2003 dev scored" if args.until == "epoch" else "up to the first training step"
    print(f"\n{what}, {args.precision}, batch 32, micro-batches of at most {args.micro_batch_subwords or 'any'} "
          f"subwords; torch threads: {args.threads or os.environ.get('OMP_NUM_THREADS', 'default')}")
    print("| training sentences | longest sentence (words) | seconds | peak RSS MB | vs smallest |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, longest, seconds, rss in rows:
        print(f"| {n:,} | {longest} | {seconds:.0f} | {rss:.0f} | {rss / base:.2f}x |")


if __name__ == "__main__":
    main()
