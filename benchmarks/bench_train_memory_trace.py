"""Where an epoch's memory grows: RSS batch by batch, next to the largest batch shape so far.

    python benchmarks/bench_train_memory_trace.py [--sentences 14041] [--every 50] [--set KEY=VALUE]...

One process: the reference architecture of ``bench_train_memory.py`` (bf16, batch 32, 1 thread) on the
first N sentences of CoNLL-2003 train (repeated past its 14,041), one epoch, then the dev scoring. Prints
the resident and peak RSS (VmRSS, VmHWM) after the first batches and every ``--every`` batches, with the
largest padded word grid (B x T) and subword grid (W x S) seen so far: a peak that rises when a new
largest shape arrives is the batch's own activations, one that rises between them is the allocator.
``--set training.micro_batch_subwords=2048`` shows the split batches; any other training key works too.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import bench_pipeline as bp  # noqa: E402  (sets the environment and sys.path)

import torch  # noqa: E402

from bench_predict_memory import repeat_to, sentences_of  # noqa: E402
from bench_train_memory import REFERENCE  # noqa: E402
from ner_toolkit.config import load_config  # noqa: E402
from ner_toolkit.training.trainer import make_optimization, prepare, run_epoch, score  # noqa: E402


def rss() -> str:
    status = Path("/proc/self/status").read_text().splitlines()
    mb = {k: int(next(v for v in status if v.startswith(k + ":")).split()[1]) // 1024 for k in ("VmRSS", "VmHWM")}
    return f"RSS {mb['VmRSS']:5d} MB, peak {mb['VmHWM']:5d} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=14041)
    ap.add_argument("--every", type=int, default=50, help="print every N batches (and after batches 1-5)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if not (bp.CONLL / "train.txt").is_file():
        sys.exit(f"needs {bp.CONLL}/train.txt and dev.txt")
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    train = repeat_to(sentences_of(bp.CONLL / "train.txt"), args.sentences, tmp / "train.txt")
    config = load_config(bp.ROOT / "configs" / "quickstart.yaml", tuple(REFERENCE + [
        f"data.train={train}", f"data.dev={bp.CONLL / 'dev.txt'}", "training.precision=bf16",
        f"output_dir={tmp / 'run'}", "training.num_threads=1"] + args.overrides))
    setup = prepare(config)
    print(f"{args.sentences} sentences, vocabulary {len(setup.vocab) if setup.vocab else 0}; prepared: {rss()}",
          flush=True)
    optimization = make_optimization(setup)
    seen = {"calls": 0, "words": 0, "subwords": 0}
    backward = optimization.backward

    def traced(batch, share=1.0, last=True):
        out = backward(batch, share, last)
        seen["calls"] += 1
        if batch is not None:
            seen["words"] = max(seen["words"], batch.word_ids.numel())
            seen["subwords"] = max(seen["subwords"], batch.input_ids.numel())
        if seen["calls"] <= 5 or seen["calls"] % args.every == 0:
            print(f"forward {seen['calls']:5d}: {rss()}; largest so far {seen['words']} words, "
                  f"{seen['subwords']} subwords", flush=True)
        return out

    optimization.backward = traced
    run_epoch(setup.items, setup.collator, optimization, config.training, random.Random(1), setup.device)
    print(f"epoch done: {rss()}", flush=True)
    score(setup.predictor, setup.dev, setup.labels)
    print(f"dev scored: {rss()}", flush=True)


if __name__ == "__main__":
    main()
