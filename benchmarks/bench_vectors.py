"""Cost of keeping a whole vectors file (``model.words.vectors_words: all``): load time, peak RSS, the rows kept
and what they add to the model directory, by ``max_vectors``.

    python benchmarks/bench_vectors.py [--vectors FILE] [--dim 300] [--sizes 100000,200000,all]

Without ``--vectors`` a GloVe-shaped stand-in of 400,000 words x ``--dim`` (the words of GloVe 6B from
../shared when it is there, random values) is written once to runs/bench_vectors/ (gzip): the shape of
glove.6B.300d, which is not shipped here. The training vocabulary is CoNLL-2003 train's (or the sample's).
Each size loads in its own process, so each peak RSS is its own; the baseline row is the same process
without loading vectors (torch, the vocabulary).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TRAIN = SHARED / "datasets" / "conll2003" / "train.txt"
GLOVE = SHARED / "vectors" / "glove.6B.50d.txt.gz"


def stand_in(dim: int, out: Path) -> Path:
    """A 400,000-word text vectors file of ``dim`` dimensions (random values, 6 significant digits)."""
    import numpy as np

    path = out / f"standin.400k.{dim}d.txt.gz"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    if GLOVE.exists():
        with gzip.open(GLOVE, "rt", encoding="utf-8") as fh:
            words = [line.split(" ", 1)[0] for line in fh]
    else:
        words = [f"w{i}" for i in range(400_000)]
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
        for start in range(0, len(words), 10_000):
            block = rng.normal(0, 0.4, size=(min(10_000, len(words) - start), dim))
            fh.writelines(w + " " + " ".join(f"{v:.6g}" for v in row) + "\n"
                          for w, row in zip(words[start:start + 10_000], block))
    tmp.rename(path)
    return path


def one(vectors: str, size: str) -> dict:
    """Measured in this process: load ``vectors`` for the training vocabulary (``size`` = max_vectors)."""
    sys.path.insert(0, str(ROOT))
    from ner_toolkit.data.conll import read_sentences
    from ner_toolkit.data.vectors import load_vectors
    from ner_toolkit.data.vocab import Vocab

    train = TRAIN if TRAIN.exists() else ROOT / "data" / "sample" / "train.txt"
    vocab = Vocab.build(t for s in read_sentences(train) for t in s.tokens if t != "-DOCSTART-")
    if size == "none":
        return {"size": "no vectors", "seconds": 0.0, "rows": 0, "extra_mb": 0.0,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    started = time.perf_counter()
    loaded = load_vectors(vectors, vocab, extend=True, max_words=None if size == "all" else int(size))
    seconds = time.perf_counter() - started
    return {"size": size, "seconds": seconds, "rows": len(loaded.words), "extra_mb": loaded.extra_bytes / 2**20,
            "dim": loaded.matrix.shape[1], "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", help="a GloVe / word2vec text file (default: a 400,000 x --dim stand-in)")
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--sizes", default="100000,200000,all", help="max_vectors values, comma-separated")
    parser.add_argument("--one", nargs=2, metavar=("FILE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    vectors = args.vectors or str(stand_in(args.dim, ROOT / "runs" / "bench_vectors"))
    print(f"vectors: {vectors}\n")
    print("| max_vectors | load (s) | rows kept beyond the training vocabulary | float16 rows (MiB, in memory and "
          "in model.safetensors) | peak RSS (MB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for size in ["none", *args.sizes.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--one", vectors, size], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            sys.exit(proc.stderr)
        r = json.loads(proc.stdout.splitlines()[-1])
        print(f"| {r['size']} | {r['seconds']:.1f} | {r['rows']:,} | {r['extra_mb']:.1f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
