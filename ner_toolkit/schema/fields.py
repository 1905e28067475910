"""Schema fields: a default, a one-line help text and, where it applies, a numeric range or a list of choices.

A section of a config is a ``@dataclass`` whose attributes are ``field(...)``s; the range and the choices
travel in the field's metadata and are checked by ``schema.loading`` on every path into a config (a YAML
file, ``--set``, a saved ``config.yaml``).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

# Generous ceilings for sizes that allocate memory (an embedding width, an LSTM's hidden size): far
# above any real model, low enough that a typo such as 1e9 is refused before torch tries to allocate it.
MAX_SIZE = 65536
MAX_LAYERS = 64
MAX_COUNT = 10**9          # epochs, steps, frequencies, batch sizes: counts that allocate nothing per unit
MAX_THREADS = 4096
MAX_SEED = 2**32 - 1       # numpy's seed range; torch and random accept it too


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: ``low <= v`` (or ``<``), ``v <= high`` (or ``<``); None = unbounded."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        lo, hi = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            if not self.low_open and not self.high_open:
                return f"from {lo} to {hi}"
            return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"greater than {lo}" if self.low_open else f"at least {lo}"
        if self.high is not None:
            return f"less than {hi}" if self.high_open else f"at most {hi}"
        return "any value"

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` (an int or a float) is refused, or None when it is allowed."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number {self.describe()}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {self.describe()}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {self.describe()}"
        return None


def _num(x: Optional[float]) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else str(x)


def size(high: int = MAX_SIZE, low: int = 1) -> Range:
    return Range(low, high)


RATE = Range(0.0, 1.0, high_open=True)          # dropouts, decays, fractions: 1 would drop or keep everything
POSITIVE = Range(0.0, None, low_open=True)     # learning rates
NON_NEGATIVE = Range(0.0, None)                # weight decay, clipping norm (0 = off)


def field(default: Any, help: str, range: Optional[Range] = None, choices: Optional[Sequence[str]] = None,
          any_case: bool = False, convert: Optional[Callable[[Any], Any]] = None) -> Any:
    """A schema field: its default, a one-line description and what values it allows.

    ``range``: the bounds of a number. ``choices``: the names a string may take (read from the module that
    owns the concept, so that a new name is one entry there); ``any_case``: match them case-insensitively,
    keeping the spelling of ``choices``. ``convert``: turns the YAML value into the field's value, raising
    ``ValueError(reason)`` (e.g. "must be a path or a list of paths") for one it refuses.
    """
    metadata = {"help": help, "range": range, "choices": tuple(choices) if choices is not None else None,
                "any_case": any_case, "convert": convert}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        # Each config gets its own copy of a mutable default (a section given with values keeps them).
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choose(value: Any, choices: Sequence[str], any_case: bool = False) -> Optional[str]:
    """The entry of ``choices`` that ``value`` names, or None."""
    if not isinstance(value, str):
        return None
    if value in choices:
        return value
    if any_case:
        folded = value.strip().casefold()
        for choice in choices:
            if choice.casefold() == folded:
                return choice
    return None


def choice_problem(value: Any, choices: Sequence[str]) -> str:
    """``must be one of a, b, c, got 'x'``, with the closest choice for a typo."""
    hint = ""
    if isinstance(value, str):  # compared case-folded: `BF16` is closest to `bf16`
        folded = {c.casefold(): c for c in choices}
        close = difflib.get_close_matches(value.strip().casefold(), list(folded), n=1, cutoff=0.6)
        hint = f"; did you mean `{folded[close[0]]}`?" if close else ""
    return f"must be one of {', '.join(choices)}, got {value!r}{hint}"
