"""The training loop: parameter groups, warmup + linear decay, clipping, dev F1 per epoch,
early stopping, the best model kept in OUTPUT_DIR/model, one metrics.jsonl line per epoch."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch

from ..config import Config, save_config
from ..data.batching import bucketed_batches, encode_sentences
from ..data.schemes import convert
from ..data.vocab import Vocab, load_vectors
from ..errors import UserError, warn
from ..evaluate import evaluate_spans, format_report
from ..model.directory import LabelInfo, save_model, write_metrics
from ..model.encoder import build_hf_encoder
from ..model.tagger import Tagger
from ..predict import Predictor, make_collator, resolve_device, warn_unseen
from .dataset import LabelledFile, build_labels, input_scheme, read_labelled, tag_ids


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def score(predictor: Predictor, data: LabelledFile, labels: LabelInfo) -> dict:
    """Span P/R/F1 of the predictor on a labelled file (gold in the training files' scheme)."""
    pred = predictor.predict(data.tokens)
    return evaluate_spans(data.gold, pred, scheme=labels.output_scheme)


def _short(result: dict) -> dict:
    return {k: round(result["micro"][k], 6) for k in ("precision", "recall", "f1")}


def _check_paths(config: Config) -> None:
    if not config.data.train:
        raise UserError("`data.train` is required: set it in the config or with --set data.train=PATH", "config")
    for key in ("train", "dev", "test"):
        value = getattr(config.data, key)
        if value is not None and not Path(value).is_file():
            raise UserError(f"`data.{key}` file not found; check the path", value)
    if config.model.words.vectors and not Path(config.model.words.vectors).is_file():
        raise UserError("`model.words.vectors` file not found; check the path", config.model.words.vectors)


def train(config: Config) -> dict:
    """Train a tagger as ``config`` says; returns the summary (also written to OUTPUT_DIR/model/metrics.json)."""
    started = time.time()
    _check_paths(config)
    tc = config.training
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    seed_everything(tc.seed)

    train_data = read_labelled(config.data.train, config.data, "data.train")
    dev = read_labelled(config.data.dev, config.data, "data.dev") if config.data.dev else None
    test = read_labelled(config.data.test, config.data, "data.test") if config.data.test else None
    scheme = input_scheme(train_data, config.data)
    labels = build_labels(train_data, scheme, config.data)
    train_tags, repaired = tag_ids(train_data, labels)
    if repaired:
        warn(f"repaired {repaired} sentences with illegal {scheme} sequences the conlleval way", train_data.path)
    for key, data in (("data.dev", dev), ("data.test", test)):
        if data is not None:
            warn_unseen(data.gold, labels, scheme, data.path)

    hf_encoder, tokenizer = build_hf_encoder(config.model.encoder)
    vocab: Optional[Vocab] = None
    vectors = None
    if config.model.fusion != "none":
        w = config.model.words
        vocab = Vocab.build((t for s in train_data.sentences for t in s.tokens), w.min_freq, w.lowercase)
        if w.vectors:
            vectors, found = load_vectors(w.vectors, vocab, w.dim)
            print(f"vectors: {found}/{len(vocab) - 2} vocabulary words found in {w.vectors}", file=sys.stderr)
    tagger = Tagger(config.model, hf_encoder, len(labels.labels), len(vocab) if vocab else 2, labels.constraints(),
                    vectors).to(device)
    aligner, collator = make_collator(tokenizer, hf_encoder, config.model.encoder)
    items = encode_sentences(aligner, vocab, train_data.tokens, train_tags)
    predictor = Predictor(tagger, tokenizer, vocab, labels, config.model.encoder, device, tc.eval_batch_size)

    optimizer = torch.optim.AdamW(tagger.param_groups(tc.lr, tc.weight_decay))
    steps_per_epoch = math.ceil(len(items) / tc.batch_size)
    total = steps_per_epoch * tc.epochs
    scheduler = linear_schedule(optimizer, int(tc.warmup * total), total)

    out_dir = Path(config.output_dir)
    model_dir = out_dir / "model"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.write_text("", encoding="utf-8")
    rng = random.Random(tc.seed)
    best_f1, best_epoch, bad_epochs = -1.0, 0, 0
    progress = tc.progress and sys.stderr.isatty()
    from tqdm import tqdm

    for epoch in range(1, tc.epochs + 1):
        tagger.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        bar = tqdm(total=len(items), desc=f"epoch {epoch}/{tc.epochs}", unit="sent", disable=not progress, leave=False)
        for chunk in bucketed_batches(items, tc.batch_size, shuffle=True, rng=rng):
            batch = collator(chunk).to(device)
            loss = tagger.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(tagger.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(chunk)
            seen += len(chunk)
            bar.update(len(chunk))
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        bar.close()
        train_seconds = time.time() - t0
        dev_result = score(predictor, dev, labels) if dev else None
        f1 = dev_result["micro"]["f1"] if dev_result else float(epoch)  # no dev: keep the last epoch
        improved = f1 > best_f1
        record = {"epoch": epoch, "loss": round(loss_sum / max(seen, 1), 6),
                  "dev": _short(dev_result) if dev_result else None,
                  "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                  "seconds": round(time.time() - t0, 3), "sentences_per_second": round(seen / max(train_seconds, 1e-9), 1),
                  "best": improved}
        with metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        dev_text = f" dev F1 {100 * dev_result['micro']['f1']:.2f}" if dev_result else ""
        print(f"epoch {epoch}: loss {record['loss']:.4f}{dev_text} ({record['sentences_per_second']:.0f} sent/s)",
              file=sys.stderr)
        if improved:
            best_f1, best_epoch, bad_epochs = f1, epoch, 0
            save_model(model_dir, tagger, config, labels, tokenizer, vocab,
                       {"epoch": epoch, "dev": dev_result})
        else:
            bad_epochs += 1
            if tc.patience and bad_epochs >= tc.patience:
                print(f"early stop: no better dev F1 for {bad_epochs} epochs", file=sys.stderr)
                break

    summary: dict[str, Any] = {"best_epoch": best_epoch, "dev_f1": best_f1 if dev else None, "test_f1": None,
                               "model_dir": str(model_dir), "seconds": None}
    final = Predictor.load(model_dir, str(device), tc.eval_batch_size)  # score what was saved, exactly
    metrics: dict[str, Any] = {"epoch": best_epoch, "dev": None, "test": None}
    for key, data in (("dev", dev), ("test", test)):
        if data is not None:
            result = score(final, data, labels)
            metrics[key] = result
            print(f"{key} ({data.path}):\n{format_report(result)}", file=sys.stderr)
    if test is not None:
        summary["test_f1"] = metrics["test"]["micro"]["f1"]
    write_metrics(model_dir, metrics)
    summary["seconds"] = round(time.time() - started, 1)
    parts = [f"best epoch {best_epoch}"]
    if dev:
        parts.append(f"dev F1 {100 * best_f1:.2f}")
    if test:
        parts.append(f"test F1 {100 * summary['test_f1']:.2f}")
    print(f"done: {', '.join(parts)}; model in {model_dir} ({summary['seconds']:.0f} s)")
    return summary
