"""The pretraining loop: AlbertForPreTraining on SOP pairs with n-gram MLM, AdamW with linear warmup
and decay, gradient accumulation, autocast, held-out metrics in metrics.jsonl, checkpoints for an exact
resume, and the final HF directory OUTPUT_DIR/encoder.

Exactness of ``--resume``: the pairs, the held-out split, each epoch's batch order and each example's
masking are drawn from RNGs seeded by (seed, what, epoch, index), so they are recomputed, never stored;
a checkpoint holds the weights, the optimizer, the schedule, torch's RNG (the SOP head's dropout), the
position (epoch, batch, step) and the running sums of the current metrics window.

Under ``torchrun`` (``ner_toolkit.distributed``) every rank masks the whole global batch (cheap, and it
gives the global counts without communication) and runs pairs r, r+W, ... of it, its MLM and SOP means
weighted by its share of the predicted subwords and of the pairs, so the summed gradients are those of
the global batch's means. Rank 0 alone evaluates and writes; each rank's RNG state is checkpointed.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .. import distributed, threads
from ..devices import resolve_device
from ..errors import UserError
from ..model.precision import autocast, check_precision
from ..paths import same_file
from ..schema import here
from ..training.checkpoint import checkpoints, config_differences, load_latest, save_checkpoint
from ..training.fingerprint import check_fingerprints, run_fingerprints
from ..training.optimization import linear_schedule
from ..training.reporting import read_metrics, write_metrics_log
from ..training.runlock import run_lock
from .config import PretrainConfig, save_pretrain_config, to_dict
from .curves import plot_pretraining_curves
from .data import (IGNORE, Batch, Example, Masking, Pair, Vocabulary, collate, make_pairs, mask_pair, plan_batches,
                   read_documents, steps_per_epoch)
from .model import build_model, forward, parameter_groups, save_encoder

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    """The SOP pairs of the training and the held-out documents."""

    train: list[Pair]
    heldout: list[Pair]
    documents: int
    heldout_documents: int
    formats: list[str]         # each file's format as read (data.format, or what auto detected)


def build_corpus(config: PretrainConfig, tokenizer: Any) -> Corpus:
    """Read ``data.files``, hold out whole documents (a seeded draw), cut every document into pairs."""
    d, seed = config.data, config.training.seed
    formats: list[str] = []
    documents = read_documents(d.files or [], d.format, d.token_column, formats)
    if not documents:
        raise UserError("no text in `data.files`; give raw text (one sentence per line) or CoNLL files",
                        (d.files or ["config"])[0])
    flat = [s for doc in documents for s in doc]
    # verbose=False: a long sentence is cut into pieces by make_pairs, no "longer than the maximum" warning
    ids = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"]
    held = 0 if d.heldout == 0 else max(1, round(d.heldout * len(documents)))
    if held >= len(documents):
        raise here(d).error(f"`data.heldout` {d.heldout} leaves no training document ({len(documents)} in "
                            "`data.files`); lower it, set 0, or add text", "heldout")
    order = list(range(len(documents)))
    random.Random(f"{seed}/heldout").shuffle(order)
    heldout_docs = set(order[:held])
    train: list[Pair] = []
    heldout: list[Pair] = []
    start = 0
    for index, doc in enumerate(documents):
        doc_ids, start = ids[start:start + len(doc)], start + len(doc)
        pairs = make_pairs(doc_ids, index, d.max_seq_length, d.short_seq_prob, random.Random(f"{seed}/pairs/{index}"))
        (heldout if index in heldout_docs else train).extend(pairs)
    if not train:
        raise UserError("the training documents give no sentence pair (each needs at least two subwords)",
                        (d.files or ["config"])[0])
    return Corpus(train, heldout, len(documents), held, formats)


@dataclass
class RunState:
    """Where a run stands, and the sums of the metrics window since the last metrics line."""

    epoch: int = 1
    batches_done: int = 0     # of this epoch's plan
    step: int = 0             # optimizer steps so far
    window: dict = field(default_factory=lambda: {"loss": 0.0, "mlm_loss": 0.0, "sop_loss": 0.0, "batches": 0,
                                                  "tokens": 0})


class Pretrainer:
    """One run: ``run()`` trains to ``total_steps`` (from a checkpoint with ``resume``) and saves the encoder."""

    def __init__(self, config: PretrainConfig, config_path: Optional[str] = None) -> None:
        self.config, self.config_path = config, config_path
        tc = config.training
        threads.apply(tc.num_threads)
        self.dist, rank_device = distributed.init_from_env(tc.device)
        self.device = resolve_device(rank_device or tc.device, "training.device")
        check_precision(tc.precision, self.device)
        torch.manual_seed(tc.seed)  # the initialisation of a scratch model and of new heads
        self.model, self.tokenizer, self.activation = build_model(config.model.encoder)
        self.model.to(self.device).train()
        self.vocab = Vocabulary.from_tokenizer(self.tokenizer)
        m = config.masking
        self.masking = Masking(m.probability, m.mask, m.random, m.max_ngram, m.whole_words, m.max_predictions)
        self.corpus = build_corpus(config, self.tokenizer)
        self.lengths = [len(p) for p in self.corpus.train]
        self.heldout = self._heldout_batches()
        self.total_steps = tc.steps if tc.steps is not None else sum(
            steps_per_epoch(len(self.plan(e)), tc.accumulate) for e in range(1, tc.epochs + 1))
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, tc.weight_decay), lr=tc.lr, fused=True)
        self.scheduler = linear_schedule(self.optimizer, int(tc.warmup * self.total_steps), self.total_steps)
        self.out = Path(config.output_dir)
        self.fingerprints = run_fingerprints({f"data.files[{i}]": f for i, f in enumerate(config.data.files or [])},
                                             {"tokenizer": self.vocab_pieces()})
        self.state = RunState()
        self.window_started = time.perf_counter()

    def vocab_pieces(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))

    def plan(self, epoch: int) -> list[list[int]]:
        tc = self.config.training
        return plan_batches(self.lengths, tc.batch_size, tc.batch_tokens, random.Random(f"{tc.seed}/order/{epoch}"))

    def example(self, epoch: int, index: int) -> Example:
        rng = random.Random(f"{self.config.training.seed}/mask/{epoch}/{index}")
        return mask_pair(self.corpus.train[index], self.vocab, self.masking, rng)

    def _heldout_batches(self) -> list[Batch]:
        """The held-out pairs, masked once (a fixed draw), so every evaluation scores the same predictions."""
        seed, size = self.config.training.seed, self.config.training.eval_batch_size
        examples = [mask_pair(p, self.vocab, self.masking, random.Random(f"{seed}/heldout-mask/{i}"))
                    for i, p in enumerate(self.corpus.heldout)]
        examples.sort(key=lambda e: len(e.input_ids))
        return [collate(examples[i:i + size], self.vocab.pad_id) for i in range(0, len(examples), size)]

    # ------------------------------------------------------------------ checkpoints

    def _global_window(self) -> dict:
        """The metrics window summed over ranks (every rank calls this at the same steps)."""
        return {k: distributed.all_reduce_sum(torch.as_tensor(v, dtype=torch.float64, device=self.device).clone())
                for k, v in self.state.window.items()}

    def _save(self) -> None:
        """Every rank: the window and RNG states are gathered; rank 0 writes the checkpoint."""
        window = self._global_window()
        rngs = distributed.gather_to_main({"torch": torch.get_rng_state(),
                                           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []})
        if not self.dist.main:
            return
        state = asdict(self.state)
        state["window"] = {k: float(v) if k in ("loss", "mlm_loss", "sop_loss") else int(v) for k, v in window.items()}
        save_checkpoint(self.out / "checkpoints", self.state.step, {
            "run": state, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rngs,
            "config": to_dict(self.config), "fingerprints": self.fingerprints}, self.config.training.keep_checkpoints)

    def _restore(self) -> None:
        path, saved = load_latest(self.out / "checkpoints")
        if "run" not in saved or "window" not in saved.get("run", {}):
            raise UserError("not a pretraining checkpoint (a train.py run?); choose the pretraining output "
                            "directory or start without --resume", path)
        problems = config_differences(saved["config"], to_dict(self.config))
        if problems:
            raise UserError("cannot resume: the config changed since the checkpoint (" + "; ".join(problems)
                            + "); restore it or start without --resume", path)
        check_fingerprints(saved.get("fingerprints"), self.fingerprints, path)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        rngs = saved["rng"]  # one per rank of the interrupted run
        rng = rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0]
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.state = RunState(**saved["run"])
        if not self.dist.main:  # the saved window is global: rank 0 carries it, the others start at zero
            self.state.window = RunState().window

    # ------------------------------------------------------------------ metrics

    @torch.no_grad()
    def evaluate(self) -> Optional[dict]:
        """Held-out MLM loss (mean over predicted subwords), MLM accuracy, SOP accuracy; None without held-out pairs."""
        if not self.heldout:
            return None
        self.model.eval()
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        masked = correct = sop = torch.zeros((), dtype=torch.long, device=self.device)
        pairs = 0
        for batch in self.heldout:
            with autocast(self.device, self.config.training.precision):
                o = forward(self.model, batch.to(self.device))
            loss = loss + o.mlm_loss.double() * o.masked
            masked, correct, sop, pairs = masked + o.masked, correct + o.mlm_correct, sop + o.sop_correct, pairs + o.pairs
        self.model.train()
        n = max(1, int(masked))
        return {"mlm_loss": round(float(loss) / n, 6), "mlm_accuracy": round(int(correct) / n, 6),
                "sop_accuracy": round(int(sop) / max(1, pairs), 6), "predicted": int(masked), "pairs": pairs}

    def _record(self, metrics_path: Path, started: float) -> Optional[dict]:
        """Every rank: the window is summed over ranks; rank 0 evaluates and appends the metrics line."""
        w = self._global_window()
        self.state.window = RunState().window
        if not self.dist.main:
            return None
        batches = max(1, int(w["batches"]) // self.dist.world)  # every rank counted every batch
        now = time.perf_counter()
        seconds, window_seconds = now - started, now - self.window_started
        self.window_started = now
        record = {"epoch": self.state.epoch, "step": self.state.step,
                  "lr": round(self.scheduler.get_last_lr()[0], 10),
                  "train": {k: round(float(w[k]) / batches, 6) for k in ("loss", "mlm_loss", "sop_loss")},
                  "heldout": self.evaluate(), "seconds": round(seconds, 3),
                  "tokens_per_second": round(int(w["tokens"]) / max(window_seconds, 1e-9), 1)}
        write_metrics_log(metrics_path, [*read_metrics(metrics_path), record])
        return record

    # ------------------------------------------------------------------ the loop

    def run(self, resume: bool = False) -> dict:
        tc = self.config.training
        metrics_path = self.out / "metrics.jsonl"
        main = self.dist.main
        if resume:
            self._restore()  # every rank
        if main and resume:  # lines past the checkpoint are computed again
            write_metrics_log(metrics_path, [r for r in read_metrics(metrics_path) if r.get("step", 0) <= self.state.step])
            log.info(f"resuming at step {self.state.step} of {self.total_steps} (epoch {self.state.epoch}, "
                     f"batch {self.state.batches_done})")
        if main and not resume:
            for old in checkpoints(self.out / "checkpoints"):
                old.unlink()  # a fresh run never resumes from an old run's checkpoints
            self.out.mkdir(parents=True, exist_ok=True)
            write_metrics_log(metrics_path, [])
        if main:
            if self.config_path is None or not same_file(self.config_path, self.out / "config.yaml"):
                save_pretrain_config(self.config, self.out / "config.yaml")
            self._describe()
        from tqdm import tqdm

        bar = tqdm(total=self.total_steps, initial=self.state.step, desc="pretraining", unit="step",
                   disable=not (tc.progress and main and sys.stderr.isatty()))
        started = self.window_started = time.perf_counter()
        while self.state.step < self.total_steps:
            self._epoch(metrics_path, started, bar)
            if self.state.step < self.total_steps:
                self.state.epoch, self.state.batches_done = self.state.epoch + 1, 0
        bar.close()
        summary = {"steps": self.state.step, "heldout": None, "encoder_dir": str(self.out / "encoder")}
        if main:
            summary["heldout"] = self._finish(metrics_path)
        distributed.barrier()  # the other ranks end once rank 0 has written the encoder
        return summary

    def _describe(self) -> None:
        kinds = ", ".join(f"{self.corpus.formats.count(k)} {k}" for k in ("text", "conll") if k in self.corpus.formats)
        log.info(f"data: {len(self.corpus.formats)} file(s) read as {kinds} (data.format {self.config.data.format})")
        trained = self.corpus.documents - self.corpus.heldout_documents
        log.info(f"pretraining on {len(self.corpus.train)} pairs ({trained} documents), held out "
                 f"{len(self.corpus.heldout)} pairs ({self.corpus.heldout_documents} documents); "
                 f"{self.total_steps} steps{f' on {self.dist.world} processes' if self.dist.enabled else ''}")

    def _finish(self, metrics_path: Path) -> Optional[dict]:
        """Rank 0 at the end: the curves, the two model directories, the summary line; the last held-out scores."""
        records = read_metrics(metrics_path)
        note = plot_pretraining_curves(records, self.out / "pretraining_curves.png")
        if note:
            log.info(f"note: {note}")
        save_encoder(self.model, self.tokenizer, self.activation, self.out / "encoder", self.out / "pretraining_model")
        final = records[-1]["heldout"] if records else None
        shown = (f"held-out MLM accuracy {100 * final['mlm_accuracy']:.1f}%, SOP accuracy "
                 f"{100 * final['sop_accuracy']:.1f}%; " if final else "")
        print(f"done: {self.state.step} steps; {shown}encoder in {self.out / 'encoder'}")
        return final

    def _epoch(self, metrics_path: Path, started: float, bar: Any) -> None:
        """The rest of the current epoch (from ``batches_done``), or until ``total_steps``."""
        tc, state = self.config.training, self.state
        plan = self.plan(state.epoch)
        pending = 0
        window = {k: torch.as_tensor(v, dtype=torch.float64, device=self.device) for k, v in state.window.items()}
        for index in range(state.batches_done, len(plan)):
            examples = [self.example(state.epoch, i) for i in plan[index]]
            local = self.dist.shard(examples)  # all of them in one process
            if local:
                batch = collate(local, self.vocab.pad_id).to(self.device)
                with autocast(self.device, tc.precision):
                    o = forward(self.model, batch)
                # This rank's share of the global batch's predicted subwords and pairs (1.0 in one process).
                mlm = o.mlm_loss * (_predicted(local) / max(1, _predicted(examples)))
                sop = o.sop_loss * (len(local) / len(examples))
                ((mlm + sop) / tc.accumulate).backward()
                for key, value in (("loss", mlm + sop), ("mlm_loss", mlm), ("sop_loss", sop)):
                    window[key] = window[key] + value.detach().double()
                window["tokens"] = window["tokens"] + batch.attention_mask.sum()
            window["batches"] = window["batches"] + 1
            pending += 1
            if pending < tc.accumulate and index < len(plan) - 1:
                continue
            self._step()
            pending = 0
            state.step, state.batches_done = state.step + 1, index + 1
            bar.update(1)
            done = state.step >= self.total_steps
            state.window = window
            if done or (tc.eval_every and state.step % tc.eval_every == 0):
                self._record(metrics_path, started)
                window = {k: torch.as_tensor(v, dtype=torch.float64, device=self.device)
                          for k, v in state.window.items()}
            if done or (tc.checkpoint_every and state.step % tc.checkpoint_every == 0):
                self._save()
            if done:
                break
        state.window = window

    def _step(self) -> None:
        distributed.all_reduce_grads(self.model.parameters())  # data parallel: sum the ranks' shares
        if self.config.training.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.training.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def _predicted(examples: list[Example]) -> int:
    return sum(1 for e in examples for label in e.labels if label != IGNORE)


def pretrain(config: PretrainConfig, resume: bool = False, config_path: Optional[str] = None) -> dict:
    """Pretrain as ``config`` says (OUTPUT_DIR/.lock keeps a second run out); returns the summary.
    Under torchrun every rank calls this; rank 0 takes the lock (torchrun sets RANK before anything runs)."""
    with run_lock(Path(config.output_dir), enabled=os.environ.get("RANK", "0") == "0"):
        return Pretrainer(config, config_path).run(resume)
