"""The training loop: parameter groups, warmup + linear decay, clipping, dev F1 per epoch,
early stopping, the best model kept in OUTPUT_DIR/model, one metrics.jsonl line per epoch."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .. import distributed, threads
from ..config import Config, TrainingConfig, save_config
from ..paths import same_file
from ..schema import here
from ..data.batching import (Collator, Encoded, batch_indices, bucketed_batches, encode_sentences, make_collator,
                             micro_batches)
from ..heap import release_free_memory, trimming
from ..devices import resolve_device
from ..data.vectors import load_vectors, vector_coverage
from ..data.vocab import CharVocab, Vocab
from ..data.schemes import reading_tables
from ..errors import UserError
from ..model.card import training_info
from ..data.labels import LabelInfo
from ..model.directory import save_model
from ..model.encoder import build_hf_encoder, max_positions
from ..model.compiled import compile_network
from ..model.precision import check_precision
from ..model.crf import native
from ..model.inference import Inference
from ..model.tagger import Tagger
from .checkpoint import RunState, Checkpointer
from .optimization import Optimization
from .phases import PHASES, TRAINING
from .fingerprint import run_fingerprints
from .reporting import TensorBoardLog, read_metrics, seed_summary, write_metrics_log
from .runlock import run_lock
from .scoring import finish, score, short_scores
from .dataset import LabelledFile, read_training_data, resolve_word_tokenizer, warn_unknown_words

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def run_epoch(items: Sequence[Encoded], collator: Collator, optimization: Optimization, tc: TrainingConfig,
              rng: random.Random, device: torch.device, bar: Any = None, position: Optional[RunState] = None,
              save: Optional[Callable[[], None]] = None) -> float:
    """One pass over ``items`` in shuffled length buckets; returns the mean loss per sentence.

    With ``position`` (resume), the first ``position.batches_done`` batches of the epoch's order are
    skipped and the loss already summed is carried on. ``position.step`` counts optimizer steps; every
    ``training.checkpoint_every`` of them ``save`` runs with ``position`` up to date.
    """
    optimization.tagger.train()
    position = position or RunState()
    dist = distributed.current()
    # float64 on the device: no host sync per batch. The sum carried from a checkpoint is global: rank 0
    # holds it, so the all-reduce of the ranks' sums is the global sum again.
    total = torch.zeros((), dtype=torch.float64, device=device)
    if dist.main:
        total = total + torch.as_tensor(position.loss_sum, dtype=torch.float64, device=device)
    batches = bucketed_batches(items, tc.batch_size, shuffle=True, rng=rng, batch_tokens=tc.batch_tokens)
    for index, chunk in enumerate(trimming(batches)):  # fragments of ever-changing shapes: given back
        if index < position.batches_done:
            continue
        local = dist.shard(chunk)  # data parallel: this rank's part of the global batch
        parts = micro_batches(local, collator, tc.micro_batch_subwords) if local else [([], None)]
        for k, (records, part) in enumerate(parts):  # one optimizer step for the batch, however it is split
            loss = optimization.backward(part.to(device) if part is not None else None, len(records) / len(chunk),
                                         last=k == len(parts) - 1)
            if loss is not None:
                total = total + loss.double() * len(records)
        if bar is not None:
            bar.update(len(chunk))
        if optimization.pending == 0:
            position.step += 1
            if save is not None and tc.checkpoint_every and position.step % tc.checkpoint_every == 0:
                position.batches_done = index + 1
                position.loss_sum = distributed.all_reduce_sum(total.clone())
                save()
    if optimization.pending:
        optimization.step()  # the last, partial accumulation
        position.step += 1
    return float(distributed.all_reduce_sum(total.clone())) / max(1, len(items))


def _check_paths(config: Config) -> None:
    if not config.data.train:
        raise here(config.data).error("`data.train` is required: set it in the config or with --set data.train=PATH",
                                      "train")
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
    items: Sequence[Encoded]  # an EncodedStore: flat arrays, records built per batch
    predictor: Inference  # dev/test scoring and the temperature fit (a Predictor without the loading)
    chars: Optional[CharVocab] = None
    card: Optional[dict] = None  # the run's provenance for the model card (card.training_info)


def prepare(config: Config) -> Setup:
    """Read and check the data, build labels, vocabulary, encoder and tagger, encode the training set."""
    _check_paths(config)
    tc = config.training
    threads.apply(tc.num_threads)
    dist, rank_device = distributed.init_from_env(tc.device)
    device = resolve_device(rank_device or tc.device, "training.device")
    check_precision(tc.precision, device)
    seed_everything(tc.seed)
    # Adam moments of rarely seen embedding rows decay into denormal floats, which are 10-100x slower
    # on x86 CPUs; flushing them to zero changes nothing measurable and keeps every step fast.
    torch.set_flush_denormal(True)

    with PHASES("read and check the data"):
        # Resolved once and saved with the model: predict_text splits raw text as training did.
        config.data.word_tokenizer = resolve_word_tokenizer(config.data)
        train_data, dev, test, labels, train_tags, partial = read_training_data(config.data, config.model.decoder)

    with PHASES("encoder and tokenizer (from_pretrained)"):
        hf_encoder, tokenizer = build_hf_encoder(config.model.encoder)
    vocab_started = time.perf_counter()
    vocab: Optional[Vocab] = None
    vectors = None
    if config.model.fusion != "none":
        w = config.model.words
        vocab = Vocab.build(train_data.tokens.strings(), w.min_freq, w.lowercase)
        if w.vectors:
            vectors = load_vectors(w.vectors, vocab, w.dim, w.vectors_words == "all", w.max_vectors)
            vocab = vocab.with_pretrained(vectors.words)
            covered, total = vector_coverage(train_data.tokens.strings(), vocab, vectors.found)
            log.info(f"vectors: {int(vectors.found.sum())}/{vocab.trained - 2} vocabulary words found in {w.vectors}; "
                     f"they cover {covered}/{total} training tokens ({covered / max(total, 1):.1%})"
                     + (f"; {len(vectors.words):,} more words of the file kept for words training never sees "
                        f"({vectors.extra_bytes / 2**20:.1f} MiB in float16)" if vectors.words else ""))
    chars = None
    if config.model.chars.enabled:
        c = config.model.chars
        chars = CharVocab.build(train_data.tokens.strings(), c.min_freq, c.max_length)
    PHASES.add("vocabularies and word vectors", time.perf_counter() - vocab_started)
    with PHASES("tagger build"):
        tagger = Tagger(config.model, hf_encoder, len(labels.labels), vocab.trained if vocab else 2,
                        labels.constraints(), vectors, num_chars=len(chars) if chars else 0).to(device)
        tagger.encoder.enable_token_dropout(config.model.encoder.token_dropout, tokenizer)
        if partial is not None:
            tagger.enable_partial_labels(*reading_tables(labels.labels, labels.tag_scheme, labels.output_scheme)[1:])
        if tc.compile:
            compile_network(tagger)  # compiles lazily, at the first training step and the first scoring
    with PHASES("C Viterbi kernel load"):
        native.library()  # built or loaded now, not inside the first dev scoring
    with PHASES("subword encoding of the training set"):
        aligner, collator = make_collator(tokenizer, max_positions(hf_encoder), config.model.encoder,
                                          pad_multiple(tc.pad_to_multiple, len(train_data.tokens), tc.precision))
        encoder_name = config.model.encoder.name_or_path or str(config.model.encoder.tokenizer)
        warn_unknown_words(aligner, train_data, encoder_name)  # a script the encoder cannot read
        items = encode_sentences(aligner, vocab, train_data.tokens, train_tags, chars=chars,
                                 documents=train_data.documents, context=config.model.encoder.context,
                                 known=None if partial is None else partial[0])
        del train_tags, partial  # copied into the store
        release_free_memory()  # the store's build freed many buffers mid-heap (~25 MB at 140,410 sentences)
    predictor = Inference(tagger, tokenizer, vocab, labels, config.model.encoder, device, tc.eval_batch_size,
                          config.data.token_column, tc.precision, chars, config.data.word_tokenizer,
                          tc.micro_batch_subwords)
    return Setup(config, device, labels, train_data, dev, test, tagger, tokenizer, vocab, collator, items, predictor,
                 chars)


def pad_multiple(configured: Optional[int], sentences: int, precision: str) -> int:
    """``training.pad_to_multiple``, with null resolved: 16 for a training set of more than 1,000
    sentences under autocast, else 1. Under bf16/fp16 autocast every new shape leaves its own cast
    copies and activations behind in the allocator (1 epoch on CoNLL-2003: 1.85 GB at 1, 1.0 GB at 16,
    the same speed); in fp32 the memory does not grow that way, and the padding costs time (227 against
    156 sentences/s)."""
    if configured is not None:
        return configured
    return 16 if sentences > 1000 and precision != "fp32" else 1


def make_optimization(setup: Setup) -> Optimization:
    """The optimizer, schedule and scaler for the whole run (steps counted from epoch 1's batches)."""
    tc = setup.config.training
    batches = len(batch_indices(setup.items, tc.batch_size, shuffle=True, rng=random.Random(tc.seed),
                                batch_tokens=tc.batch_tokens))
    return Optimization(setup.tagger, tc, math.ceil(batches / tc.accumulate) * tc.epochs, setup.device)


def train(config: Config, resume: bool = False, config_path: Optional[str] = None,
          command: Optional[list[str]] = None, announce: Callable[[str], None] = print) -> dict:
    """Train a tagger as ``config`` says; returns the summary (also written to OUTPUT_DIR/model/metrics.json).

    ``resume``: continue the run in ``output_dir`` from its newest checkpoint, exactly where it stopped.
    ``config_path``: the file the config was read from; when it is ``OUTPUT_DIR/config.yaml`` itself it is
    never rewritten (the user's file, comments and all, stays as it is).
    ``command``: the command line the model card records (default: this process's ``sys.argv``).
    ``announce``: where the final ``done: ...`` line goes (the command prints it; the Python API logs it).
    Under ``torchrun`` every rank trains its share of each batch; rank 0 alone evaluates and writes.
    While it runs, OUTPUT_DIR/.lock keeps a second run out of the same directory.
    """
    started = time.time()
    PHASES.reset()
    # Before anything is written there; torchrun sets RANK before prepare() joins the process group.
    with run_lock(Path(config.output_dir), enabled=os.environ.get("RANK", "0") == "0"):
        return _train(config, resume, config_path, started, command or sys.argv, announce)


def _train(config: Config, resume: bool, config_path: Optional[str], started: float, command: list[str],
           announce: Callable[[str], None]) -> dict:
    setup = prepare(config)
    tc, device, labels = config.training, setup.device, setup.labels
    main = distributed.current().main
    with PHASES("optimizer and schedule"):
        optimization = make_optimization(setup)
    setup_started = time.perf_counter()
    out_dir = Path(config.output_dir)
    metrics_path = out_dir / "metrics.jsonl"
    rng = random.Random(tc.seed)
    fingerprints = run_fingerprints(
        {"data.train": config.data.train, "data.dev": config.data.dev, "data.test": config.data.test,
         "model.words.vectors": config.model.words.vectors if setup.vocab is not None else None},
        {"words": setup.vocab.words if setup.vocab is not None else None,
         "chars": setup.chars.chars if setup.chars is not None else None, "labels": labels.labels})
    setup.card = training_info(command, {"train": setup.train, "dev": setup.dev, "test": setup.test},
                               fingerprints["files"])
    checkpointer = Checkpointer(out_dir / "checkpoints", config, labels.labels, optimization, rng, fingerprints)
    if resume:
        state = checkpointer.restore()
        if main:  # epochs the checkpoint has not finished are trained again: drop their lines
            write_metrics_log(metrics_path, [r for r in read_metrics(metrics_path) if r["epoch"] < state.epoch])
            log.info(f"resuming at epoch {state.epoch}, batch {state.batches_done} (step {state.step})")
    else:
        state = checkpointer.state
        if main:
            checkpointer.clear()
            out_dir.mkdir(parents=True, exist_ok=True)
            write_metrics_log(metrics_path, [])
    if main:
        if config_path is None or not same_file(config_path, out_dir / "config.yaml"):
            save_config(config, out_dir / "config.yaml")
    board = TensorBoardLog(out_dir / "tensorboard", tc.tensorboard and main)
    from tqdm import tqdm

    PHASES.add("fingerprints, card, checkpoints, config", time.perf_counter() - setup_started)

    def save() -> None:
        if main:
            with PHASES("checkpoints"):
                checkpointer.save()

    while state.epoch <= tc.epochs and not state.stopped:
        epoch = state.epoch
        if state.batches_done == 0:
            state.epoch_rng = rng.getstate()  # this epoch's data order is drawn from here
            state.epoch_lr = optimization.learning_rates()  # the rates this epoch starts with
        else:
            rng.setstate(state.epoch_rng)  # resumed mid-epoch: draw the same order, skip what was done
        PHASES.mark("first training step")
        t0 = time.time()
        bar = tqdm(total=len(setup.items), desc=f"epoch {epoch}/{tc.epochs}", unit="sent", leave=False,
                   disable=not (tc.progress and main and sys.stderr.isatty()))
        epoch_started = time.perf_counter()
        mean_loss = run_epoch(setup.items, setup.collator, optimization, tc, rng, device, bar, state, save)
        PHASES.add(TRAINING, time.perf_counter() - epoch_started)
        bar.close()
        if main:
            with optimization.evaluated_weights():
                _end_epoch(setup, state, mean_loss, time.time() - t0, metrics_path, board)
        state.stopped = distributed.broadcast_object(state.stopped)
        state.epoch, state.batches_done, state.loss_sum = epoch + 1, 0, 0.0
        save()  # every epoch end: resume never repeats a finished epoch

    board.close()
    if not main:
        distributed.barrier()  # rank 0 scores the best model and writes the summary
        return {}
    summary = finish(setup, state, out_dir, started, announce)
    distributed.barrier()
    return summary


def _end_epoch(setup: Setup, state: RunState, mean_loss: float, seconds: float, metrics_path: Path,
               board: TensorBoardLog) -> None:
    """Rank 0 after an epoch: dev score, metrics.jsonl line, best model saved, early stopping."""
    tc, epoch, dev = setup.config.training, state.epoch, setup.dev
    with PHASES("dev scoring after each epoch"):
        dev_result = score(setup.predictor, dev, setup.labels) if dev else None
    f1 = dev_result["micro"]["f1"] if dev_result else float(epoch)  # no dev: keep the last epoch
    improved = f1 > state.best_f1
    record = {"epoch": epoch, "loss": round(mean_loss, 6), "dev": short_scores(dev_result) if dev_result else None,
              "lr": state.epoch_lr, "seconds": round(seconds, 3),
              "sentences_per_second": round(len(setup.items) / max(seconds, 1e-9), 1), "best": improved}
    # The whole (small) file is rewritten: a failed write keeps the previous one, never a torn line.
    write_metrics_log(metrics_path, [*read_metrics(metrics_path), record])
    board.epoch(record)
    dev_text = f" dev F1 {100 * dev_result['micro']['f1']:.2f}" if dev_result else ""
    log.info(f"epoch {epoch}: loss {record['loss']:.4f}{dev_text} ({record['sentences_per_second']:.0f} sent/s)")
    if improved:
        state.best_f1, state.best_epoch, state.bad_epochs = f1, epoch, 0
        with PHASES("saving the best model"):
            save_model(Path(setup.config.output_dir) / "model", setup.tagger, setup.config, setup.labels,
                       setup.tokenizer, setup.vocab, {"epoch": epoch, "dev": dev_result}, setup.chars, setup.card)
    else:
        state.bad_epochs += 1
        if tc.patience and state.bad_epochs >= tc.patience:
            log.info(f"early stop: no better dev F1 for {state.bad_epochs} epochs")
            state.stopped = True


def train_seeds(config: Config, seeds: list[int], resume: bool = False, config_path: Optional[str] = None,
                command: Optional[list[str]] = None, announce: Callable[[str], None] = print) -> dict:
    """One run per seed in OUTPUT_DIR/seed-N; OUTPUT_DIR/summary.json holds mean ± std of dev and test F1."""
    from dataclasses import replace

    from ..atomic import atomic_write

    runs = {}
    for seed in seeds:
        run_config = replace(config, output_dir=str(Path(config.output_dir) / f"seed-{seed}"),
                             training=replace(config.training, seed=seed))
        runs[seed] = train(run_config, resume=resume, config_path=config_path, command=command, announce=announce)
    summary = seed_summary(runs)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(config.output_dir) / "summary.json") as fh:
        fh.write(json.dumps(summary, indent=2) + "\n")
    parts = [f"{key.replace('_f1', '')} F1 {100 * summary[key]['mean']:.2f} ± {100 * summary[key]['std']:.2f}"
             for key in ("dev_f1", "test_f1") if key in summary]
    announce(f"seeds {','.join(map(str, seeds))}: {'; '.join(parts) or 'no dev/test files'}; "
          f"summary in {Path(config.output_dir) / 'summary.json'}")
    return summary
