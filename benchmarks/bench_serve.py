"""Throughput and latency of ``ner-serve`` against the in-process Predictor on the same sentences.

    python benchmarks/bench_serve.py [--model DIR] [--requests 400] [--clients 1,8,32] [--per-request 1]
                                     [--workers 1] [--threads 1] [--max-batch N] [--max-wait-ms MS]
                                     [--batch-size 64]

Starts the server in a subprocess on loopback, then for each client count sends CoNLL-2003 test sentences
(../shared/datasets/conll2003/test.txt; the shipped sample test set when absent), ``--per-request`` per
request (default one) as ``{"tokens": [...]}``, from that many threads with keep-alive connections.

Two in-process references, ``Predictor.predict_documents`` (the call the server makes, CRF scores
included) with the same torch threads as one model process, measured while no server runs:
- all the sentences in one call: sorted by length into batches of ``--batch-size``, the best case. The
  issue's target: at 32 clients >= 80% of it, p99 <= 4x p50.
- calls of the server's mean batch at the most clients, in arrival order: the same work as the model
  did in the server, so the ratio to it is the cost of serving (HTTP, the pipe, the other processes on
  the cores), apart from what smaller, unsorted batches cost.
Client threads share the machine with the server, so on few cores the ratios include the clients' cost.

Model: ``--model``; default ``runs/quickstart`` (``python train.py --config configs/quickstart.yaml``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONLL_TEST = ROOT.parent / "shared" / "datasets" / "conll2003" / "test.txt"
SAMPLE_TEST = ROOT / "data" / "sample" / "test.txt"
QUICKSTART = ROOT / "runs" / "quickstart"
READY = re.compile(r"^serving .+ on http://127\.0\.0\.1:(\d+) ")


def conll_sentences(path: Path) -> list[list[str]]:
    out, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current:
                out.append(current)
            current = []
        else:
            current.append(line.split()[0])
    if current:
        out.append(current)
    return out


def start_server(model: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-c", "from ner_toolkit.cli import serve_console; serve_console()", "--model", model,
           "--port", "0", "--batch-size", str(args.batch_size), "--max-texts", "1024",
           "--threads", str(args.threads), "--workers", str(args.workers)]
    if args.max_batch is not None:
        cmd += ["--max-batch", str(args.max_batch)]
    if args.max_wait_ms is not None:
        cmd += ["--max-wait-ms", str(args.max_wait_ms)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        print(f"  server: {line.rstrip()}", file=sys.stderr)
        match = READY.match(line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            return proc, int(match.group(1))
    sys.exit(f"the server did not start (exit {proc.wait()})")


def load_level(port: int, requests: list[list[list[str]]], clients: int) -> tuple[float, list[float]]:
    """Send every request (its sentences) once from ``clients`` threads; (wall seconds, latencies in s)."""
    lock, latencies, errors = threading.Lock(), [], []
    queue = iter(requests)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    group = next(queue, None)
                if group is None:
                    return
                body = json.dumps({"tokens": group}).encode()
                t0 = time.perf_counter()
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                took = time.perf_counter() - t0
                if response.status != 200:
                    errors.append(f"{response.status} {data[:200]!r}")
                    return
                with lock:
                    latencies.append(took)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit(f"requests failed: {errors[:3]}")
    return wall, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/stats")
    out = json.loads(conn.getresponse().read())
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(QUICKSTART) if (QUICKSTART / "model").is_dir() else None,
                    required=not (QUICKSTART / "model").is_dir(), help="model directory (default runs/quickstart)")
    ap.add_argument("--requests", type=int, default=400, help="sentences sent per client level")
    ap.add_argument("--per-request", type=int, default=1, help="sentences per request (default 1)")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    ap.add_argument("--max-batch", type=int, help="passed to ner-serve (default: its own)")
    ap.add_argument("--max-wait-ms", type=float, help="passed to ner-serve (default: its own)")
    ap.add_argument("--batch-size", type=int, default=64, help="server --batch-size and the in-process one")
    ap.add_argument("--workers", type=int, default=1, help="ner-serve --workers: model processes")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the server and of the in-process run (default 1: on few cores the "
                         "server's event loop and the clients need the others)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits it
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))

    source = CONLL_TEST if CONLL_TEST.is_file() else SAMPLE_TEST
    if source is SAMPLE_TEST:
        print(f"note: {CONLL_TEST} not found; using the shipped sample {SAMPLE_TEST}")
    pool = conll_sentences(source)
    levels = [int(c) for c in args.clients.split(",")]
    sentences = [pool[i % len(pool)] for i in range(args.requests)]
    print(f"sentences: {len(sentences)} per level from {source} "
          f"({sum(map(len, sentences))} tokens); "
          f"model {args.model}; torch threads {args.threads}; {os.cpu_count()} CPUs")

    import torch

    from ner_toolkit.data.text import Document
    from ner_toolkit.predict import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.model, batch_size=args.batch_size)
    documents = [Document.from_tokens(s) for s in sentences]
    predictor.predict_documents(documents[:64])  # warm-up

    def in_process(chunk: int) -> tuple[float, list[float]]:
        """Best of three (a conservative baseline on a shared machine): sentences/s of
        ``predict_documents`` over the sentences in calls of ``chunk``, in order."""
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(documents), chunk):
                predictor.predict_documents(documents[i:i + chunk])
            runs.append(len(documents) / (time.perf_counter() - t0))
        return max(runs), runs

    whole, runs = in_process(len(documents))
    print(f"in-process, all sentences in one call: {whole:.1f} sentences/s, best of "
          f"{', '.join(f'{r:.1f}' for r in runs)} (batch size {args.batch_size}, {torch.get_num_threads()} torch threads)")

    requests = [sentences[i:i + args.per_request] for i in range(0, len(sentences), args.per_request)]
    proc, port = start_server(args.model, args)
    rows = []
    try:
        load_level(port, requests[:32], 4)  # warm-up: first calls allocate
        for clients in levels:
            before = stats(port)
            wall, latencies = load_level(port, requests, clients)
            after = stats(port)
            batches = after["batches"] - before["batches"]
            p50, p99 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3
            rows.append((clients, len(latencies) / wall, len(sentences) / wall, p50, p99, p99 / p50,
                         (after["sentences"] - before["sentences"]) / max(batches, 1),
                         (after["model_seconds"] - before["model_seconds"]) / wall))
    finally:
        proc.terminate()
        code = proc.wait(60)
    # The same model in calls of the size the server formed at the most clients, in arrival order: what
    # the model does with those batches when nothing else runs (the serving overhead is the rest).
    served_batch = max(1, round(rows[-1][6]))
    same, runs = in_process(served_batch)
    print(f"in-process, calls of {served_batch} sentences (the server's mean batch at {rows[-1][0]} clients): "
          f"{same:.1f} sentences/s, best of {', '.join(f'{r:.1f}' for r in runs)}")
    print()
    print("| clients | requests/s | sentences/s | p50 ms | p99 ms | p99/p50 | mean batch | model busy "
          "| vs all-in-one-call | vs same batches |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, rq, sn, p50, p99, ratio, mean, busy in rows:
        print(f"| {c} | {rq:.1f} | {sn:.1f} | {p50:.1f} | {p99:.1f} | {ratio:.2f} | {mean:.1f} | {busy:.0%} "
              f"| {sn / whole:.0%} | {sn / same:.0%} |")
    print(f"\nin-process references: {whole:.1f} sentences/s with all {len(sentences)} sentences in one call "
          f"(sorted by length into batches of {args.batch_size}); {same:.1f} sentences/s in calls of "
          f"{served_batch} in arrival order.\nmean batch: sentences per model call; model busy: share of the "
          f"wall time a model process was tagging (summed over --workers).")
    print(f"\nserver exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()
