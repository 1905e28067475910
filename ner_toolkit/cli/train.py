"""``ner train`` (``ner-train``, ``train.py``): train from a YAML config; every planned write is checked
against every input first."""
from __future__ import annotations

import os
from typing import Optional

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
    p.add_argument("--overwrite", action="store_true",
                   help="replace the finished model of an earlier run in the output directory (refused without it: "
                        "re-running a config never silently replaces its model)")
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
    from ..api import check_training_paths

    check_training_paths(config, args.config, seeds, resume=args.resume, overwrite=args.overwrite)
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
