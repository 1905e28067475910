"""What the sub-commands share: the parser whose errors are one ``error:`` line, and the parent parsers of
the options several commands declare (``argparse``'s ``parents=``), each option written once.

A leaf: it imports no command module and nothing of the package ``__init__``, and no torch (the choice
lists come from torch-free modules), so building a parser stays cheap. Choices are read from the modules
that own them, never spelled here.
"""
from __future__ import annotations

import argparse
from typing import Optional

from ..errors import UserError
from ..model.modes import PRECISIONS, QUANTIZATIONS
from ..schema.fields import MAX_THREADS
from ..threads import AUTO

__all__ = ["Parser", "model_options", "device_options", "speed_options", "config_options",
           "config_overrides", "threads_options", "checked_threads"]


class Parser(argparse.ArgumentParser):
    """``argparse`` with the toolkit's error contract: a bad command line is one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)", self.prog)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_options() -> argparse.ArgumentParser:
    """``--model DIR`` (required) and ``--trust-remote-code``: every command that loads a trained model."""
    p = _parent()
    p.add_argument("--model", required=True, help="model directory written by train.py (or its output_dir)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model directory run its own Python code (auto_map); only for a directory you "
                        "trust, never decided by the directory itself")
    return p


def device_options() -> argparse.ArgumentParser:
    """``--batch-size``, ``--device``, ``--precision``: where and how a loaded model runs."""
    p = _parent()
    p.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default 64)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="autocast of the network, one of %(choices)s (bf16: fast on CPUs with AVX-512 BF16; "
                        "fp16: CUDA); the CRF stays fp32 (default %(default)s)")
    return p


def speed_options() -> argparse.ArgumentParser:
    """``--quantize`` and ``--compile``: the PyTorch model's speed-ups (predict, serve)."""
    p = _parent()
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                   help="int8: dynamic int8 Linear/LSTM weights (CPU only, about 2x fp32 sentences/s); the CRF "
                        "stays fp32 (one of %(choices)s, default %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network before the CRF (needs a C++ compiler; pays for large inputs: "
                        "about 20 s of compiling first, on a warm-up batch in each ner-serve model process before "
                        "it accepts requests; see docs/benchmarks/speed-memory.md)")
    return p


def threads_options() -> argparse.ArgumentParser:
    """``--threads N``: the CPU threads of every command that runs a model (``ner_toolkit.threads``)."""
    p = _parent()
    p.add_argument("--threads", type=int, default=AUTO, metavar="N",
                   help="CPU threads for the model (default 0: the cores not busy with other processes when the "
                        "command starts, at least 1; see docs/threads.md)")
    return p


def checked_threads(args: argparse.Namespace) -> int:
    """``--threads`` of :func:`threads_options`, range-checked (0 = automatic)."""
    if not 0 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads must be from 0 (automatic) to {MAX_THREADS}, got {args.threads}", "--threads")
    return int(args.threads)


def config_options(what: str, reference: str, example: str) -> argparse.ArgumentParser:
    """``--config``, ``--set``, ``--output-dir``, ``--resume``: the commands run from a YAML config (train,
    pretrain train); ``what`` names the config, ``reference`` the file that documents it, ``example`` a
    ``KEY=VALUE`` for ``--set``."""
    p = _parent()
    p.add_argument("--config", required=True, help=f"YAML {what} config (see {reference})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable; value parsed as YAML)")
    p.add_argument("--output-dir", help="same as --set output_dir=DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output directory from its newest checkpoint, exactly where it stopped")
    p.add_argument("--threads", type=int, metavar="N",
                   help="same as --set training.num_threads=N, 0 for null (default: the config's; null there: the "
                        "cores not busy with other processes when training starts, at least 1)")
    return p


def config_overrides(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--set`` overrides of :func:`config_options`, ``--threads`` and ``--output-dir`` last (they win)."""
    output_dir: Optional[str] = args.output_dir
    threads: tuple[str, ...] = ()
    if args.threads is not None:  # 0: automatic, as for the other commands (null in the config)
        threads = (f"training.num_threads={checked_threads(args) or 'null'}",)
    return tuple(args.overrides) + threads + ((f"output_dir={output_dir}",) if output_dir else ())
