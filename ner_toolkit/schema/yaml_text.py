"""Config text as YAML: parsing with bounded alias expansion, and the line of every key.

``parse_yaml`` replaces ``yaml.safe_load`` for every config text: YAML aliases share one node, so a few
lines can describe billions of values ("billion laughs") or a value that contains itself; both are
refused while composing, before anything is constructed or walked. ``record_lines`` maps each dotted key
path to the line that sets it, for messages that name FILE:LINE.
"""
from __future__ import annotations

from typing import Any, Optional

import yaml

from ..errors import UserError

MAX_YAML_NODES = 100_000   # expanded nodes of one config text: a reference config has a few hundred


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


# --------------------------------------------------------------------------- where each key was set

class Where:
    """Maps key paths to the source and line that set them, for error messages."""

    def __init__(self) -> None:
        self.lines: dict[str, tuple[str, Optional[int]]] = {}
        self.overrides: dict[int, str] = {}  # --set number -> its text, quoted in value errors

    def origin(self, path: str) -> str:
        """`` (from --set KEY=VALUE)`` when an override set ``path`` (or its section), else empty."""
        src, line = self.get(path, "")
        text = self.overrides.get(line) if src == "--set" and line is not None else None
        if text is None:
            return ""
        return f" (from --set {text if len(text) <= 80 else text[:77] + '...'})"

    def get(self, path: str, default_source: str) -> tuple[str, Optional[int]]:
        """``(source, line)`` of ``path``, else of the nearest section above it, else ``(default_source, None)``."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return default_source, None


def record_lines(node: yaml.Node, prefix: str, source: str, where: Where) -> None:
    """Record in ``where`` the line of every key under ``node``; a key given twice is an error."""
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            path = prefix + str(key_node.value)
            line = key_node.start_mark.line + 1
            if path in first_lines:
                # PyYAML keeps the last of equal keys: the first one (a whole section, maybe) would vanish.
                raise UserError(f"duplicate key `{path}` (first on line {first_lines[path]}); merge the two",
                                source, line)
            first_lines[path] = line
            where.lines[path] = (source, line)
            record_lines(value_node, path + ".", source, where)
