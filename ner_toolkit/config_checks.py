"""The checks behind the config schema: numeric ranges, and YAML parsing with bounded alias expansion.

``config.py`` declares each key's ``Range`` next to its help text; every path into a ``Config`` (a YAML
file, ``--set``, a model directory's ``config.yaml``) goes through ``_coerce`` there, which calls
``Range.problem``. ``parse_yaml`` replaces ``yaml.safe_load`` for every config text: YAML aliases share
one node, so a few lines can describe billions of values ("billion laughs") or a value that contains
itself; both are refused while composing, before anything is constructed or walked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from .errors import UserError

# Generous ceilings for sizes that allocate memory (an embedding width, an LSTM's hidden size): far
# above any real model, low enough that a typo such as 1e9 is refused before torch tries to allocate it.
MAX_SIZE = 65536
MAX_LAYERS = 64
MAX_COUNT = 10**9          # epochs, steps, frequencies, batch sizes: counts that allocate nothing per unit
MAX_THREADS = 4096
MAX_SEED = 2**32 - 1       # numpy's seed range; torch and random accept it too
MAX_YAML_NODES = 100_000   # expanded nodes of one config text: a reference config has a few hundred


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


# --------------------------------------------------------------------------- YAML with bounded aliases

class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses a recursive alias and counts the expanded size of each node.

    The size of a node counts its subtree as a consumer walking the constructed value would see it
    (an alias counts its anchor's whole subtree again), memoised per node, so the work is linear in
    the text and nothing is expanded to count it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.open_anchors: set[str] = set()
        self.sizes: dict[int, int] = {}
        self.keep: list[yaml.Node] = []  # keeps ids in `sizes` unique while composing

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise yaml.composer.ComposerError(None, None, f"the alias *{event.anchor} refers to the value "
                                                  f"that contains it (a recursive alias)", event.start_mark)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.open_anchors.discard(anchor)
        if isinstance(node, yaml.SequenceNode):
            children: list = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total = 1 + sum(self.sizes.get(id(c), 1) for c in children)
        if total > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"this value expands to more than {MAX_YAML_NODES:,} "
                                              "values through aliases; write it out or shorten it",
                                              node.start_mark)
        self.sizes[id(node)] = total
        self.keep.append(node)
        return node


def parse_yaml(text: str, source: str) -> tuple[Any, Optional[yaml.Node]]:
    """``(value, node)`` of a one-document YAML text, as ``yaml.safe_load`` would give, with bounded work.

    Any YAML problem (syntax, a recursive alias, an expansion bomb, nesting too deep) is a ``UserError``
    naming ``source`` and the line.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        value = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = f" column {mark.column + 1}:" if mark else ""
        raise UserError(f"invalid YAML at{col} {exc.problem or exc.context}", source, line) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", source) from None
    except RecursionError:
        # PyYAML's composer and constructor recurse once per nesting level.
        raise UserError("invalid YAML: nested too deeply", source) from None
    finally:
        loader.dispose()
    return value, node
