"""The optional extras of setup.cfg and the one check every lazy import of them goes through.

A missing extra is a user error, one line naming what to install (``pip install 'ner_toolkit[serve]'``),
never a ``ModuleNotFoundError`` traceback. The commands that need an extra check it before building their
parser, so ``ner serve --help`` says the same line rather than failing half-way through its options.
"""
from __future__ import annotations

import importlib
from typing import Optional

from .errors import PathLike, UserError

__all__ = ["EXTRAS", "require"]

# extra -> the modules it provides that the toolkit imports (uvloop is optional within serve: uvicorn's choice)
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("starlette", "uvicorn", "httptools"),
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboard",),
    "spacy": ("spacy",),
}


def install_hint(extra: str) -> str:
    return f"pip install 'ner_toolkit[{extra}]'"


def require(extra: str, what: str, *modules: str, path: Optional[PathLike] = None) -> None:
    """Import ``modules`` (default: every module of ``extra``) or raise one :class:`UserError` naming the
    missing module and the extra that brings it; ``what`` is who needs it (``ner serve``), ``path`` where
    the error points (default ``what``)."""
    for name in modules or EXTRAS[extra]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = exc.name or name
            needs = "needs" if path is None else f"{what} needs"  # the path names ``what`` already
            raise UserError(f"{needs} the {extra!r} extra ({missing} is not installed): {install_hint(extra)}",
                            what if path is None else path) from None
