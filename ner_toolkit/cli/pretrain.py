"""``ner pretrain`` (``ner-pretrain``): ``tokenizer`` trains a SentencePiece vocabulary on raw text; ``train``
pretrains an ALBERT (MLM + SOP) from a YAML config. Every planned write is checked against every input first."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from .common import Parser, config_options, config_overrides

MAX_VOCABULARY = 1_000_000


def run(argv: list[str], prog: Optional[str] = None) -> int:
    from ..pretraining.data import CORPUS_FORMATS

    p = Parser(prog=prog, description="Pretrain an ALBERT encoder on raw text (MLM + SOP), and train its "
                                      "SentencePiece vocabulary.")
    commands = p.add_subparsers(dest="command", required=True, metavar="{tokenizer,train}")
    tok = commands.add_parser("tokenizer", help="train a SentencePiece unigram vocabulary -> an HF tokenizer directory",
                              description="Train a SentencePiece unigram vocabulary (ALBERT's kind) on raw text or "
                                          "CoNLL token columns and save it as an HF tokenizer directory.")
    tok.add_argument("--input", nargs="+", required=True, metavar="FILE",
                     help="raw text (one sentence per line) or CoNLL files")
    tok.add_argument("--vocab-size", type=int, required=True, metavar="N",
                     help="pieces in the vocabulary (a soft limit: a small corpus may give fewer)")
    tok.add_argument("--output", required=True, metavar="DIR", help="the tokenizer directory to write")
    tok.add_argument("--format", choices=CORPUS_FORMATS, default="auto",
                     help="input format (auto: conll for files that look like CoNLL columns)")
    tok.add_argument("--token-column", type=int, default=0, help="CoNLL files: the token column (default 0)")
    tok.add_argument("--character-coverage", type=float, default=0.99995,
                     help="share of the characters the vocabulary covers; the rarest others become <unk>")
    tok.add_argument("--seed", type=int, default=42, help="SentencePiece's sampling seed")
    commands.add_parser("train", help="pretrain ALBERT (MLM + SOP) from a YAML config",
                        description="Pretrain ALBERT (MLM with n-gram masking + SOP) on raw text.",
                        parents=[config_options("pretraining", "configs/pretrain_sample.yaml", "training.steps=100")])
    args = p.parse_args(argv)
    if args.command == "tokenizer":
        return _tokenizer(args)
    return _train(args, argv)


def _tokenizer(args: Any) -> int:
    from ..paths import Read, Write, check_no_clash

    if not 16 <= args.vocab_size <= MAX_VOCABULARY:
        raise UserError(f"--vocab-size must be from 16 to {MAX_VOCABULARY:,}, got {args.vocab_size}", "--vocab-size")
    if not 0.9 <= args.character_coverage <= 1.0:
        raise UserError(f"--character-coverage must be from 0.9 to 1, got {args.character_coverage}",
                        "--character-coverage")
    for name in args.input:
        if not Path(name).is_file():
            raise UserError("input file not found; check --input", name)
    check_no_clash([Read("--input", name) for name in args.input], [Write("--output", args.output, tree=True)])
    _check_formats(args.input, args.format)
    from ..pretraining.vocab import train_vocabulary

    train_vocabulary(args.input, args.vocab_size, args.output, args.format, args.token_column,
                     args.character_coverage, args.seed)
    return 0


def _train(args: Any, argv: list[str]) -> int:
    from ..pretraining.config import load_pretrain_config

    config = load_pretrain_config(args.config, config_overrides(args))
    if not config.data.files:
        raise UserError("`data.files` is required: set it in the config or with --set data.files=[PATH]", args.config)
    for name in config.data.files:
        if not Path(name).is_file():
            raise UserError("data file not found; check `data.files`", name)
    _check_paths(config, args.config)
    _check_formats(config.data.files, config.data.format)
    from .. import distributed
    from ..pretraining.trainer import pretrain

    try:
        pretrain(config, resume=args.resume, config_path=args.config)
    finally:
        distributed.shutdown()
    return 0


def _check_paths(config: Any, config_path: Optional[str]) -> None:
    """What ``ner-pretrain train`` writes in OUTPUT_DIR against everything it reads, before any write."""
    from ..model.encoder import looks_local, resolve_path
    from ..paths import Read, Write, check_no_clash, same_file
    from ..training.runlock import LOCK_NAME

    reads = [Read("the config", config_path)] if config_path else []
    reads += [Read("data.files", name) for name in config.data.files]
    for key in ("name_or_path", "tokenizer"):
        value = getattr(config.model.encoder, key)
        if value and looks_local(value):
            reads.append(Read(f"model.encoder.{key}", resolve_path(value), tree=True))
    root = Path(config.output_dir)
    writes = [Write(f"the output directory's {name}", root / name)
              for name in ("metrics.jsonl", "pretraining_curves.png", LOCK_NAME)]
    if not (config_path and same_file(config_path, root / "config.yaml")):
        writes.append(Write("the output directory's config.yaml", root / "config.yaml"))
    writes += [Write(f"the output directory's {name}/", root / name, tree=True)
               for name in ("encoder", "pretraining_model", "checkpoints")]
    check_no_clash(reads, writes)


def _check_formats(files: list[str], fmt: str) -> None:
    """With format auto, each file's format is decided now: a file that cannot be told (raw text of lines
    with equal word counts) fails before any work, not inside the vocabulary trainer or the data loader."""
    if fmt == "auto":
        from ..pretraining.data import detect_format

        for name in files:
            detect_format(Path(name))
