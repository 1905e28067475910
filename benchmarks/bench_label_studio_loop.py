"""The annotation loop through the Label Studio backend, simulated with CoNLL-2003 gold as the annotator:
does annotating the least sure tasks first beat annotating in random order?

    python benchmarks/bench_label_studio_loop.py [--pool 2000] [--initial 100] [--step 100] [--rounds 4]
        [--config configs/quickstart.yaml] [--epochs 12] [--test-sentences 1000] [--seed 1] [--work-dir DIR]

Everything goes through the endpoints Label Studio uses (``ner serve --label-studio`` on 127.0.0.1, over
HTTP): the first ``--pool`` sentences of the CoNLL-2003 training set are the project's tasks (words joined
by spaces); ``--initial`` of them, drawn with ``--seed``, are annotated first (``POST /webhook``
``ANNOTATION_CREATED`` with the gold spans as Label Studio regions) and a first model is trained on them
by the same recipe outside the server (the model the server starts with). Then each round: ``POST /predict`` on
the tasks not yet annotated, the ``--step`` tasks with the lowest task ``score`` (the order Label Studio's
Data Manager shows when sorted by prediction score, ascending) or ``--step`` drawn at random are
annotated with their gold spans, and a new round is trained and swapped in. After every round the served
model tags the first ``--test-sentences`` of the CoNLL-2003 test set through ``POST /predict``; the span
F1 is exact (start, end, label) matching of the returned regions against the gold spans, which is
conlleval's phrase F1 since words and spaces map one to one.

A round trains (``START_TRAINING``; ``GET /health`` until the round is served) on every annotation so far,
with the recipe (``--config``, ``--epochs``) the server's model was trained with. Both orders start from
the same model, so round 0 is one point. Prints a
markdown table: round, annotated sentences, F1 by uncertainty order and by random order, and the wall
time of each strategy.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ner_toolkit.data.conll import is_docstart, read_conll  # noqa: E402
from ner_toolkit.data.schemes import to_spans  # noqa: E402
from ner_toolkit.serve.labelstudio import annotation_payload  # noqa: E402
from ner_toolkit.serve.ls_client import Client  # noqa: E402

CONLL = ROOT.parent / "shared" / "datasets" / "conll2003" / "iob2"
LABELS = ("PER", "ORG", "LOC", "MISC")
CONFIG_XML = ("<View><Labels name=\"label\" toName=\"text\">" + "".join(f"<Label value=\"{x}\"/>" for x in LABELS)
              + "</Labels><Text name=\"text\" value=\"$text\"/></View>")
Task = dict[str, Any]


def read_tasks(path: Path, limit: int, first_id: int = 1) -> list[Task]:
    """The first ``limit`` sentences of an IOB2 CoNLL file as Label Studio tasks, with their gold spans
    (character offsets into the space-joined words) under ``gold``."""
    tasks: list[Task] = []
    for item in read_conll(path):
        if is_docstart(item) or not getattr(item, "tokens", None):
            continue
        starts, at = [], 0
        for token in item.tokens:
            starts.append(at)
            at += len(token) + 1
        text = " ".join(item.tokens)
        gold = {(starts[s], starts[e - 1] + len(item.tokens[e - 1]), label)
                for label, s, e in to_spans(item.labels, "IOB2")}
        tasks.append({"id": first_id + len(tasks), "data": {"text": text}, "gold": gold,
                      "conll": "".join(f"{w} {t}\n" for w, t in zip(item.tokens, item.labels)) + "\n"})
        if len(tasks) == limit:
            break
    return tasks


class Backend:
    """One ``ner serve --label-studio`` process on a free loopback port, driven by the shipped client."""

    def __init__(self, model: Path, work_dir: Path, train_set: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "ner_toolkit", "serve", "--model", str(model), "--label-studio",
               "--port", str(port), "--work-dir", str(work_dir), "--max-body-bytes", str(64 << 20)]
        for override in train_set:
            cmd += ["--train-set", override]
        self.log = open(work_dir.parent / f"{work_dir.name}.server.log", "wb")
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)))
        self.client = Client(f"http://127.0.0.1:{port}", CONFIG_XML, timeout=3600)
        deadline = time.monotonic() + 300
        while True:
            try:
                if self.client.health().get("status") == "UP":
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start; see {self.log.name}")
            time.sleep(0.5)
        self.client.call("POST", "/setup", {"project": "1", "schema": CONFIG_XML, "extra_params": {}})

    def annotate(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.client.annotate(annotation_payload(task["id"], task["data"]["text"], sorted(task["gold"]),
                                                    self.client.config))

    def predict(self, tasks: list[Task]) -> list[dict]:
        results: list[dict] = []
        for i in range(0, len(tasks), 500):
            batch = [{"id": t["id"], "data": t["data"]} for t in tasks[i:i + 500]]
            answer = self.client.predict(batch)
            assert len(answer) == len(batch), "one result per task"
            results += answer
        return results

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)
        self.log.close()


def span_f1(backend: Backend, test: list[Task]) -> float:
    found = gold = correct = 0
    for task, result in zip(test, backend.predict(test)):
        predicted = {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result["result"]}
        found, gold, correct = found + len(predicted), gold + len(task["gold"]), correct + len(predicted & task["gold"])
    return 2 * correct / (found + gold) if found + gold else 0.0


def run_strategy(name: str, args: argparse.Namespace, pool: list[Task], initial: list[Task], test: list[Task],
                 model: Path, work: Path) -> list[tuple[int, float]]:
    rng = random.Random(args.seed)
    backend = Backend(model, work / name, [f"training.epochs={args.epochs}", "training.progress=false"])
    curve: list[tuple[int, float]] = []
    try:
        annotated = {t["id"] for t in initial}
        backend.annotate(initial)  # in the corpus, so that every round trains on them too
        curve.append((len(annotated), span_f1(backend, test)))
        for round_ in range(args.rounds):
            rest = [t for t in pool if t["id"] not in annotated]
            if name == "uncertainty":
                scores = [r["score"] for r in backend.predict(rest)]
                order = sorted(range(len(rest)), key=lambda i: (scores[i], rest[i]["id"]))
                chosen = [rest[i] for i in order[:args.step]]
            else:
                chosen = rng.sample(rest, args.step)
            backend.annotate(chosen)
            annotated |= {t["id"] for t in chosen}
            backend.client.train()
            curve.append((len(annotated), span_f1(backend, test)))
            print(f"{name}: {len(annotated)} annotated, F1 {curve[-1][1]:.4f}", file=sys.stderr, flush=True)
    finally:
        backend.close()
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--test-sentences", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work-dir", help="keep the servers' work directories here (default: a temporary one)")
    args = ap.parse_args()
    if not CONLL.is_dir():
        raise SystemExit(f"needs CoNLL-2003 in {CONLL}")
    pool = read_tasks(CONLL / "train.txt", args.pool)
    test = read_tasks(CONLL / "test.txt", args.test_sentences, first_id=10_000_000)
    initial = random.Random(args.seed).sample(pool, args.initial)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        # The starting model: the recipe on the initial sentences, written as CoNLL.
        seed_file = work / "initial.txt"
        seed_file.write_text("".join(t["conll"] for t in initial), encoding="utf-8")
        model_dir = work / "initial"
        subprocess.run([sys.executable, "-m", "ner_toolkit", "train", "--config", args.config, "--set",
                        f"data.train={seed_file}", "--set", "data.dev=null", "--set", "data.test=null", "--set",
                        f"training.epochs={args.epochs}", "--set", "training.progress=false", "--output-dir",
                        str(model_dir), "--overwrite"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT)))
        curves, seconds = {}, {}
        for name in ("uncertainty", "random"):
            start = time.perf_counter()
            curves[name] = run_strategy(name, args, pool, initial, test, model_dir / "model", work)
            seconds[name] = time.perf_counter() - start
    print(f"pool {args.pool} CoNLL-2003 training sentences, {args.step} per round, recipe {args.config} "
          f"({args.epochs} epochs), test: first {args.test_sentences} CoNLL-2003 test sentences, seed {args.seed}")
    print("| round | annotated sentences | F1 uncertainty order | F1 random order |")
    print("|---|---|---|---|")
    for i, ((n, f_u), (_, f_r)) in enumerate(zip(curves["uncertainty"], curves["random"])):
        print(f"| {i} | {n} | {100 * f_u:.2f} | {100 * f_r:.2f} |")
    print(f"wall time: uncertainty {seconds['uncertainty']:.0f} s, random {seconds['random']:.0f} s")


if __name__ == "__main__":
    main()
