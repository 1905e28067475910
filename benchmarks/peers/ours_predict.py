"""ner_toolkit timed the way the peers' helpers time themselves, for bench_peers.py: token lists in memory to
tags in memory with ``Predictor.predict`` (bf16 autocast, batches of ``--batch-size``), model load excluded.
Runs in the project's virtualenv:

    python ours_predict.py --model RUN_DIR --input test.txt --threads 2 --batch-size 64 --stats stats.json

``--input`` is the peers' ``token tag`` file (the same sentences ours reads in IOB1); the tags are not
written: the benchmark scores ours from ``predict.py``'s output, which is measured too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from peer_io import forbid_network, read_conll, set_threads, write_predict_stats  # noqa: E402


def main() -> None:
    forbid_network()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--quantize", default=None, help="int8: dynamic int8 weights (with --precision fp32)")
    ap.add_argument("--stats", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads(args.threads)
    from ner_toolkit.predict import Predictor

    sentences = [tokens for tokens, _ in read_conll(args.input)]
    started = time.perf_counter()
    predictor = Predictor.load(args.model, batch_size=args.batch_size, precision=args.precision,
                               quantize=args.quantize)
    loaded = time.perf_counter()
    tags = predictor.predict(sentences)
    tagged = time.perf_counter()
    assert [len(t) for t in tags] == [len(s) for s in sentences], "token counts in != out"
    write_predict_stats(args.stats, started, loaded, tagged, len(sentences),
                        f"perf_counter from token lists in memory to tags in memory (Predictor.predict, "
                        f"{args.precision}{', int8 weights' if args.quantize else ''}), batches of "
                        f"{args.batch_size}; model load excluded")

if __name__ == "__main__":
    main()
