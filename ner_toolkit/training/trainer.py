"""The training loop: parameter groups, warmup + linear decay, clipping, dev F1 per epoch,
early stopping, the best model kept in OUTPUT_DIR/model, one metrics.jsonl line per epoch."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import Config, TrainingConfig, save_config
from ..data.batching import Collator, Encoded, bucketed_batches, encode_sentences
from ..data.vocab import Vocab, load_vectors
from ..errors import UserError, warn
from ..evaluate import evaluate_spans, format_report
from ..model.directory import WEIGHTS, LabelInfo, save_model, write_metrics
from ..model.encoder import build_hf_encoder
from ..model.precision import check_precision
from ..model.tagger import Tagger
from ..predict import Predictor, make_collator, resolve_device, warn_unseen
from .checkpoint import RunState, Checkpointer
from .optimization import Optimization
from .reporting import TensorBoardLog, plot_curves, seed_summary
from .dataset import LabelledFile, build_labels, check_scheme, input_scheme, read_labelled, tag_ids


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def run_epoch(items: list[Encoded], collator: Collator, optimization: Optimization, tc: TrainingConfig,
              rng: random.Random, device: torch.device, bar: Any = None, position: Optional[RunState] = None,
              on_step: Optional[Callable[[], None]] = None) -> float:
    """One pass over ``items`` in shuffled length buckets; returns the mean loss per sentence.

    With ``position`` (resume), the first ``position.batches_done`` batches of the epoch's order are
    skipped and the loss already summed is carried on; ``on_step`` runs after every optimizer step,
    with ``position`` up to date (it writes checkpoints).
    """
    optimization.tagger.train()
    position = position or RunState()
    total = position.loss_sum if isinstance(position.loss_sum, torch.Tensor) else torch.tensor(position.loss_sum,
                                                                                              dtype=torch.float64)
    total = total.to(device)
    batches = bucketed_batches(items, tc.batch_size, shuffle=True, rng=rng, batch_tokens=tc.batch_tokens)
    for index, chunk in enumerate(batches):
        if index < position.batches_done:
            continue
        loss = optimization.backward(collator(chunk).to(device))
        total = total + loss.double() * len(chunk)  # float64 on the device: no host sync per batch
        if bar is not None:
            bar.update(len(chunk))
        if optimization.pending == 0:
            position.batches_done, position.loss_sum = index + 1, total
            if on_step is not None:
                on_step()
    optimization.step()  # the last, partial accumulation
    return float(total) / max(1, len(items))


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


@dataclass
class Setup:
    """Everything a training run works with, built from the config (shared with the benchmarks)."""

    config: Config
    device: torch.device
    labels: LabelInfo
    train: LabelledFile
    dev: Optional[LabelledFile]
    test: Optional[LabelledFile]
    tagger: Tagger
    tokenizer: Any
    vocab: Optional[Vocab]
    collator: Collator
    items: list[Encoded]
    predictor: Predictor


def prepare(config: Config) -> Setup:
    """Read and check the data, build labels, vocabulary, encoder and tagger, encode the training set."""
    _check_paths(config)
    tc = config.training
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device, "training.device")
    check_precision(tc.precision, device)
    if tc.accumulate < 1 or tc.batch_size < 1 or (tc.batch_tokens is not None and tc.batch_tokens < 1):
        raise UserError("training.batch_size, training.batch_tokens and training.accumulate must be at least 1", "config")
    seed_everything(tc.seed)
    # Adam moments of rarely seen embedding rows decay into denormal floats, which are 10-100x slower
    # on x86 CPUs; flushing them to zero changes nothing measurable and keeps every step fast.
    torch.set_flush_denormal(True)

    train_data = read_labelled(config.data.train, config.data, "data.train")
    dev = read_labelled(config.data.dev, config.data, "data.dev") if config.data.dev else None
    test = read_labelled(config.data.test, config.data, "data.test") if config.data.test else None
    scheme = input_scheme(train_data, config.data)
    for data in (train_data, dev, test):
        if data is not None:
            check_scheme(data, scheme)
    labels = build_labels(train_data, scheme, config.data)
    train_tags, repaired = tag_ids(train_data, labels)
    if repaired:
        warn(f"repaired {repaired} sentences with illegal {scheme} sequences the conlleval way", train_data.path)
    for data in (dev, test):
        if data is not None:
            warn_unseen(data.gold, labels, scheme, data.path)

    hf_encoder, tokenizer = build_hf_encoder(config.model.encoder)
    vocab: Optional[Vocab] = None
    vectors = None
    if config.model.fusion != "none":
        w = config.model.words
        vocab = Vocab.build((t for s in train_data.tokens for t in s), w.min_freq, w.lowercase)
        if w.vectors:
            vectors, found = load_vectors(w.vectors, vocab, w.dim)
            print(f"vectors: {found}/{len(vocab) - 2} vocabulary words found in {w.vectors}", file=sys.stderr)
    tagger = Tagger(config.model, hf_encoder, len(labels.labels), len(vocab) if vocab else 2, labels.constraints(),
                    vectors).to(device)
    aligner, collator = make_collator(tokenizer, hf_encoder, config.model.encoder)
    items = encode_sentences(aligner, vocab, train_data.tokens, train_tags)
    predictor = Predictor(tagger, tokenizer, vocab, labels, config.model.encoder, device, tc.eval_batch_size,
                          config.data.token_column, tc.precision)
    return Setup(config, device, labels, train_data, dev, test, tagger, tokenizer, vocab, collator, items, predictor)


def make_optimization(setup: Setup) -> Optimization:
    """The optimizer, schedule and scaler for the whole run (steps counted from epoch 1's batches)."""
    tc = setup.config.training
    batches = sum(1 for _ in bucketed_batches(setup.items, tc.batch_size, shuffle=True, rng=random.Random(tc.seed),
                                              batch_tokens=tc.batch_tokens))
    return Optimization(setup.tagger, tc, math.ceil(batches / tc.accumulate) * tc.epochs, setup.device)


def train(config: Config, resume: bool = False) -> dict:
    """Train a tagger as ``config`` says; returns the summary (also written to OUTPUT_DIR/model/metrics.json).

    ``resume``: continue the run in ``output_dir`` from its newest checkpoint, exactly where it stopped.
    """
    started = time.time()
    setup = prepare(config)
    tc, device, labels = config.training, setup.device, setup.labels
    tagger, items, collator, predictor = setup.tagger, setup.items, setup.collator, setup.predictor
    dev, test = setup.dev, setup.test
    optimization = make_optimization(setup)

    out_dir = Path(config.output_dir)
    model_dir = out_dir / "model"
    metrics_path = out_dir / "metrics.jsonl"
    rng = random.Random(tc.seed)
    checkpointer = Checkpointer(out_dir / "checkpoints", config, labels.labels, optimization, rng)
    if resume:
        state = checkpointer.restore()
        # Epochs the checkpoint has not finished are trained again: drop their lines.
        kept = [line for line in metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["epoch"] < state.epoch] if metrics_path.exists() else []
        metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        print(f"resuming at epoch {state.epoch}, batch {state.batches_done} (step {state.step})", file=sys.stderr)
    else:
        state = checkpointer.state
        checkpointer.clear()
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("", encoding="utf-8")
    save_config(config, out_dir / "config.yaml")
    board = TensorBoardLog(out_dir / "tensorboard", tc.tensorboard)
    progress = tc.progress and sys.stderr.isatty()
    from tqdm import tqdm

    def on_step() -> None:
        state.step += 1
        if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
            checkpointer.save()

    while state.epoch <= tc.epochs and not state.stopped:
        epoch = state.epoch
        if state.batches_done == 0:
            state.epoch_rng = rng.getstate()  # this epoch's data order is drawn from here
            state.epoch_lr = optimization.learning_rates()  # the rates this epoch starts with
        else:
            rng.setstate(state.epoch_rng)  # resumed mid-epoch: draw the same order, skip what was done
        t0 = time.time()
        bar = tqdm(total=len(items), desc=f"epoch {epoch}/{tc.epochs}", unit="sent", disable=not progress, leave=False)
        mean_loss = run_epoch(items, collator, optimization, tc, rng, device, bar, state, on_step)
        bar.close()
        train_seconds = time.time() - t0
        dev_result = score(predictor, dev, labels) if dev else None
        f1 = dev_result["micro"]["f1"] if dev_result else float(epoch)  # no dev: keep the last epoch
        improved = f1 > state.best_f1
        record = {"epoch": epoch, "loss": round(mean_loss, 6),
                  "dev": _short(dev_result) if dev_result else None,
                  "lr": state.epoch_lr,
                  "seconds": round(time.time() - t0, 3), "sentences_per_second": round(len(items) / max(train_seconds, 1e-9), 1),
                  "best": improved}
        with metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        board.epoch(record)
        dev_text = f" dev F1 {100 * dev_result['micro']['f1']:.2f}" if dev_result else ""
        print(f"epoch {epoch}: loss {record['loss']:.4f}{dev_text} ({record['sentences_per_second']:.0f} sent/s)",
              file=sys.stderr)
        if improved:
            state.best_f1, state.best_epoch, state.bad_epochs = f1, epoch, 0
            save_model(model_dir, tagger, config, labels, setup.tokenizer, setup.vocab,
                       {"epoch": epoch, "dev": dev_result})
        else:
            state.bad_epochs += 1
            if tc.patience and state.bad_epochs >= tc.patience:
                print(f"early stop: no better dev F1 for {state.bad_epochs} epochs", file=sys.stderr)
                state.stopped = True
        state.epoch, state.batches_done, state.loss_sum = epoch + 1, 0, 0.0
        checkpointer.save()  # every epoch end: resume never repeats a finished epoch

    board.close()
    note = plot_curves(metrics_path, out_dir / "training_curves.png")
    if note:
        print(f"note: {note}", file=sys.stderr)
    best_f1, best_epoch = state.best_f1, state.best_epoch
    summary: dict[str, Any] = {"best_epoch": best_epoch, "dev_f1": best_f1 if dev else None, "test_f1": None,
                               "model_dir": str(model_dir), "seconds": None}
    # Score exactly the weights that were saved (the best epoch), without a second copy of the model.
    from safetensors.torch import load_file

    tagger.load_state_dict(load_file(str(model_dir / WEIGHTS), device=str(device)))
    metrics: dict[str, Any] = {"epoch": best_epoch, "dev": None, "test": None}
    for key, data in (("dev", dev), ("test", test)):
        if data is not None:
            result = score(predictor, data, labels)
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


def train_seeds(config: Config, seeds: list[int], resume: bool = False) -> dict:
    """One run per seed in OUTPUT_DIR/seed-N; OUTPUT_DIR/summary.json holds mean ± std of dev and test F1."""
    from dataclasses import replace

    from ..atomic import atomic_write

    runs = {}
    for seed in seeds:
        run_config = replace(config, output_dir=str(Path(config.output_dir) / f"seed-{seed}"),
                             training=replace(config.training, seed=seed))
        runs[seed] = train(run_config, resume=resume)
    summary = seed_summary(runs)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(config.output_dir) / "summary.json") as fh:
        fh.write(json.dumps(summary, indent=2) + "\n")
    parts = [f"{key.replace('_f1', '')} F1 {100 * summary[key]['mean']:.2f} ± {100 * summary[key]['std']:.2f}"
             for key in ("dev_f1", "test_f1") if key in summary]
    print(f"seeds {','.join(map(str, seeds))}: {'; '.join(parts) or 'no dev/test files'}; "
          f"summary in {Path(config.output_dir) / 'summary.json'}")
    return summary
