"""Does capitalisation reach the tagger? Test F1 of each model on the test file as it is and with every token
lower-cased, and the share of tags that lower-casing changes.

    python benchmarks/bench_case_cue.py MODEL_DIR [MODEL_DIR ...] [--test FILE] [--threads N]

An uncased encoder (all-MiniLM-L6-v2, whose tokenizer lower-cases) cannot tell "Bush" from "bush": a model
that reads only it tags both inputs alike (0 % of tags change). Cased word embeddings and the character CNN
see the case; the F1 lost on lower-cased input is what the model drew from it. Prints one markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from ner_toolkit.data.conll import read_sentences  # noqa: E402
from ner_toolkit.evaluate import evaluate_spans  # noqa: E402
from ner_toolkit.model.directory import resolve_model_dir  # noqa: E402
from ner_toolkit.predict import Predictor  # noqa: E402

TEST = ROOT.parent / "shared" / "datasets" / "conll2003" / "test.txt"


def measure(model: Path, sentences: list[list[str]], gold: list[list[str]]) -> dict:
    """F1 (conlleval, %) as is and lower-cased, and the share of tags (%) that lower-casing changes."""
    predictor = Predictor.load(model)
    cfg = yaml.safe_load((resolve_model_dir(model) / "config.yaml").read_text(encoding="utf-8"))["model"]
    as_is = predictor.predict(sentences)
    lowered = predictor.predict([[t.lower() for t in s] for s in sentences])
    changed = sum(a != b for s, t in zip(as_is, lowered) for a, b in zip(s, t))
    total = sum(map(len, sentences))
    return {"model": str(model), "config": cfg,
            "f1": 100 * evaluate_spans(gold, as_is)["micro"]["f1"],
            "f1_lower": 100 * evaluate_spans(gold, lowered)["micro"]["f1"],
            "changed": 100 * changed / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model directories (or training output dirs)")
    parser.add_argument("--test", type=Path, default=TEST, help=f"CoNLL test file (default {TEST})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    read = [s for s in read_sentences(args.test) if s.tokens and s.tokens[0] != "-DOCSTART-"]
    sentences, gold = [s.tokens for s in read], [s.labels or [] for s in read]
    print(f"{args.test}: {len(sentences)} sentences\n")
    print("| model | what carries case | test F1 | test F1, input lower-cased | tags changed by lower-casing |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model in args.models:
        row = measure(model, sentences, gold)
        cfg = row["config"]
        cues = []
        if cfg["fusion"] != "none":
            if not cfg["words"]["lowercase"]:
                cues.append("cased words")
            if cfg["chars"]["enabled"]:
                cues.append("characters")
        print(f"| {model} | {', '.join(cues) or 'nothing'} | {row['f1']:.2f} | {row['f1_lower']:.2f} | "
              f"{row['changed']:.2f} % |")


if __name__ == "__main__":
    main()
