"""Prediction speed and accuracy by precision, in one run: fp32, bf16 (autocast), int8 (PyTorch dynamic
quantisation), ONNX Runtime fp32 / int8 (when ``ner_toolkit.export`` is there).

    python benchmarks/bench_predict.py [--model DIR] [--train-sentences 14041] [--epochs 1]
        [--batch-size 64] [--threads N] [--repeats 3] [--engine x86] [--profile]

Without ``--model`` the reference tiny architecture (the one of bench_pipeline.py: scratch ALBERT embedding
128, hidden 256, 4 layers, 4 heads, intermediate 1024, 30k albert-base-v2 vocabulary; (+) 100-d words;
BiLSTM 256; CRF) is first trained with ``train.py``'s code and quickstart.yaml's learning rates on the first
``--train-sentences`` sentences of CoNLL-2003 train for ``--epochs`` epochs (default: the whole training
set, one epoch, ~75 s on 2 cores), so that test F1 means something. Every row then loads the same saved
model directory and tags CoNLL-2003 test with ``.predict`` (alignment, bucketing, collation, Viterbi, tags
in the input scheme: the whole pipeline), the same batch size for all; a warm-up call each, then the best
of ``--repeats`` timed passes, taken in turn over the rows. Ratios and ΔF1 are against the fp32 row of the
same run. ``--profile`` adds where the time goes (encoder, fusion, BiLSTM, emissions, CRF, data handling)
on pre-collated batches. The whole run takes about 6 minutes on 2 cores.

Without ../shared/datasets/conll2003 the shipped data/sample files stand in (noted in the output).
"""
from __future__ import annotations

import argparse
import copy
import inspect
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bench_pipeline import REFERENCE, head  # noqa: E402
from ner_toolkit.data.batching import bucketed_batches, encode_sentences  # noqa: E402
from ner_toolkit.data.conll import read_sentences  # noqa: E402
from ner_toolkit.evaluate import evaluate_spans  # noqa: E402
from ner_toolkit.model.precision import autocast  # noqa: E402
from ner_toolkit.model.quantize import quantize_int8  # noqa: E402
from ner_toolkit.predict import Predictor  # noqa: E402

CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"
SAMPLE = ROOT / "data" / "sample"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_note() -> str:
    flags = cpu_flags()
    has = [name for flag, name in (("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX BF16"),
                                   ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX INT8"))
           if flag in flags]
    bf16 = ("native bf16 matmuls" if {"avx512_bf16", "amx_bf16"} & flags
            else "NO native bf16 (bf16 is emulated, may be slower)")
    return f"CPU has {', '.join(has) or 'none of AVX-512 BF16 / VNNI / AMX'}: {bf16}"


def train_reference(args: argparse.Namespace, train_file: Path, out: Path) -> Path:
    from ner_toolkit.config import load_config
    from ner_toolkit.training.trainer import train

    overrides = REFERENCE + [f"data.train={train_file}", "data.dev=null", "data.test=null", f"output_dir={out}",
                             f"training.epochs={args.epochs}", f"training.eval_batch_size={args.batch_size}"]
    t0 = time.perf_counter()
    # quickstart.yaml's learning rates (as README's one-epoch reference run), the reference architecture.
    train(load_config(str(ROOT / "configs" / "quickstart.yaml"), tuple(overrides)))
    print(f"trained the reference architecture on {args.train_sentences_used} sentences of {train_file.name}, "
          f"{args.epochs} epoch(s): {time.perf_counter() - t0:.0f} s", flush=True)
    return out / "model"


# --- the rows: each factory returns an object with Predictor's .predict(sentences, documents=...), or a
# string saying why the row cannot run here.
Factory = Callable[[Path, argparse.Namespace], Union[Any, str]]


def load_fp32(model: Path, args: argparse.Namespace) -> Any:
    return Predictor.load(model, batch_size=args.batch_size)


def load_bf16(model: Path, args: argparse.Namespace) -> Any:
    return Predictor.load(model, batch_size=args.batch_size, precision="bf16")


def load_int8(model: Path, args: argparse.Namespace) -> Any:
    if "quantize" in inspect.signature(Predictor.load).parameters:  # once Predictor.load has the hook
        torch.backends.quantized.engine = args.engine
        return Predictor.load(model, batch_size=args.batch_size, quantize="int8")
    predictor = Predictor.load(model, batch_size=args.batch_size)
    quantized = copy.copy(predictor)
    quantized.tagger = quantize_int8(predictor.tagger, engine=args.engine)
    return quantized


_EXPORTS: dict[Path, Path] = {}


def load_onnx(graph: str) -> Factory:
    """One ``ner-export --quantize int8`` of the model (it holds the fp32 graph too) into a temporary
    directory, then its runtime (``OnnxPredictor``, the Predictor API) on the ``graph`` asked for."""
    def load(model: Path, args: argparse.Namespace) -> Any:
        try:
            from ner_toolkit.export import OnnxPredictor, export_model
        except ImportError as exc:
            return f"n/a (ner_toolkit.export missing: {exc})"
        try:
            if model not in _EXPORTS:
                _EXPORTS[model] = Path(tempfile.mkdtemp()) / "onnx"
                export_model(model, _EXPORTS[model], quantize="int8")
            return OnnxPredictor.load(_EXPORTS[model], batch_size=args.batch_size, graph=graph)
        except Exception as exc:  # noqa: BLE001  # the other rows still get measured
            return f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return load


ROWS: list[tuple[str, Factory]] = [
    ("fp32", load_fp32),
    ("bf16 (autocast)", load_bf16),
    ("int8 (PyTorch dynamic)", load_int8),
    ("ONNX Runtime fp32", load_onnx("fp32")),
    ("ONNX Runtime int8", load_onnx("int8")),
]


def measure(predictors: dict[str, Any], sentences: list[list[str]], documents: list[int],
            repeats: int) -> dict[str, tuple[float, list]]:
    """Per row: (best seconds of ``repeats`` full passes, the tags of its last pass), after a warm-up call each.
    The passes go round the rows in turn, so a change in the machine's load touches every row alike."""
    for predictor in predictors.values():
        predictor.predict(sentences[:256], documents[:256])
    best = {name: (float("inf"), []) for name in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            tags = predictor.predict(sentences, documents)
            best[name] = (min(best[name][0], time.perf_counter() - t0), tags)
    return best


def profile(predictor: Any, sentences: list[list[str]], name: str) -> dict[str, float]:
    """Seconds per stage over the whole test set, on batches collated beforehand (plus the data handling)."""
    tagger = predictor.tagger
    tagger.eval()
    t0 = time.perf_counter()
    enc = encode_sentences(predictor.aligner, predictor.vocab, sentences, chars=predictor.chars)
    batches = [predictor.collator(c).to(predictor.device)
               for c in bucketed_batches(enc, predictor.batch_size, shuffle=False)]
    data = time.perf_counter() - t0
    stages = dict.fromkeys(("encoder", "fusion", "bilstm", "emissions", "crf"), 0.0)

    def run() -> None:
        with torch.inference_mode(), autocast(predictor.device, predictor.precision):
            for b in batches:
                t = time.perf_counter()
                x = tagger.encoder(b)
                t1 = time.perf_counter()
                x = tagger.fusion(x, b.word_ids, b.char_ids)
                t2 = time.perf_counter()
                if tagger.lstm is not None:
                    x = tagger.lstm(x, b.lengths)
                t3 = time.perf_counter()
                e = tagger.emissions(x)
                t4 = time.perf_counter()
                tagger.crf.decode(e, b.mask)[0].tolist()
                t5 = time.perf_counter()
                for key, dt in zip(stages, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    stages[key] += dt

    run()  # warm-up
    for key in stages:
        stages[key] = 0.0
    run()
    stages["data (align+collate)"] = data
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a trained model directory (default: train the reference)")
    ap.add_argument("--train-sentences", type=int, default=14041,
                    help="how many CoNLL-2003 train sentences to train on (default: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the machine's cores)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best is reported")
    ap.add_argument("--engine", default="x86", help="torch.backends.quantized.engine for the int8 row")
    ap.add_argument("--profile", action="store_true", help="also time each stage of fp32, bf16 and int8")
    args = ap.parse_args()
    print("$ python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]), flush=True)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.set_flush_denormal(True)
    if CONLL.is_dir():
        train_src, test_file, note = CONLL / "train.txt", CONLL / "test.txt", ""
    else:
        train_src, test_file = SAMPLE / "train.txt", SAMPLE / "test.txt"
        note = f"note: {CONLL} not found; the shipped data/sample files stand in (numbers are not CoNLL-2003's)"
        print(note, flush=True)
    tmp = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        train_file = head(train_src, args.train_sentences, tmp / "train.txt")
        args.train_sentences_used = len(read_sentences(train_file))
        model = train_reference(args, train_file, tmp / "run")

    test = read_sentences(test_file)
    sentences = [s.tokens for s in test]
    gold = [s.labels for s in test]
    # Document numbers from the -DOCSTART- lines, as predict.py reads them (only models with context use them).
    from ner_toolkit.data.conll import document_ids, read_conll
    documents = document_ids(list(read_conll(test_file)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quantized engine {args.engine}; "
          f"{cpu_note()}", flush=True)
    print(f"model: {model}; test: {test_file} ({len(sentences)} sentences, {sum(map(len, sentences))} tokens); "
          f"batch {args.batch_size}, best of {args.repeats} passes after a warm-up", flush=True)

    loaded: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, factory in ROWS:
        predictor = factory(model, args)
        if isinstance(predictor, str):
            skipped[name] = predictor
        else:
            loaded[name] = predictor
    timings = measure(loaded, sentences, documents, args.repeats)
    results: list[tuple[str, Optional[float], Optional[float], str]] = []  # name, sent/s, F1, why not
    for name, _ in ROWS:
        if name in skipped:
            results.append((name, None, None, skipped[name]))
            continue
        seconds, tags = timings[name]
        assert [len(t) for t in tags] == [len(s) for s in sentences], f"{name}: not one tag per token"
        f1 = evaluate_spans(gold, tags, scheme=loaded[name].labels.output_scheme)["micro"]["f1"]
        results.append((name, len(sentences) / seconds, f1, ""))

    base_rate, base_f1 = results[0][1], results[0][2]
    print("\n| precision | sentences/s | vs fp32 | test F1 | ΔF1 vs fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, f1, why in results:
        if rate is None:
            print(f"| {name} | {why} | | | |")
            continue
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x | {100 * f1:.2f} | {100 * (f1 - base_f1):+.2f} |")
    scheme = next(iter(loaded.values())).labels.output_scheme
    print(f"\nF1: span micro F1 (conlleval, {scheme}) in %, ΔF1 in points. {note}".rstrip())

    if args.profile:
        names = [n for n in ("fp32", "bf16 (autocast)", "int8 (PyTorch dynamic)") if n in loaded]
        stages = {n: profile(loaded[n], sentences, n) for n in names}
        print("\nwhere the time goes (seconds over the test set, pre-collated batches):\n")
        print("| stage | " + " | ".join(names) + " |")
        print("| --- |" + " ---: |" * len(names))
        for key in stages[names[0]]:
            print(f"| {key} | " + " | ".join(f"{stages[n][key]:.2f}" for n in names) + " |")
        print("| total | " + " | ".join(f"{sum(stages[n].values()):.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
