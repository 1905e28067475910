"""``ner select`` (``ner-select``): choose the sentences to annotate next, the ones the model is least sure of
(active learning).

    ner-select --model DIR POOL... (--budget N | --budget-tokens T)
               [--strategy entropy|least-confidence|margin|random] [--output PATH] [--format conll|label-studio|jsonl|hf] [--scores PATH] [--seed S]
               [--batch-size B] [--device D] [--precision fp32|bf16|fp16]

The POOL files are CoNLL files of unlabelled sentences: one column (tokens) or more, the tokens in the
model's token column (the first, unless the model was trained otherwise), as predict.py reads them;
``-DOCSTART-`` lines separate documents. Every sentence is scored by the strategy (see
``ner_toolkit.selection``: higher = more uncertain), and the ``N`` most uncertain, most uncertain first
(equal scores in pool order), are written pre-annotated with the model's predicted tags. With
``--budget-tokens T`` instead, the budget is what annotation costs, tokens: down the same ranking, every
sentence that still fits in what is left of ``T`` is chosen (one that does not fit is passed over).

* ``--format conll`` (default): ``token<TAB>TAG`` lines, a blank line after each sentence: a file that
  train.py reads as ``data.train`` once an annotator has corrected the tags.
* ``--format label-studio``: a JSON array of Label Studio tasks (the ``label-studio`` writer of
  ``formats.py``, as ``predict.py --format label-studio`` writes them); each task's ``data`` also holds
  ``pool`` and ``line`` (where the sentence is), ``rank`` (1 = most uncertain) and ``uncertainty``.
* the registry's other formats (``jsonl``, ``hf``) as predict.py writes them; ``jsonl`` records carry the
  same ``data`` object.

``--output`` defaults to stdout. ``--scores PATH`` (``-``: stdout) writes a TSV (``pool``, ``line``, ``rank``,
``uncertainty``) of the chosen sentences; ``line`` is a sentence's first line in its pool file. A one-line
summary goes to stderr. Outputs are written atomically and never over an input (the pools, the model
directory). A budget of at least the pool's size (sentences or tokens) selects the whole pool, with a
warning. ``--seed`` is the draw of ``random`` (default 0). User errors end with exit code 2 and one line ``error: PATH[:LINE]: ...``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from ..errors import UserError
from .common import Parser, checked_threads, device_options, model_options, threads_options


@dataclass
class Pool:
    """Every sentence of the pool files, in order: tokens, where it is, and its document number (each
    ``-DOCSTART-`` and each new file starts a document)."""

    tokens: list[list[str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    documents: list[int] = field(default_factory=list)


def read_pool(paths: list[str], token_column: int) -> Pool:
    from ..data.conll import Sentence, is_docstart, read_conll

    pool = Pool()
    document = 0
    for path in paths:
        document += 1  # files never share a document (its neighbours are context for a context model)
        for item in read_conll(path, token_column=token_column):
            if is_docstart(item):
                document += 1
            elif isinstance(item, Sentence):
                pool.tokens.append(item.tokens)
                pool.files.append(path)
                pool.lines.append(item.line_numbers[0])
                pool.documents.append(document)
    return pool


def _parser(prog: Optional[str] = None) -> Parser:
    from .. import formats
    from ..selection import STRATEGIES

    p = Parser(prog=prog, description="Choose the pool sentences to annotate next: the N the model is least sure "
                                      "of, pre-annotated with its predicted tags.",
               parents=[model_options(), device_options(), threads_options()])
    p.add_argument("pools", nargs="+", metavar="POOL", help="CoNLL files of unlabelled sentences (tokens first)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=int, metavar="N", help="how many sentences to choose")
    budget.add_argument("--budget-tokens", type=int, metavar="T",
                        help="or how many tokens to choose: the most uncertain sentences that fit in T tokens")
    p.add_argument("--strategy", choices=STRATEGIES, default="entropy",
                   help="least-confidence: 1 - P(best path)^(1/n); entropy: mean token marginal entropy; margin: "
                        "1 - (P(best) - P(2nd best)); random: a seeded shuffle (default entropy)")
    p.add_argument("--output", help="where the chosen sentences go (default or -: stdout)")
    p.add_argument("--format", choices=formats.names(), default="conll",
                   help="conll: token and predicted tag per line, training data once corrected; label-studio: "
                        "pre-annotation tasks; the others as predict.py writes them (default conll)")
    p.add_argument("--scores", metavar="PATH", help="also write a TSV: pool, line, rank, uncertainty")
    p.add_argument("--seed", type=int, default=0, help="seed of --strategy random (default 0)")
    return p


def _check_inputs(args: Any) -> None:
    """Everything that can fail before the model loads: budget, pool files, model directory, clashes."""
    from ..data.conll import check_text_file
    from ..export import is_export
    from ..model.directory import resolve_model_dir
    from ..paths import STDIO, Read, Write, check_no_clash

    for name, value in (("--budget", args.budget), ("--budget-tokens", args.budget_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}", name)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1", "--batch-size")
    if args.scores == STDIO and args.output in (None, STDIO):
        raise UserError("--scores - and the selection would both go to stdout; give --output or --scores a file",
                        "--scores")
    for path in args.pools:
        if not Path(path).is_file():
            raise UserError("pool file not found; check the path (ner-select reads CoNLL files)", path)
        check_text_file(path)
    model_dir = resolve_model_dir(args.model)
    if is_export(model_dir):
        raise UserError("ner-select needs the model directory train.py wrote (its CRF runs in PyTorch), not an "
                        "ONNX export", args.model)
    reads = [Read("the model directory", model_dir, tree=True)] + [Read("the pool file", p) for p in args.pools]
    writes = [Write(label, path) for label, path in (("--output", args.output), ("--scores", args.scores))
              if path and path != STDIO]
    check_no_clash(reads, writes)


def run(argv: list[str], prog: Optional[str] = None) -> int:
    args = _parser(prog).parse_args(argv)
    threads_wanted = checked_threads(args)
    _check_inputs(args)
    from .. import threads
    from ..atomic import atomic_write
    from ..data.text import Document
    from ..errors import warn
    from ..formats import Options, writer
    from ..predict import Predictor
    from ..selection import select, select_tokens, uncertainties

    threads.apply(threads_wanted)
    predictor = Predictor.load(args.model, args.device, args.batch_size, args.precision,
                               trust_remote_code=args.trust_remote_code)
    pool = read_pool(args.pools, predictor.token_column)
    if not pool.tokens:
        raise UserError("the pool holds no sentences (token lines separated by blank lines)", args.pools[0])
    lengths = [len(t) for t in pool.tokens]
    if args.budget is not None and args.budget > len(pool.tokens):
        warn(f"--budget {args.budget} is more than the pool's {len(pool.tokens)} sentences: all of them are "
             f"selected", "--budget")
    if args.budget_tokens is not None and args.budget_tokens < min(lengths):
        raise UserError(f"no pool sentence fits in {args.budget_tokens} tokens (the shortest has {min(lengths)})",
                        "--budget-tokens")
    if args.budget_tokens is not None and args.budget_tokens >= sum(lengths):
        warn(f"--budget-tokens {args.budget_tokens} is at least the pool's {sum(lengths)} tokens: all of its "
             f"sentences are selected", "--budget-tokens")
    scores = uncertainties(predictor, pool.tokens, args.strategy, pool.documents, args.seed)
    chosen = select(scores, args.budget) if args.budget is not None else select_tokens(scores, lengths,
                                                                                       args.budget_tokens)
    fmt = writer(args.format)
    # Tags (and for label-studio the span probabilities) for the chosen sentences only; the rest of
    # the pool is still their context when the model reads documents.
    predictions = predictor.predict_detailed(pool.tokens, scores=fmt.needs_scores, documents=pool.documents,
                                             only=chosen)
    options = Options(fmt=args.format)

    def write(out: IO[str]) -> None:
        out.write(fmt.header(options))
        for rank, (index, prediction) in enumerate(zip(chosen, predictions), 1):
            where = {"pool": pool.files[index], "line": pool.lines[index], "rank": rank,
                     "uncertainty": round(scores[index], 6)}
            unit = Document.from_tokens(pool.tokens[index], line=pool.lines[index], fields={"data": where})
            out.write(fmt.write(unit, prediction, options))
        out.write(fmt.footer(options))

    if args.output and args.output != "-":
        with atomic_write(args.output) as fh:
            write(fh)
    else:
        write(sys.stdout)
        sys.stdout.flush()
    if args.scores:
        rows = "pool\tline\trank\tuncertainty\n" + "".join(
            f"{pool.files[i]}\t{pool.lines[i]}\t{rank}\t{scores[i]:.6f}\n" for rank, i in enumerate(chosen, 1))
        if args.scores == "-":
            sys.stdout.write(rows)
        else:
            with atomic_write(args.scores) as fh:
                fh.write(rows)
    picked = [scores[i] for i in chosen]
    tokens = sum(len(pool.tokens[i]) for i in chosen)
    print(f"ner-select: {len(chosen)} of {len(pool.tokens)} pool sentences ({tokens} tokens) by {args.strategy}, "
          f"uncertainty {picked[0]:.4f} to {picked[-1]:.4f} -> {args.output or 'stdout'}", file=sys.stderr)
    return 0
