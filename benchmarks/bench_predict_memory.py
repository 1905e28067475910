"""Prediction streams: peak memory must not grow with the input file.

    python benchmarks/bench_predict_memory.py [--small 2000] [--large 200000]

Trains a small model on the shipped sample (1 epoch; the weights do not matter here), writes a
2,000-sentence and a 200,000-sentence file by repeating CoNLL-2003 test (or the shipped sample test when
../shared is absent), runs ``predict.py`` on each in a fresh process and prints both peak RSS values
and their ratio (target: large <= 1.1 x small).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONLL_TEST = ROOT.parent / "shared" / "datasets" / "conll2003" / "test.txt"
SAMPLE = ROOT / "data" / "sample"


def sentences_of(path: Path) -> list[str]:
    """Each sentence's lines as one block of text (blank-line separated), -DOCSTART- dropped."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return [b.strip("\n") for b in blocks if b.strip() and not b.startswith("-DOCSTART-")]


def repeat_to(blocks: list[str], n: int, out: Path) -> Path:
    with out.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(blocks[i % len(blocks)] + "\n\n")
    return out


def run(cmd: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a child process."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: exec so that its RSS is its own
        os.execvpe(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        sys.exit(f"command failed ({status}): {' '.join(cmd)}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=200_000)
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "quickstart.yaml"),
                    "--set", "training.epochs=1", "--set", "data.test=null", "--output-dir", str(tmp / "model")],
                   check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    source = CONLL_TEST if CONLL_TEST.is_file() else SAMPLE / "test.txt"
    blocks = sentences_of(source)
    rows = []
    for n in (args.small, args.large):
        data = repeat_to(blocks, n, tmp / f"input_{n}.txt")
        out = tmp / f"output_{n}.txt"
        seconds, peak = run([sys.executable, str(ROOT / "predict.py"), "--model", str(tmp / "model"), str(data),
                             "--output", str(out)], env)
        lines_in = sum(1 for line in data.open(encoding="utf-8") if line.strip())
        lines_out = sum(1 for line in out.open(encoding="utf-8") if line.strip())
        assert lines_in == lines_out, f"{lines_in} token lines in, {lines_out} out"
        rows.append((n, data.stat().st_size / 2**20, seconds, n / seconds, peak))
        out.unlink()
    print(f"input: {source} repeated; model: quickstart architecture; torch threads: default\n")
    print(f"{'sentences':>10}{'file MB':>10}{'seconds':>10}{'sent/s':>10}{'peak RSS MB':>14}")
    for n, size, seconds, rate, peak in rows:
        print(f"{n:>10}{size:>10.1f}{seconds:>10.1f}{rate:>10.0f}{peak:>14.0f}")
    print(f"\npeak RSS ratio large/small: {rows[1][4] / rows[0][4]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
