"""``ner train`` (``ner-train``, ``train.py``): train from a YAML config; every planned write is checked
against every input first."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from .common import Parser, config_options, config_overrides


def run(argv: list[str], prog: Optional[str] = None) -> int:
    p = Parser(prog=prog, description="Train a sequence labeller from a YAML config.",
               parents=[config_options("experiment", "configs/reference.yaml", "training.epochs=3")])
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="train one model per seed in OUTPUT_DIR/seed-N and write OUTPUT_DIR/summary.json (mean ± std)")
    p.add_argument("--profile-startup", action="store_true",
                   help="print, at the end, where the wall time went outside the training epochs (start-up, "
                        "reading, model build, subword encoding, scoring, saving, plotting)")
    args = p.parse_args(argv)
    from ..config import load_config

    config = load_config(args.config, config_overrides(args))
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--seeds expects integers separated by commas, got {args.seeds!r}", "--seeds") from None
        if not seeds:
            raise UserError("--seeds expects at least one seed, e.g. --seeds 1,2,3", "--seeds")
    _check_training_paths(config, args.config, seeds)
    from ..training.phases import PHASES
    from ..training.trainer import train, train_seeds

    PHASES.verbose = args.profile_startup

    from .. import distributed

    try:
        if seeds:
            train_seeds(config, seeds, resume=args.resume, config_path=args.config, command=["train.py", *argv])
        else:
            train(config, resume=args.resume, config_path=args.config, command=["train.py", *argv])
    finally:
        distributed.shutdown()
    if args.profile_startup and os.environ.get("RANK", "0") == "0":  # rank 0 alone under torchrun
        import sys

        print(f"wall time by phase{' (the last seed)' if seeds else ''}:\n{PHASES.report()}", file=sys.stderr)
    return 0


def _check_training_paths(config: Any, config_path: str, seeds: Optional[list[int]]) -> None:
    """Everything ``train.py`` will write, against everything it reads, before anything is written.

    The config file may be the output directory's own ``config.yaml`` (``--config runs/x/config.yaml
    --resume``): the trainer then never rewrites it, so it is not a clash.
    """
    from ..model.encoder import looks_local, resolve_path
    from ..paths import Read, Write, check_no_clash, same_file
    from ..training.runlock import LOCK_NAME

    # What train.py writes in an output directory besides config.yaml.
    run_files, run_trees = ("metrics.jsonl", "training_curves.png", LOCK_NAME), ("model", "checkpoints", "tensorboard")

    reads = [Read("the config", config_path)]
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
        if not same_file(config_path, run / "config.yaml"):
            writes.append(Write("the output directory's config.yaml", run / "config.yaml"))
        writes += [Write(f"the output directory's {name}", run / name) for name in run_files]
        writes += [Write(f"the output directory's {name}/", run / name, tree=True) for name in run_trees]
    check_no_clash(reads, writes)


