"""Throughput and latency of ``ner-serve`` against the in-process Predictor on the same sentences.

    python benchmarks/bench_serve.py [--model DIR] [--requests 400] [--clients 1,8,32]
                                     [--max-batch N] [--max-wait-ms MS] [--batch-size 64]

Starts the server in a subprocess on loopback, then for each client count sends CoNLL-2003 test sentences
(../shared/datasets/conll2003/test.txt; the shipped sample test set when absent), one sentence per
request as ``{"tokens": [...]}``, from that many threads with keep-alive connections. The in-process
figure is ``Predictor.predict_documents`` (the call the server makes, CRF scores included) over the same
sentences with the same batch size, measured in this process while the server is idle. Target: at 32
clients >= 80% of in-process sentences/s, p99 <= 4x p50. Client threads share the machine with the server,
so on few cores the ratio includes the clients' cost.

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
           "--port", "0", "--batch-size", str(args.batch_size), "--max-texts", "1024"]
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


def load_level(port: int, sentences: list[list[str]], clients: int) -> tuple[float, list[float]]:
    """Send every sentence once from ``clients`` threads; (wall seconds, latencies in seconds)."""
    lock, latencies, errors = threading.Lock(), [], []
    queue = iter(sentences)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    sentence = next(queue, None)
                if sentence is None:
                    return
                body = json.dumps({"tokens": [sentence]}).encode()
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
    ap.add_argument("--requests", type=int, default=400, help="requests (= sentences) per client level")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts (default 1,8,32)")
    ap.add_argument("--max-batch", type=int, help="passed to ner-serve (default: its own)")
    ap.add_argument("--max-wait-ms", type=float, help="passed to ner-serve (default: its own)")
    ap.add_argument("--batch-size", type=int, default=64, help="server --batch-size and the in-process one")
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
    runs = []
    for _ in range(3):  # the best of three: a conservative baseline on a shared machine
        t0 = time.perf_counter()
        predictor.predict_documents(documents)
        runs.append(len(documents) / (time.perf_counter() - t0))
    in_process = max(runs)
    print(f"in-process Predictor.predict_documents: {in_process:.1f} sentences/s, best of "
          f"{', '.join(f'{r:.1f}' for r in runs)} (batch size {args.batch_size}, {torch.get_num_threads()} torch threads)")
    del predictor

    proc, port = start_server(args.model, args)
    rows = []
    try:
        load_level(port, sentences[:32], 4)  # warm-up: first calls allocate
        for clients in levels:
            before = stats(port)
            wall, latencies = load_level(port, sentences, clients)
            after = stats(port)
            batches = after["batches"] - before["batches"]
            rate = len(latencies) / wall
            p50, p99 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3
            rows.append((clients, rate, rate, p50, p99, p99 / p50, in_process, rate / in_process,
                         (after["sentences"] - before["sentences"]) / max(batches, 1),
                         (after["model_seconds"] - before["model_seconds"]) / wall))
    finally:
        proc.terminate()
        code = proc.wait(60)
    print()
    print("| clients | requests/s | sentences/s | p50 ms | p99 ms | p99/p50 | in-process sent/s | server/in-process "
          "| mean batch | model busy |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, rq, sn, p50, p99, ratio, ip, rel, mean, busy in rows:
        print(f"| {c} | {rq:.1f} | {sn:.1f} | {p50:.1f} | {p99:.1f} | {ratio:.2f} | {ip:.1f} | {rel:.0%} | {mean:.1f} "
              f"| {busy:.0%} |")
    print("\nmean batch: sentences per model call; model busy: share of the wall time the server's model thread "
          "was inside predict_documents.")
    print(f"\nserver exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()
