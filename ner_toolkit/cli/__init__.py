"""The ``ner`` command: ``ner train|predict|evaluate|serve|export|select|pretrain ...``, one sub-command per row
of ``COMMANDS``.

Adding a sub-command is two files: its module in this package, with ``run(argv, prog=None) -> int`` that
builds its parser on :class:`.common.Parser` and the shared parent parsers of :mod:`.common`, and its row
in ``COMMANDS``. ``ner --help`` then lists it, ``ner NAME ...`` runs it, and ``NAME_main(argv)`` /
``NAME_console()`` of this package are its in-process and console-script aliases (a ``ner-NAME`` script
is a line in setup.cfg, for the commands that had one before ``ner`` existed).

Dependency arrows point one way: this table imports the command modules, lazily (when one runs: ``ner
--help`` and ``ner evaluate`` import no torch); a command module imports only :mod:`.common`; the guard
(:mod:`.guard`: one-line errors, exit codes, interrupts) is applied here, around every command.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Protocol, Sequence

from ..errors import UserError
from .common import Parser
from .guard import exit_process, guard

__all__ = ["COMMANDS", "Command", "main", "console", "command_main", "command_console", "exit_process"]


class CommandModule(Protocol):
    def run(self, argv: list[str], prog: Optional[str] = None) -> int:
        """Run the command on ``argv`` (its arguments, without its name); ``prog`` names it in usage and
        errors (``ner train``, ``ner-train``, ``train.py``)."""


@dataclass(frozen=True)
class Command:
    """One sub-command: ``ner NAME``; ``module`` is imported (relative to this package, or absolute) only
    when the command runs; ``help`` is its line in ``ner --help``."""

    name: str
    module: str
    help: str

    def load(self) -> CommandModule:
        return importlib.import_module(self.module, __name__)  # type: ignore[return-value]


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("train", ".train", "train a tagger from a YAML config"),
    Command("predict", ".predict", "tag CoNLL files, raw text or JSONL with a trained model"),
    Command("evaluate", ".evaluate", "span P/R/F1 of a predicted file (CoNLL, or JSONL against gold)"),
    Command("serve", ".serve", "serve a trained model over HTTP with dynamic batching"),
    Command("export", ".export", "export a trained model to ONNX, for prediction without PyTorch"),
    Command("select", ".select", "choose the pool sentences to annotate next (active learning)"),
    Command("pretrain", ".pretrain", "pretrain an ALBERT encoder and its vocabulary on raw text"),
)}


def _parser() -> Parser:
    """``ner``'s own parser: ``--help`` (the table, one line per command) and ``--version``."""
    p = Parser(prog="ner", description="Named-entity recognition with an encoder -> BiLSTM -> CRF tagger: train "
                                       "from a YAML config, predict, evaluate, serve, export.",
               epilog="`ner COMMAND --help` lists a command's options. The scripts ner-train, ner-predict, ... "
                      "and, in a checkout, `python train.py` and `python predict.py` are the same commands.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = p.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)
    for command in COMMANDS.values():
        commands.add_parser(command.name, help=command.help, add_help=False)  # listed only: run() parses
    return p


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ner_toolkit")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _ner(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        _parser().parse_args(argv[:1])  # --help and --version exit here; no command is one error line
        raise UserError("a command comes first: ner COMMAND [ARGS...] (see --help)", "ner")
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown command {name!r}; {hint}the commands are {', '.join(COMMANDS)} (see ner --help)",
                        "ner")
    return COMMANDS[name].load().run(argv[1:], f"ner {name}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ner ARGS`` (default: ``sys.argv[1:]``) under the guard; returns the exit code."""
    return guard(_ner, argv)


def console() -> NoReturn:
    """The ``ner`` console script (and ``python -m ner_toolkit``)."""
    exit_process(main())


def command_main(name: str, prog: Optional[str] = None) -> Callable[[Optional[Sequence[str]]], int]:
    """The alias factory: ``ner NAME`` as a function of its arguments (default ``sys.argv[1:]``) that returns
    the exit code; ``prog`` (default ``ner-NAME``) is the name its usage and errors show."""
    command = COMMANDS[name]
    shown = prog or f"ner-{name}"

    def run_command(argv: Optional[Sequence[str]] = None) -> int:
        return guard(lambda args: command.load().run(args, shown), argv)

    run_command.__name__ = run_command.__qualname__ = f"{name}_main"
    return run_command


def command_console(name: str, prog: Optional[str] = None) -> Callable[[], NoReturn]:
    """``ner NAME`` as a console script (``ner-NAME``, ``python train.py``): ends the process with its code."""
    run_command = command_main(name, prog)

    def run_console() -> NoReturn:
        exit_process(run_command(None))

    run_console.__name__ = run_console.__qualname__ = f"{name}_console"
    return run_console


def __getattr__(attribute: str) -> Any:
    """``NAME_main`` and ``NAME_console`` for every command of the table (``ner-train = ner_toolkit.cli:
    train_console`` in setup.cfg, ``from ner_toolkit.cli import predict_main``)."""
    name, _, kind = attribute.rpartition("_")
    if name in COMMANDS and kind == "main":
        return command_main(name)
    if name in COMMANDS and kind == "console":
        return command_console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
