"""Where a training run's wall time goes outside its epochs: the quickstart end to end, and the time to
the first training step on full CoNLL-2003.

    python benchmarks/bench_startup.py [--runs 3] [--skip-conll]

Each run is ``train.py --profile-startup`` in a fresh process (the table it prints is
``ner_toolkit/training/phases.py``'s). Rows:
- quickstart (``configs/quickstart.yaml``): wall from outside the process, the sum of its epochs, and
  the difference, the median of ``--runs``; the phase table of the median run.
- full CoNLL-2003 (``configs/conll03_scratch.yaml``, ../shared): the moment the first training step
  begins, read from the line ``--profile-startup`` prints then; the run is stopped there (SIGTERM).
- the floor, in the same script: a process that imports torch (and then transformers' ``AlbertModel``)
  and exits: the imports every run pays before it can do anything.
Targets (issue 15): quickstart wall minus its epochs <= 4 s; first step on full CoNLL <= 5 s.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "datasets" / "conll2003" / "train.txt"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
           PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
EPOCHS = "training epochs"  # phases.TRAINING
ROW = re.compile(r"^\| (.+?) \| ([\d.]+) \|")


def table_rows(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in map(ROW.match, text.splitlines()) if m}


def quickstart(out: Path) -> tuple[float, dict[str, float], str]:
    """(wall seconds from outside, the phase rows, the phase table) of one quickstart run."""
    cmd = [sys.executable, "train.py", "--config", "configs/quickstart.yaml", "--output-dir", str(out),
           "--profile-startup"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the quickstart failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    table = proc.stderr[proc.stderr.rindex("wall time by phase:"):]
    return wall, table_rows(table), table


def first_step(out: Path) -> tuple[float, str]:
    """(seconds from the process start to the first training step, the table then) on full CoNLL."""
    cmd = [sys.executable, "train.py", "--config", "configs/conll03_scratch.yaml", "--output-dir", str(out),
           "--set", "training.epochs=1", "--profile-startup"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    at = None
    for line in proc.stderr:
        if at is None:
            match = re.match(r"^profile: first training step at ([\d.]+) s:", line)
            if match:
                at = float(match.group(1))
        else:
            lines.append(line.rstrip("\n"))
            if line.startswith("| first training step (at)"):
                break
    proc.terminate()  # SIGTERM: the trainer cleans up (lock, partial files) and exits 143
    proc.communicate(timeout=120)
    if at is None:
        sys.exit(f"no first-step line from the CoNLL run (exit {proc.returncode})")
    return at, "\n".join(lines)


def floor(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="quickstart runs (the median is reported)")
    ap.add_argument("--skip-conll", action="store_true", help="leave out the full CoNLL-2003 first-step row")
    args = ap.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        runs = [quickstart(Path(tmp) / f"quickstart-{i}") for i in range(args.runs)]
        runs.sort(key=lambda r: r[0] - r[1][EPOCHS])
        wall, rows, table = runs[len(runs) // 2]
        conll = None
        if not args.skip_conll and CONLL.is_file():
            conll = first_step(Path(tmp) / "conll")
    # Imports alone, exiting as train.py does (os._exit: no interpreter teardown).
    torch_floor = floor("import os, torch; os._exit(0)", args.runs)
    hf_floor = floor("import os, torch, transformers; from transformers import AlbertModel; os._exit(0)", args.runs)

    epochs = rows[EPOCHS]
    print(f"\nquickstart, median of {args.runs} by wall minus epochs (all: "
          f"{', '.join(f'{w:.1f} s - {r[EPOCHS]:.1f} s' for w, r, _ in runs)}):\n{table}\n")
    print("| measure | seconds | target |")
    print("|---|---:|---:|")
    print(f"| quickstart wall (from outside the process) | {wall:.2f} | |")
    print(f"| quickstart epochs (sum) | {epochs:.2f} | |")
    print(f"| quickstart wall minus epochs | {wall - epochs:.2f} | <= 4 |")
    if conll is not None:
        print(f"| full CoNLL-2003: first training step at | {conll[0]:.2f} | <= 5 |")
    print(f"| floor: a process that imports torch | {torch_floor:.2f} | |")
    print(f"| floor: ... and transformers' AlbertModel | {hf_floor:.2f} | |")
    if conll is not None:
        print(f"\nfull CoNLL-2003 (configs/conll03_scratch.yaml) up to the first training step:\n{conll[1]}")
    elif not args.skip_conll:
        print(f"\nnote: {CONLL} not found; no full CoNLL-2003 row")


if __name__ == "__main__":
    main()
