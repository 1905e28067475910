"""Thread policy under contention: training and prediction, each with 0, 1 and 2 (up to the core count)
competing busy processes, for fixed thread counts, the automatic default (``--threads 0``: the free
cores) and OpenMP wait policies. Prints one row per (task, busy processes): wall seconds of each setting
(best of ``--repeats``, settings interleaved so drift spreads evenly) and its ratio to the row's best.

    python benchmarks/bench_threads.py                # about 20 minutes on 2 cores
    python benchmarks/bench_threads.py --repeats 1 --epochs 1   # a smoke run

Run it on an otherwise idle machine: the busy processes it starts are the only contention it means to
measure. Each timed run is a whole command as a user runs it (``ner train`` on the quickstart config,
``ner predict`` on the CoNLL-2003 test set, process start included).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
CONLL_TEST = ROOT.parent / "shared" / "datasets" / "conll2003" / "test.txt"
SAMPLE_TEST = ROOT / "data" / "sample" / "test.txt"
BUSY = "while True: pass"


def settings(cores: int) -> list[tuple[str, int, Optional[str]]]:
    """(column name, --threads, OMP_WAIT_POLICY or None for libgomp's default)."""
    rows: list[tuple[str, int, Optional[str]]] = []
    for wait, tag in ((None, ""), ("PASSIVE", " passive")):
        rows += [(f"1{tag}", 1, wait), (f"{cores} (torch){tag}", cores, wait), (f"auto{tag}", 0, wait)]
    rows.append((f"{cores} active", cores, "ACTIVE"))
    return rows


def command(task: str, threads: int, out: Path, model: Path, epochs: int, test: Path) -> list[str]:
    ner = [sys.executable, "-m", "ner_toolkit"]
    if task == "train":
        return ner + ["train", "--config", "configs/quickstart.yaml", "--set", f"training.epochs={epochs}",
                      "--set", "training.progress=false", "--threads", str(threads),
                      "--output-dir", str(out / "train"), "--overwrite"]
    return ner + ["predict", "--model", str(model), "--threads", str(threads), "--output",
                  str(out / "pred.txt"), str(test)]


def timed(cmd: list[str], wait: Optional[str], busy: int) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5)  # the hogs are running before the command starts, as on a busy machine
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="quickstart training epochs per timed run")
    ap.add_argument("--tasks", default="train,predict")
    ap.add_argument("--busy", default="", help="busy-process counts (default 0,1,cores)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    busy_counts = [int(x) for x in args.busy.split(",")] if args.busy else sorted({0, 1, cores})
    test = CONLL_TEST if CONLL_TEST.is_file() else SAMPLE_TEST
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model = out / "model"
        subprocess.run([sys.executable, "-m", "ner_toolkit", "train", "--config", "configs/quickstart.yaml",
                        "--set", "training.progress=false", "--output-dir", str(model)], cwd=ROOT, check=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        columns = settings(cores)
        print(f"{cores} cores; train: quickstart, {args.epochs} epochs; predict: {test.name} "
              f"({test.stat().st_size // 1000} kB); best of {args.repeats}; seconds (ratio to the row's best)")
        print("| task | busy | " + " | ".join(c[0] for c in columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for task in args.tasks.split(","):
            for busy in busy_counts:
                times: dict[str, float] = {}
                for _ in range(args.repeats):
                    for name, threads, wait in columns:
                        t = timed(command(task, threads, out, model, args.epochs, test), wait, busy)
                        times[name] = min(times.get(name, t), t)
                best = min(times.values())
                cells = [f"{times[c[0]]:.1f} ({times[c[0]] / best:.2f})" for c in columns]
                print(f"| {task} | {busy} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
