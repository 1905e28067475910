"""``ner predict`` (``ner-predict``, ``predict.py``): tag CoNLL, raw-text or JSONL files with a trained model."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import UserError
from .common import Parser, checked_threads, device_options, model_options, speed_options, threads_options


def _parser(prog: Optional[str] = None) -> Parser:
    from .. import formats
    from ..data.text import TOKENIZERS
    from ..streaming import INPUT_FORMATS

    p = Parser(prog=prog, description="Tag CoNLL files, raw text or JSONL with a trained model.",
               parents=[model_options(), device_options(), speed_options(), threads_options()])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories of files (- = stdin)")
    p.add_argument("--output", help="output file (one input) or directory (several); default or -: stdout")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default="conll",
                   help="conll: token columns; text: one document per line (raw text); jsonl: one object per "
                        "line with \"text\" (raw) or \"tokens\" (pre-tokenised), other keys kept (default conll)")
    p.add_argument("--document-per-file", action="store_true",
                   help="with --input-format text: each file is one document instead of one per line")
    p.add_argument("--word-tokenizer", choices=TOKENIZERS,
                   help="how raw text is split into words (default: the model's, as in its training)")
    p.add_argument("--format", choices=formats.names(), default="conll", help=formats.describe())
    p.add_argument("--evaluate", action="store_true",
                   help="print span P/R/F1 against the gold: the model's label column (conll; data.label_column, "
                        "the last by default) or the entities (jsonl, exact character offsets); on stderr when "
                        "the predictions go to stdout")
    p.add_argument("--strict", action="store_true", help="with --evaluate on CoNLL: strict span matching")
    p.add_argument("--ignore-unknown", action="store_true",
                   help="with --evaluate on CoNLL: leave gold positions tagged --unknown-tag out of the score")
    p.add_argument("--unknown-tag", default="?", metavar="TAG",
                   help="with --ignore-unknown: the gold tag of unannotated tokens (default ?)")
    p.add_argument("--json", metavar="PATH",
                   help="with --evaluate: write the scores as JSON (- for stdout, stderr when the predictions go there)")
    p.add_argument("--nbest", type=int, default=1, metavar="K",
                   help="also write the tags of the 2nd..K-th best paths (conll columns, jsonl nbest)")
    p.add_argument("--scores", action="store_true",
                   help="also write each token's tag probability and its span's probability (CRF marginals)")
    return p


def run(argv: list[str], prog: Optional[str] = None) -> int:
    args = _parser(prog).parse_args(argv)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1", "--batch-size")
    threads_wanted = checked_threads(args)
    from .. import threads
    from ..predict import MAX_NBEST

    if not 1 <= args.nbest <= MAX_NBEST:
        raise UserError(f"--nbest must be from 1 to {MAX_NBEST}, got {args.nbest}", "--nbest")
    if args.document_per_file and args.input_format != "text":
        raise UserError("--document-per-file needs --input-format text", "--document-per-file")
    if args.ignore_unknown and not args.evaluate:
        raise UserError("--ignore-unknown only changes scoring: add --evaluate", "--ignore-unknown")
    if args.evaluate and args.input_format == "text":
        raise UserError("--evaluate needs gold: use --input-format conll or jsonl (raw text has none)", "--evaluate")
    from .. import distributed
    from ..model.directory import resolve_model_dir
    from ..paths import Read, Write, check_no_clash
    from ..predict import Predictor

    # Bad inputs or outputs fail before the model loads, and no output may replace an input.
    planned = output_paths(args.inputs, args.output, create=False)
    reads = [Read("the model directory", resolve_model_dir(args.model), tree=True)]
    reads += [Read("the input", source) for source, _ in planned]
    writes = [Write("--output", target) for _, target in planned if target is not None]
    if args.json:
        writes.append(Write("--json", args.json))
    check_no_clash(reads, writes)
    threads.apply(threads_wanted)
    predictor = Predictor.load(args.model, args.device, args.batch_size, args.precision,
                               trust_remote_code=args.trust_remote_code, quantize=args.quantize,
                               compile=args.compile)
    pairs = output_paths(args.inputs, args.output)
    try:
        scored = _predict_files(args, predictor, pairs)
    finally:
        distributed.shutdown()
    if args.evaluate and distributed.current().main:
        from .evaluate import report, report_offsets

        # Predictions on stdout stay parseable: the scores (and --json -) go to stderr then.
        to_stderr = any(target is None for _, target in pairs)
        with contextlib.redirect_stdout(sys.stderr) if to_stderr else contextlib.nullcontext():
            if scored[0]:  # tags: CoNLL, or JSONL rows of tokens + tags
                report(scored[0], scored[1], args.strict, args.json, args.inputs[0], unknown_tag=_unknown(args),
                       scheme=scored[4][0] if len(set(scored[4])) == 1 else None)
            if scored[2]:  # character spans: JSONL texts with entities
                report_offsets(scored[2], scored[3], None if scored[0] else args.json)
    return 0


def _unknown(args: argparse.Namespace) -> Optional[str]:
    """The gold tag left out of scoring, None when every gold tag is scored."""
    return args.unknown_tag if args.ignore_unknown else None


def _predict_files(args: argparse.Namespace, predictor: Any, pairs: list) -> tuple[list, list, list, list, list]:
    """Predict every (input, output) pair; for --evaluate the gold and predicted tags of all CoNLL
    inputs, the gold and predicted character spans of all JSONL documents, and each tagged input's gold scheme
    (the predictions are converted to it)."""
    from .. import distributed
    from ..data.schemes import SchemeError, convert
    from ..errors import warn
    from ..evaluate import gold_scheme, warn_unseen
    from ..streaming import OutputOptions, predict_file

    main = distributed.current().main
    gold: list[list[str]] = []
    pred: list[list[str]] = []
    gold_offsets: list = []
    pred_offsets: list = []
    schemes: list = []
    for source, target in pairs:
        options = OutputOptions(args.nbest, args.scores, args.format, predictor.label_column,
                                input_format=args.input_format,
                                document_per_file=args.document_per_file, word_tokenizer=args.word_tokenizer)
        result = predict_file(predictor, source, target, evaluate=args.evaluate, options=options,
                              unknown_tag=_unknown(args))
        if not main:
            continue
        if target is not None:
            unit = "sentences" if args.input_format == "conll" else "documents"
            print(f"{source} -> {target}: {result.sentences} {unit}, {result.tokens} tokens", file=sys.stderr)
        if result.alignment is not None and (result.alignment.expanded or result.alignment.skipped):
            for line in result.alignment.lines():
                print(line, file=sys.stderr)
        if not args.evaluate:
            continue
        if result.gold:
            try:
                scheme = gold_scheme(result.gold, predictor.labels.output_scheme, _unknown(args))
            except SchemeError as exc:
                raise UserError(f"--evaluate: {exc}", source) from None
            warn_unseen(result.gold, predictor.labels.types, scheme, source, _unknown(args))
            gold.extend(result.gold)
            pred.extend(convert(t, predictor.labels.output_scheme, scheme) for t in result.pred)
            schemes.append(scheme)
        if result.gold_offsets:
            missing = sorted({label for doc in result.gold_offsets for label, _, _ in doc} - predictor.labels.types)
            if missing:
                warn(f"gold entity types never seen in training: {', '.join(missing)}; their spans count as misses",
                     source)
            gold_offsets.extend(result.gold_offsets)
            pred_offsets.extend(result.pred_offsets)
        if not result.gold and not result.gold_offsets:
            what = "no gold column (single-column file)" if args.input_format == "conll" else "no gold entities"
            warn(f"--evaluate: {what}, nothing scored", source)
    return gold, pred, gold_offsets, pred_offsets, schemes


def output_paths(inputs: Sequence[str], output: Optional[str], create: bool = True) -> list[tuple[Path, Optional[Path]]]:
    """Pair each input file with its output path; a directory input expands to its files.

    With several inputs ``output`` is a directory, created when ``create`` (otherwise only checked, so that
    a failure before any prediction leaves nothing behind).
    """
    from ..atomic import is_stream
    from ..data.conll import check_text_file
    from ..paths import STDIO

    files: list[Path] = []
    for name in inputs:
        p = Path(name)
        if name == STDIO:
            if len(inputs) > 1:
                raise UserError("- (standard input) must be the only input", name)
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not found:
                raise UserError("input directory holds no files", p)
            files.extend(found)
        elif p.is_file() or is_stream(p):
            files.append(p)
        else:
            raise UserError("input file not found; check the path", p)
    for f in files:
        check_text_file(f)  # an unreadable or binary file fails before any output is written
    several = len(files) > 1 or any(Path(n).is_dir() for n in inputs)
    if not several:
        target = Path(output) if output and output != STDIO else None
        return [(files[0], target)]
    if not output:
        raise UserError("several inputs need --output DIR (one output file per input)", inputs[0])
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("with several inputs --output must be a directory", out_dir)
    if create:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output directory ({exc.strerror}); choose another --output",
                            out_dir) from None
    else:
        ancestor = out_dir
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"cannot create the output directory: {ancestor} is not a directory; choose another "
                            f"--output", out_dir)
    pairs, seen = [], set()
    for f in files:
        target = out_dir / f.name
        if target in seen:
            raise UserError(f"two inputs are named {f.name}; their outputs would collide in {out_dir}", f)
        seen.add(target)
        pairs.append((f, target))
    return pairs
