"""Throughput and memory of the whole pipeline against the pure tensor floor of the same network.

Reference tiny architecture: scratch ALBERT (embedding 128, hidden 256, 4 layers, 4 heads,
intermediate 1024, the 30k albert-base-v2 vocabulary) (+) 100-d words -> BiLSTM 256 -> CRF, on CoNLL-2003.

    python benchmarks/bench_pipeline.py [--train-sentences 3200] [--threads N] [--full-rss]

* training sent/s: ``run_epoch`` as train.py runs it (bucketing, collate, forward, backward, AdamW), batch 32;
  floor: the same batches pre-collated, then only forward/backward/step timed.
* prediction sent/s: ``Predictor.predict`` on CoNLL-2003 test (alignment, bucketing, collate, Viterbi, tags
  in the input scheme), batch 64; floor: the same batches pre-collated, only ``tagger.decode`` timed.
* peak RSS: of this process, and with --full-rss of a real ``train.py`` run over the full training set
  (1 epoch, dev scored) in a child process.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ner_toolkit.config import load_config  # noqa: E402
from ner_toolkit.data.batching import bucketed_batches, encode_sentences  # noqa: E402
from ner_toolkit.model.precision import autocast  # noqa: E402
from ner_toolkit.training.trainer import make_optimization, prepare, run_epoch  # noqa: E402

CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"
REFERENCE = [
    "model.encoder.scratch={embedding_size: 128, hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, "
    "intermediate_size: 1024, max_position_embeddings: 512}",
    "model.encoder.tokenizer=builtin:albert-base-v2",
    "model.words.dim=100",
    "model.lstm.hidden_size=256",
    "training.batch_size=32",
    "training.eval_batch_size=64",
    "training.epochs=1",
    "training.progress=false",
]


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def head(path: Path, n: int, out: Path) -> Path:
    """The first n sentences of a CoNLL file."""
    lines, count = [], 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            lines.append(line)
            if not line.strip() and lines[-2:-1] and lines[-2].strip() and not lines[-2].startswith("-DOCSTART-"):
                count += 1
                if count >= n:
                    break
    out.write_text("".join(lines), encoding="utf-8")
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-sentences", type=int, default=3200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--full-rss", action="store_true", help="also train 1 epoch on the full training set (subprocess)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides on top of the reference architecture, e.g. training.precision=bf16")
    args = ap.parse_args()
    if not CONLL.is_dir():
        sys.exit(f"CoNLL-2003 not found at {CONLL}")
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    train_file = head(CONLL / "train.txt", args.train_sentences, tmp / "train.txt")
    config = load_config(None, tuple(REFERENCE + [f"data.train={train_file}", f"data.test={CONLL / 'test.txt'}",
                                                  f"output_dir={tmp / 'run'}"] + args.overrides))
    setup = prepare(config)
    tc = config.training
    tokens = sum(len(x) for x in setup.items)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {tc.precision}; {len(setup.items)} training sentences "
          f"({tokens} tokens), {sum(p.numel() for p in setup.tagger.parameters()) / 1e6:.1f}M parameters", flush=True)

    # Warm-up (allocator, oneDNN primitives) on a slice, then the pipeline epoch.
    run_epoch(setup.items[:256], setup.collator, make_optimization(setup), tc, random.Random(0), setup.device)
    optimization = make_optimization(setup)
    pipeline_train = timed(lambda: run_epoch(setup.items, setup.collator, optimization, tc, random.Random(1),
                                             setup.device))
    batches = [setup.collator(c).to(setup.device)
               for c in bucketed_batches(setup.items, tc.batch_size, True, random.Random(1), batch_tokens=tc.batch_tokens)]
    optimization = make_optimization(setup)

    def floor_train() -> None:
        setup.tagger.train()
        losses = [optimization.backward(b) for b in batches]
        optimization.step()
        float(torch.stack(losses).sum())

    floor_train_s = timed(floor_train)

    test = setup.test
    assert test is not None
    sentences = test.tokens
    setup.predictor.predict(sentences[:256])
    pipeline_pred = timed(lambda: setup.predictor.predict(sentences))
    enc = encode_sentences(setup.predictor.aligner, setup.vocab, sentences)
    pred_batches = [setup.collator(c).to(setup.device) for c in bucketed_batches(enc, tc.eval_batch_size, shuffle=False)]

    def floor_predict() -> None:
        setup.tagger.eval()
        with torch.inference_mode(), autocast(setup.device, tc.precision):
            for b in pred_batches:
                setup.tagger.decode(b).cpu()

    floor_pred_s = timed(floor_predict)
    n_train, n_pred = len(setup.items), len(sentences)
    rows = [
        ("training (batch 32)", n_train / pipeline_train, n_train / floor_train_s),
        ("prediction (batch 64)", n_pred / pipeline_pred, n_pred / floor_pred_s),
    ]
    print(f"\n{'':24}{'pipeline sent/s':>16}{'floor sent/s':>14}{'pipeline/floor':>16}")
    for name, pipe, floor in rows:
        print(f"{name:24}{pipe:16.1f}{floor:14.1f}{100 * pipe / floor:15.1f}%")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")

    if args.full_rss:
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "quickstart.yaml")]
        for item in REFERENCE + [f"data.train={CONLL / 'train.txt'}", f"data.dev={CONLL / 'dev.txt'}", "data.test=null",
                                 f"output_dir={tmp / 'full'}", "training.epochs=1"] + args.overrides:
            cmd += ["--set", item]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"full CoNLL-2003 training run (1 epoch + dev): {time.perf_counter() - t0:.0f} s, "
              f"peak RSS {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")


if __name__ == "__main__":
    main()
