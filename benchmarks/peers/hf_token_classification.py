"""The HuggingFace peer of bench_peers.py: ``AutoModelForTokenClassification``, the run_ner recipe, as a plain
loop. Runs in its own virtualenv (torch + transformers only), started by bench_peers.py:

    python hf_token_classification.py train --encoder DIR --data DIR --out DIR --epochs 3 --seed 42 --threads 2
    python hf_token_classification.py predict --model DIR/model --input test.txt --output test.pred.conll \\
        --stats predict_stats.json

Recipe (transformers' examples/pytorch/token-classification/run_ner.py with Trainer defaults, plus 10 % warmup):
a linear softmax head on the encoder's last layer (dropout = the encoder's hidden dropout), words tokenised with
``is_split_into_words=True``, the label on each word's first subword and -100 on its other subwords and the
special tokens (``label_all_tokens=False``); cross-entropy; ``torch.optim.AdamW`` (lr 5e-5, betas 0.9/0.999,
eps 1e-8, weight decay 0: Trainer's defaults), linear decay to 0 after ceil(10 % of the steps) of linear warmup,
gradient norm clipped to 1.0, batch 32 shuffled each epoch by a generator seeded with ``--seed``
(``transformers.set_seed`` seeds everything else), dynamic padding (``DataCollatorForTokenClassification``).
Inputs are truncated at the encoder's 512 positions, as run_ner does (CoNLL-2003 never gets near that; a word
past it, or a word the tokenizer maps to no subword, is tagged O and counted in the stats). The model kept is
the last epoch's. Prediction: each word's tag is the argmax at its first subword (tags as predicted, no
repair of ``O I-X``), sentences sorted by length into batches.

``train`` writes OUT/model (save_pretrained), OUT/dev.pred.conll (the final model on the dev set) and
OUT/train_stats.json (``train_seconds``: the batch loops of all epochs, nothing else). ``predict`` writes the
``token gold pred`` file and a stats JSON with ``load_seconds`` (tokenizer + model) and ``tag_seconds`` (token
lists in memory to tags in memory).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_io import (  # noqa: E402
    Sentence, forbid_network, read_conll, set_threads, write_json, write_predict_stats, write_predictions)

MAX_LENGTH = 512


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def encode(tokenizer: Any, sentences: Sequence[Sentence], label2id: dict[str, int]) -> list[dict[str, list[int]]]:
    """run_ner's tokenize_and_align_labels with label_all_tokens=False."""
    encoded = tokenizer([tokens for tokens, _ in sentences], is_split_into_words=True, truncation=True,
                        max_length=MAX_LENGTH)
    features = []
    for i, (_, tags) in enumerate(sentences):
        labels, previous = [], None
        for word in encoded.word_ids(i):
            labels.append(-100 if word is None or word == previous else label2id[tags[word]])
            previous = word
        feature = {key: encoded[key][i] for key in encoded.keys()}
        feature["labels"] = labels
        features.append(feature)
    return features


def tag(model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], batch_size: int) -> tuple[list[list[str]], int]:
    """Each word's argmax tag at its first subword; returns the tags and how many words got no subword
    (truncated or mapped to nothing: tagged O)."""
    import torch

    id2label = model.config.id2label
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list[list[str]] = [[] for _ in sentences]
    missing = 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [list(sentences[i]) for i in order[start:start + batch_size]]
            encoded = tokenizer(batch, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH,
                                padding=True, return_tensors="pt")
            best = model(**encoded).logits.argmax(-1).tolist()
            for row, i in enumerate(order[start:start + batch_size]):
                tags = ["O"] * len(sentences[i])
                seen = set()
                for position, word in enumerate(encoded.word_ids(row)):
                    if word is not None and word not in seen:
                        seen.add(word)
                        tags[word] = id2label[best[row][position]]
                missing += len(sentences[i]) - len(seen)
                out[i] = tags
    return out, missing


def train(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.data import DataLoader
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              get_linear_schedule_with_warmup, set_seed)

    set_threads(args.threads)
    set_seed(args.seed)
    train_set, dev_set = read_conll(args.data / "train.txt"), read_conll(args.data / "dev.txt")
    labels = sorted({t for _, tags in train_set for t in tags}, key=lambda t: (t != "O", t))
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(args.encoder))
    model = AutoModelForTokenClassification.from_pretrained(
        str(args.encoder), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    features = encode(tokenizer, train_set, label2id)
    generator = torch.Generator()
    generator.manual_seed(args.seed)
    loader = DataLoader(features, batch_size=args.batch_size, shuffle=True, generator=generator,
                        collate_fn=DataCollatorForTokenClassification(tokenizer))
    steps = len(loader) * args.epochs
    warmup = math.ceil(args.warmup * steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    seconds, losses = 0.0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, started = 0.0, time.perf_counter()
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item()
        elapsed = time.perf_counter() - started
        seconds += elapsed
        losses.append(round(total / len(loader), 5))
        print(f"epoch {epoch}: loss {losses[-1]:.4f} ({len(train_set) / elapsed:.1f} sentences/s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out / "model"))
    tokenizer.save_pretrained(str(args.out / "model"))
    dev_tags, missing = tag(model, tokenizer, [tokens for tokens, _ in dev_set], 64)
    write_predictions(args.out / "dev.pred.conll", dev_set, dev_tags)
    write_json(args.out / "train_stats.json", {
        "train_seconds": seconds, "epochs": args.epochs, "sentences": len(train_set), "steps": steps,
        "warmup_steps": warmup, "epoch_losses": losses, "dev_words_without_subword": missing,
        "threads": torch.get_num_threads(), "versions": versions(),
        "how": "perf_counter around each epoch's batch loop (forward, backward, clip, step), summed",
        "recipe": {"head": "AutoModelForTokenClassification (linear softmax)", "labels": "first subword, -100 else",
                   "optimizer": "torch.optim.AdamW", "lr": args.lr, "weight_decay": 0.0, "max_grad_norm": 1.0,
                   "schedule": f"linear, {warmup} warmup steps of {steps}", "batch_size": args.batch_size,
                   "epochs": args.epochs, "seed": args.seed, "model_kept": "last epoch", "precision": "fp32"}})


def predict(args: argparse.Namespace) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    set_threads(args.threads)
    sentences = read_conll(args.input)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForTokenClassification.from_pretrained(str(args.model))
    model.eval()
    loaded = time.perf_counter()
    tags, missing = tag(model, tokenizer, [tokens for tokens, _ in sentences], args.batch_size)
    tagged = time.perf_counter()
    write_predictions(args.output, sentences, tags)
    write_predict_stats(args.stats, started, loaded, tagged, len(sentences),
                        f"perf_counter from token lists in memory to tags in memory, batches of {args.batch_size} "
                        f"length-sorted sentences, fp32; tokenizer and model load excluded",
                        versions=versions(), notes={"words_without_subword": missing})


def main() -> None:
    forbid_network()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--encoder", type=Path, required=True)
    t.add_argument("--data", type=Path, required=True, help="folder with train.txt and dev.txt (token tag)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    p = sub.add_parser("predict")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    train(args) if args.command == "train" else predict(args)


if __name__ == "__main__":
    main()
