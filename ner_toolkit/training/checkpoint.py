"""Checkpoints for exact resume: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model, optimizer, scheduler and loss-scaler states, every RNG state, the
position in the epoch's data order, the best metric so far, the label list and the resolved config.
It is written with ``torch.save`` under a temporary name and renamed (a killed process leaves the
previous checkpoint intact), and read back with ``torch.load(weights_only=True)``: tensors and plain
Python values only, nothing is unpickled as code.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..atomic import atomic_write
from ..errors import UserError, warn
from .fingerprint import check_fingerprints

VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")
# Keys that may differ between the interrupted run and its resumption (they do not change the maths).
RESUMABLE_CHANGES = ("training.progress", "training.device", "training.num_threads", "output_dir")


def save_checkpoint(directory: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``directory/step-NNNNNNNN.pt`` atomically and keep only the newest ``keep`` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    with atomic_write(path, "wb") as fh:
        torch.save({"version": VERSION, **state}, fh)
    for old in checkpoints(directory)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _damage(path: Path, exc: Exception) -> str:
    """Why ``path`` could not be loaded, in a few words (torch's own messages run to paragraphs)."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    first = (str(exc).splitlines() or [""])[0]
    return f"damaged or not a checkpoint ({type(exc).__name__}{': ' + first[:80] if first else ''})"


def load_latest(directory: Path) -> tuple[Path, dict]:
    """The newest readable checkpoint; a damaged newest one is skipped with a warning for the one before it."""
    found = checkpoints(directory)
    if not found:
        raise UserError("nothing to resume: no checkpoints here; train without --resume", directory)
    problem = ""
    for path in reversed(found):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        # Zero bytes raise EOFError, a truncated zip RuntimeError, random bytes UnpicklingError or
        # KeyError: whatever a damaged file raises, it is damaged.
        except Exception as exc:  # noqa: BLE001
            problem = f"{path.name}: {_damage(path, exc)}"
        else:
            if isinstance(state, dict) and state.get("version") == VERSION:
                return path, state
            problem = f"{path.name}: not a ner_toolkit checkpoint"
        warn(f"skipping checkpoint: {problem.split(': ', 1)[1]}; trying the one before it", path)
    raise UserError(f"no usable checkpoint ({problem})", directory)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every config key that differs (ignoring RESUMABLE_CHANGES). A key
    the checkpoint lacks (an option added after it was written) counts as unchanged at its default."""
    from ..config import Config, to_dict

    a, b, defaults = _flatten(saved), _flatten(current), _flatten(to_dict(Config()))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUMABLE_CHANGES) or a.get(key, defaults.get(key)) == b.get(key):
            continue
        diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def python_rng_state(state: Any) -> tuple:
    """``random.setstate`` needs tuples; a saved state may come back with lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def restore_rng(saved: dict, shuffle: Optional[Any] = None) -> None:
    random.setstate(python_rng_state(saved["python"]))
    torch.set_rng_state(saved["torch"])
    if torch.cuda.is_available() and saved.get("cuda"):
        torch.cuda.set_rng_state_all(saved["cuda"])
    if shuffle is not None:
        shuffle.setstate(python_rng_state(saved["shuffle"]))


def rng_state(shuffle: Any) -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": shuffle.getstate()}


@dataclass
class RunState:
    """Where a run stands: the next epoch, batches of it already done, its loss so far, the best so far."""

    epoch: int = 1
    batches_done: int = 0
    loss_sum: Any = 0.0          # float64 tensor on the device while an epoch runs (no per-batch sync)
    step: int = 0                # optimizer steps over the whole run
    best_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False        # early stopping fired
    epoch_rng: Any = None        # shuffle RNG state at the start of `epoch` (its data order)
    epoch_lr: Any = None         # learning rates at the start of `epoch` (logged in metrics.jsonl)


class Checkpointer:
    """Saves and restores a run's ``RunState`` with the model, optimizer, scheduler, scaler and RNGs."""

    def __init__(self, directory: Path, config: Any, labels: list[str], optimization: Any, shuffle: Any,
                 fingerprints: Optional[dict] = None) -> None:
        """``fingerprints``: what the run trains from (``fingerprint.run_fingerprints``), saved and checked on
        resume; None skips the check."""
        from ..config import to_dict

        self.directory, self.labels, self.optimization, self.shuffle = directory, labels, optimization, shuffle
        self.config = to_dict(config)
        self.keep = config.training.keep_checkpoints
        self.state = RunState()
        self.fingerprints = fingerprints

    def clear(self) -> None:
        """A fresh run in an old output directory must never resume from the old run's checkpoints."""
        for path in checkpoints(self.directory):
            path.unlink()

    def save(self) -> Path:
        opt = self.optimization
        state = dataclasses.asdict(self.state)
        state["loss_sum"] = torch.as_tensor(self.state.loss_sum, dtype=torch.float64).cpu()
        return save_checkpoint(self.directory, self.state.step, {
            "run": state, "model": opt.tagger.state_dict(), "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(),
            "rng": rng_state(self.shuffle), "labels": self.labels, "config": self.config,
            "average": opt.average.state_dict() if opt.average is not None else None,
            "fingerprints": self.fingerprints}, self.keep)

    def restore(self) -> RunState:
        """Load the newest checkpoint into the model, optimizer, ... after checking it belongs to this run."""
        path, saved = load_latest(self.directory)
        problems = config_differences(saved["config"], self.config)
        if saved["labels"] != self.labels:
            problems.append(f"labels: {len(saved['labels'])} -> {len(self.labels)} ({', '.join(self.labels[:6])}...)")
        if problems:
            raise UserError("cannot resume: the config or labels changed since the checkpoint (" + "; ".join(problems)
                            + "); restore them or train from scratch without --resume", path)
        if self.fingerprints is not None:
            check_fingerprints(saved.get("fingerprints"), self.fingerprints, path)
        opt = self.optimization
        opt.tagger.load_state_dict(saved["model"])
        opt.optimizer.load_state_dict(saved["optimizer"])
        opt.scheduler.load_state_dict(saved["scheduler"])
        opt.scaler.load_state_dict(saved["scaler"])
        if opt.average is not None:
            opt.average.load_state_dict(saved["average"])
        restore_rng(saved["rng"], self.shuffle)
        run = saved["run"]
        run["epoch_rng"] = python_rng_state(run["epoch_rng"]) if run["epoch_rng"] is not None else None
        self.state = RunState(**run)
        return self.state
