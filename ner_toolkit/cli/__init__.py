"""Command lines: ``train.py`` / ``ner-train``, ``predict.py`` / ``ner-predict``, ``ner-evaluate``.

User errors end with exit code 2 and one line ``error: PATH:LINE: ...`` on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .errors import UserError



def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """The toolkit's own Python warnings (e.g. the CRF package's, which cannot import ``errors``) as one
    ``warning: ...`` line like every other; anything else goes to ``show`` (Python's format)."""
    def show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                     line: Optional[str] = None) -> None:
        text = str(message)
        if text.startswith("ner_toolkit: "):
            print(f"warning: {text[len('ner_toolkit: '):]}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def _guard(main: Callable[[list[str]], int], argv: Optional[Sequence[str]]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    previous = _terminate_as_exception()
    from .atomic import guarded_stdout

    try:
        # guarded_stdout: stdout on a full disk is one error line, also for its last flush.
        with warnings.catch_warnings(), guarded_stdout():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return main(list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # `predict.py ... | head`: the reader has gone; end quietly, as `yes | head` does.
        _silence_stdout()
        return 141
    except OSError as exc:
        from .atomic import write_fault

        reason = write_fault(exc)
        if reason is None:
            raise
        # A fault on a path no atomic write owns (a directory that cannot be created): still the
        # user's to fix, still one line.
        print(str(UserError(f"cannot write: {reason}", exc.filename)), file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that every pending ``finally`` (temporary files of the
    write in progress, the output directory's lock) runs before the process exits with 143."""


def _terminate_as_exception() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers belong to the main thread

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: same one-line format, exit 2
        raise UserError(f"{message} (see --help)", self.prog)


def _train(argv: list[str]) -> int:
    p = _Parser(prog="train.py", description="Train a sequence labeller from a YAML config.")
    p.add_argument("--config", required=True, help="YAML experiment config (see configs/reference.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.epochs=3 (repeatable; value parsed as YAML)")
    p.add_argument("--output-dir", help="same as --set output_dir=DIR")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="train one model per seed in OUTPUT_DIR/seed-N and write OUTPUT_DIR/summary.json (mean ± std)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output directory from its newest checkpoint, exactly where it stopped")
    args = p.parse_args(argv)
    from .config import load_config

    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    config = load_config(args.config, tuple(overrides))
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--seeds expects integers separated by commas, got {args.seeds!r}", "--seeds") from None
        if not seeds:
            raise UserError("--seeds expects at least one seed, e.g. --seeds 1,2,3", "--seeds")
    _check_training_paths(config, args.config, seeds)
    from .training.trainer import train, train_seeds

    from . import distributed

    try:
        if seeds:
            train_seeds(config, seeds, resume=args.resume, config_path=args.config)
        else:
            train(config, resume=args.resume, config_path=args.config)
    finally:
        distributed.shutdown()
    return 0


def _check_training_paths(config: Any, config_path: str, seeds: Optional[list[int]]) -> None:
    """Everything ``train.py`` will write, against everything it reads, before anything is written.

    The config file may be the output directory's own ``config.yaml`` (``--config runs/x/config.yaml
    --resume``): the trainer then never rewrites it, so it is not a clash.
    """
    from .model.encoder import looks_local, resolve_path
    from .paths import Read, Write, check_no_clash, same_file
    from .training.runlock import LOCK_NAME

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


def _report(gold: list[list[str]], pred: list[list[str]], strict: bool, json_path: Optional[str], where: str,
            errors: bool = False) -> None:
    from .data.schemes import SchemeError
    from .evaluate import evaluate_spans, format_report

    try:
        result = evaluate_spans(gold, pred, strict=strict)
    except SchemeError as exc:
        raise UserError(str(exc), where) from None
    print(format_report(result))
    if errors:
        from .error_analysis import error_report, format_error_report

        result["errors"] = error_report(gold, pred, result["scheme"])
        print("\n" + format_error_report(result["errors"]))
    if json_path == "-":
        print(json.dumps(result, indent=2))
    elif json_path:
        from .atomic import atomic_write

        with atomic_write(json_path) as fh:
            fh.write(json.dumps(result, indent=2) + "\n")


def _predict(argv: list[str]) -> int:
    p = _Parser(prog="predict.py", description="Tag CoNLL files with a trained model.")
    p.add_argument("--model", required=True, help="model directory written by train.py (or its output_dir)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="CoNLL files or directories of files (- = stdin)")
    p.add_argument("--output", help="output file (one input) or directory (several); default or -: stdout")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32 | bf16 (autocast; fast on CPUs with AVX-512 BF16) | fp16 (CUDA); the CRF stays fp32")
    p.add_argument("--evaluate", action="store_true", help="print span P/R/F1 against the gold last column")
    p.add_argument("--strict", action="store_true", help="with --evaluate: strict span matching")
    p.add_argument("--json", metavar="PATH", help="with --evaluate: write the scores as JSON (- for stdout)")
    p.add_argument("--nbest", type=int, default=1, metavar="K",
                   help="also write the tags of the 2nd..K-th best paths as columns after the prediction")
    p.add_argument("--scores", action="store_true",
                   help="also write each token's tag probability and its span's probability (CRF marginals)")
    p.add_argument("--format", choices=("conll", "jsonl"), default="conll",
                   help="conll: input lines + prediction columns; jsonl: one JSON object per sentence with "
                        "tokens, tags, spans (label, offsets, confidence)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model directory run its own Python code (auto_map); only for a directory you "
                        "trust, never decided by the directory itself")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1", "--batch-size")
    from .predict import MAX_NBEST

    if not 1 <= args.nbest <= MAX_NBEST:
        raise UserError(f"--nbest must be from 1 to {MAX_NBEST}, got {args.nbest}", "--nbest")
    from . import distributed
    from .model.directory import resolve_model_dir
    from .paths import Read, Write, check_no_clash
    from .predict import Predictor, output_paths

    # Bad inputs or outputs fail before the model loads, and no output may replace an input.
    planned = output_paths(args.inputs, args.output, create=False)
    reads = [Read("the model directory", resolve_model_dir(args.model), tree=True)]
    reads += [Read("the input", source) for source, _ in planned]
    writes = [Write("--output", target) for _, target in planned if target is not None]
    if args.json:
        writes.append(Write("--json", args.json))
    check_no_clash(reads, writes)
    predictor = Predictor.load(args.model, args.device, args.batch_size, args.precision,
                               trust_remote_code=args.trust_remote_code)
    pairs = output_paths(args.inputs, args.output)
    try:
        gold, pred = _predict_files(args, predictor, pairs)
    finally:
        distributed.shutdown()
    if args.evaluate and gold and distributed.current().main:
        _report(gold, pred, args.strict, args.json, args.inputs[0])
    return 0


def _predict_files(args: argparse.Namespace, predictor: Any, pairs: list) -> tuple[list[list[str]], list[list[str]]]:
    """Predict every (input, output) pair; the gold and predicted tags of all inputs for --evaluate."""
    from . import distributed
    from .data.schemes import SchemeError, convert, detect_scheme
    from .predict import OutputOptions, predict_file, warn_unseen

    main = distributed.current().main
    gold: list[list[str]] = []
    pred: list[list[str]] = []
    for source, target in pairs:
        result = predict_file(predictor, source, target, evaluate=args.evaluate,
                              options=OutputOptions(args.nbest, args.scores, args.format))
        if not main:
            continue
        if target is not None:
            print(f"{source} -> {target}: {result.sentences} sentences, {result.tokens} tokens", file=sys.stderr)
        if args.evaluate and result.gold:
            try:
                scheme = detect_scheme(result.gold) if any(t != "O" for g in result.gold for t in g) \
                    else predictor.labels.output_scheme
            except SchemeError as exc:
                raise UserError(f"--evaluate: {exc}", source) from None
            warn_unseen(result.gold, predictor.labels, scheme, source)
            gold.extend(result.gold)
            pred.extend(convert(t, predictor.labels.output_scheme, scheme) for t in result.pred)
        elif args.evaluate:
            from .errors import warn

            warn("--evaluate: no gold column (single-column file), nothing scored", source)
    return gold, pred


def _evaluate(argv: list[str]) -> int:
    p = _Parser(prog="ner-evaluate", description="Span P/R/F1 from the last two columns (gold, predicted).")
    p.add_argument("file", help="CoNLL file whose last two columns are gold and predicted tags")
    p.add_argument("--strict", action="store_true", help="strict span matching (default: conlleval-compatible)")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON (- for stdout)")
    p.add_argument("--report", action="store_true",
                   help="also count per type: correct, wrong type (right boundaries), wrong boundaries, missed, spurious")
    p.add_argument("--gold-column", type=int, default=-2, metavar="N",
                   help="column of the gold tags (default -2: second to last)")
    p.add_argument("--pred-column", type=int, default=-1, metavar="N",
                   help="column of the predicted tags (default -1: last); for predict.py --nbest/--scores output "
                        "the prediction is the first column after the input's")
    args = p.parse_args(argv)
    from .data.conll import read_sentences
    from .data.schemes import tag_problem
    from .paths import Read, Write, check_no_clash

    if args.json:
        check_no_clash([Read("the scored file", args.file)], [Write("--json", args.json)])

    gold, pred = [], []
    for sentence in read_sentences(args.file):
        width = len(sentence.columns[0])
        if width < 2:
            raise UserError("need at least two columns (gold and predicted tags)", args.file, sentence.line_numbers[0])
        for column in (args.gold_column, args.pred_column):
            if not -width <= column < width:
                raise UserError(f"column {column} does not exist: the file has {width} columns; check "
                                f"--gold-column/--pred-column", args.file, sentence.line_numbers[0])
        g = [c[args.gold_column] for c in sentence.columns]
        q = [c[args.pred_column] for c in sentence.columns]
        for tags in (g, q):
            for tag, line in zip(tags, sentence.line_numbers):
                problem = tag_problem(tag)
                if problem:
                    raise UserError(problem, args.file, line)
        gold.append(g)
        pred.append(q)
    if not gold:
        raise UserError("no sentences to score", args.file)
    _report(gold, pred, args.strict, args.json, args.file, errors=args.report)
    return 0


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    return _guard(_train, argv)


def predict_main(argv: Optional[Sequence[str]] = None) -> int:
    return _guard(_predict, argv)


def evaluate_main(argv: Optional[Sequence[str]] = None) -> int:
    return _guard(_evaluate, argv)


def _console(main: Callable[[Optional[Sequence[str]]], int]) -> Callable[[], None]:
    return lambda: sys.exit(main(None))


train_console, predict_console, evaluate_console = _console(train_main), _console(predict_main), _console(evaluate_main)
