"""The Python training API: ``ner_toolkit.train(config, overrides=..., output_dir=...)`` runs what ``ner
train`` runs and returns a :class:`TrainResult`.

It never ends the process and never writes to stdout: a problem the user can fix raises
:class:`~ner_toolkit.errors.UserError` (``str()`` is the CLI's ``error: FILE:LINE: ...`` line), and the run's
progress and summary lines are ``logging`` records of the ``ner_toolkit`` loggers.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import UserError

__all__ = ["TrainResult", "train", "check_training_paths"]

ConfigSource = Union[str, "os.PathLike[str]", Mapping[str, Any], Any]  # a YAML path, a mapping or a Config
Overrides = Union[Sequence[str], Mapping[str, Any]]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a run left: ``model_dir`` loads with ``Predictor.load``; ``metrics`` is its ``metrics.json``
    (dev and test span P/R/F1 per type, calibration when fitted)."""

    output_dir: Path
    model_dir: Path
    best_epoch: int
    dev_f1: Optional[float]
    test_f1: Optional[float]
    seconds: float
    metrics: dict
    config: Any  # the resolved ner_toolkit.config.Config


def _override_strings(overrides: Overrides, output_dir: Optional[Union[str, "os.PathLike[str]"]]) -> tuple[str, ...]:
    """``--set`` strings from strings or a ``{key: value}`` mapping (a value is written as JSON, which YAML
    reads back as it was); ``output_dir`` last, so it wins as ``--output-dir`` does."""
    if isinstance(overrides, (str, bytes)):
        raise UserError(f"overrides is a sequence of KEY=VALUE strings or a mapping, not one string "
                        f"(write [{overrides!r}])", "overrides")
    if isinstance(overrides, Mapping):
        items = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    else:
        items = list(overrides)
    if output_dir is not None:
        items.append(f"output_dir={json.dumps(os.fspath(output_dir))}")
    return tuple(items)


def _load(config: ConfigSource, overrides: tuple[str, ...]) -> tuple[Any, Optional[str]]:
    """The validated Config and the file it was read from (None for a mapping or a Config)."""
    from . import config as schema_config

    if isinstance(config, (str, os.PathLike)):
        return schema_config.load_config(config, overrides), os.fspath(config)
    if isinstance(config, schema_config.Config):
        raw = schema_config.to_dict(config)
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    else:
        raise UserError(f"config is a YAML path, a mapping or a Config, not {type(config).__name__}", "config")
    return schema_config.from_dict(raw, "config", overrides), None  # the schema applies the --set strings


def train(config: ConfigSource, overrides: Overrides = (), output_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
          *, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a tagger as ``ner train`` does and return what it left.

    ``config``: a YAML file's path, a mapping of the same keys, or a ``Config``. ``overrides``: ``--set``
    strings (``"training.epochs=3"``, the value read as YAML) or a ``{"training.epochs": 3}`` mapping.
    ``output_dir`` replaces the config's. ``resume`` continues the run there; ``overwrite`` lets it replace a
    finished model there (refused otherwise). Raises :class:`UserError` for anything the user can fix.
    On a ``torchrun`` rank other than 0 (rank 0 alone scores and writes) the result holds the paths only.
    """
    source_overrides = _override_strings(overrides, output_dir)
    resolved, path = _load(config, source_overrides)
    check_training_paths(resolved, path, None, resume=resume, overwrite=overwrite)
    from . import distributed
    from .training.trainer import train as run

    try:
        # The summary line the command prints on stdout is a log record here: a library never prints.
        summary = run(resolved, resume=resume, config_path=path, command=["ner_toolkit.train(...)"],
                      announce=log.info)
    finally:
        distributed.shutdown()  # under torchrun, as ner train: the process group ends with the run
    if not summary:  # a torchrun rank other than 0: rank 0 alone scores and writes
        return TrainResult(Path(resolved.output_dir), Path(resolved.output_dir) / "model", 0, None, None, 0.0, {},
                           resolved)
    model_dir = Path(summary["model_dir"])
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    return TrainResult(Path(resolved.output_dir), model_dir, summary["best_epoch"], summary["dev_f1"],
                       summary["test_f1"], summary["seconds"], metrics, resolved)


def check_training_paths(config: Any, config_path: Optional[str], seeds: Optional[list[int]], *,
                         resume: bool = False, overwrite: bool = False) -> None:
    """Everything a training run will write, against everything it reads, before anything is written; and
    a finished model in an output directory is never replaced unless asked (``--overwrite``) or continued
    (``--resume``).

    The config file may be the output directory's own ``config.yaml`` (``--config runs/x/config.yaml
    --resume``): the trainer then never rewrites it, so it is not a clash.
    """
    if overwrite and resume:
        raise UserError("--overwrite starts a new run and --resume continues one: give one of them", "--overwrite")
    from .model.encoder import looks_local, resolve_path
    from .paths import Read, Write, check_no_clash, same_file
    from .training.runlock import LOCK_NAME

    # What a run writes in an output directory besides config.yaml.
    run_files, run_trees = ("metrics.jsonl", "training_curves.png", LOCK_NAME), ("model", "checkpoints", "tensorboard")

    reads = [Read("the config", config_path)] if config_path is not None else []
    for key in ("train", "dev", "test"):
        if getattr(config.data, key):
            reads.append(Read(f"data.{key}", getattr(config.data, key)))
    if config.model.words.vectors:
        reads.append(Read("model.words.vectors", config.model.words.vectors))
    for key in ("name_or_path", "tokenizer"):
        value = getattr(config.model.encoder, key)
        if value and looks_local(value):
            reads.append(Read(f"model.encoder.{key}", resolve_path(value), tree=True))
    root = Path(config.output_dir)
    run_dirs = [root / f"seed-{seed}" for seed in seeds] if seeds else [root]
    writes = [Write("the seed summary", root / "summary.json")] if seeds else []
    for run in run_dirs:
        if not resume and not overwrite and (run / "model" / "metrics.json").is_file():
            raise UserError("holds a finished model that this run would replace: add --overwrite to replace it, "
                            "--resume to continue its run, or --set output_dir=NEW_DIR to keep it", run)
        if config_path is None or not same_file(config_path, run / "config.yaml"):
            writes.append(Write("the output directory's config.yaml", run / "config.yaml"))
        writes += [Write(f"the output directory's {name}", run / name) for name in run_files]
        writes += [Write(f"the output directory's {name}/", run / name, tree=True) for name in run_trees]
    check_no_clash(reads, writes)
