"""Schema walking: a YAML file plus ``--set`` overrides -> a validated tree of section dataclasses.

Every value is coerced to its field's type and checked against its range or choices; then every section's
``check(self, here)`` method (its cross-field rules) runs, innermost sections first. Each problem is a
``UserError`` naming the key path and the FILE:LINE (or ``--set:N``) that set it.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import typing
import weakref
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, TypeVar, Union

import yaml

from ..errors import UserError
from .fields import Range, choice_problem, choose
from .yaml_text import Where, parse_yaml, record_lines

T = TypeVar("T")


def hints(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a section dataclass."""
    return typing.get_type_hints(cls)


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key path of the schema rooted at ``cls`` (leaves and sections)."""
    keys = []
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        keys.append(path)
        tp = hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, path + "."))
    return keys


class Here:
    """The locations of one section's keys, handed to its ``check`` method: ``raise here.error(msg, key)``
    names the FILE:LINE that set ``key`` (or its section, or the file when the key kept its default)."""

    def __init__(self, where: Where, prefix: str, source: str) -> None:
        self.where, self.prefix, self.source = where, prefix, source

    def key(self, name: str) -> str:
        """The full dotted path of ``name`` in backquotes, for messages: ``model.encoder.scratch``."""
        return f"`{self.prefix}{name}`"

    def error(self, message: str, *names: str) -> UserError:
        """A ``UserError`` at the first of ``names`` (keys of this section, dotted below it) that the file
        or a ``--set`` gave; else where the first name's section was set."""
        paths = [self.prefix + n for n in names] or [self.prefix.rstrip(".")]
        given = [p for p in paths if p in self.where.lines]
        src, line = self.where.get((given or paths)[0], self.source)
        return UserError(message, src, line)


@dataclasses.dataclass(frozen=True)
class _Context:
    root: type          # the schema's top section: unknown keys are matched against its key paths
    where: Where
    source: str         # the config file, or --set / a caller's name when there is none
    reference: str      # the file that lists every key, named when a key is unknown


# YAML 1.2 floats that PyYAML (YAML 1.1) leaves as strings: `1e-4`, `2E5` (no dot, or an unsigned exponent).
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               list: "a list"}
_FITS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    dict: lambda v: isinstance(v, dict),
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return "a list of " + {int: "integers", str: "names"}[typing.get_args(tp)[0]]
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, path: str, meta: typing.Mapping[str, Any], ctx: _Context) -> Any:
    origin = typing.get_origin(tp)
    where = ctx.where
    src, line = where.get(path, ctx.source)
    if origin is Union:
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, path, meta, ctx)
    if meta.get("convert") is not None:
        try:
            return meta["convert"](value)
        except ValueError as exc:
            raise UserError(f"`{path}` {exc}, got {value!r}{where.origin(path)}", src, line) from None
    choices = typing.get_args(tp) if origin is Literal else meta.get("choices")
    if choices is not None:
        chosen = choose(value, choices, bool(meta.get("any_case")))
        if chosen is None:
            raise UserError(f"`{path}` {choice_problem(value, choices)}{where.origin(path)}", src, line)
        return chosen
    if dataclasses.is_dataclass(tp):
        if value is None:  # `training:` with every key commented out: the section's defaults
            value = {}
        if not isinstance(value, dict):
            raise UserError(f"`{path}` must be a mapping of keys, got {type(value).__name__} {value!r}", src, line)
        return _build(tp, value, path + ".", ctx)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is int:
            fits, what = (lambda v: isinstance(v, int) and not isinstance(v, bool)), "integers"
        else:  # str: a tag name is one CoNLL column, never empty and never with spaces
            fits, what = (lambda v: isinstance(v, str) and v.strip() == v and v and not any(c.isspace() for c in v)), \
                "names without spaces"
        if not isinstance(value, list) or not all(fits(v) for v in value):
            raise UserError(f"`{path}` must be a list of {what}, got {value!r}", src, line)
        return value
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)
    if not _FITS[tp](value):
        raise UserError(f"`{path}` must be {_type_name(tp)}, got {type(value).__name__} {value!r}{where.origin(path)}",
                        src, line)
    allowed: Optional[Range] = meta.get("range")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float: report it as the infinity it would be
            value = math.inf
        if allowed is None:
            allowed = Range()  # every float is at least finite
    if allowed is not None:
        problem = allowed.problem(value)
        if problem:
            shown = value if abs(value) < 10**30 else f"{value:.3g}"
            raise UserError(f"`{path}` {problem}, got {shown}{where.origin(path)}", src, line)
    return value


def _build(cls: type, raw: dict, prefix: str, ctx: _Context) -> Any:
    types = hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            path = prefix + str(key)
            src, line = ctx.where.get(path, ctx.source)
            if path not in ctx.where.lines:  # a --set below an unknown section: blame that --set, not the file
                src, line = next(((s, n) for k, (s, n) in ctx.where.lines.items()
                                  if s == "--set" and k.startswith(path + ".")), (src, line))
            close = difflib.get_close_matches(path, all_keys(ctx.root), n=1, cutoff=0.5)
            hint = f"; did you mean `{close[0]}`?" if close else f"; see {ctx.reference} for valid keys"
            given = f" (from --set {ctx.where.overrides[line]})" if src == "--set" and line in ctx.where.overrides else ""
            raise UserError(f"unknown config key `{path}`{given}{hint}", src, line)
    return cls(**{k: _coerce(v, types[k], prefix + k, fields[k].metadata, ctx) for k, v in raw.items()})


# The Here of every section load/from_dict built, by id, kept beside the section (never in its __dict__,
# which callers copy as keyword arguments) and dropped with it.
_PLACES: dict[int, tuple[weakref.ref, Here]] = {}


def _remember(section: Any, here: Here) -> None:
    key = id(section)
    _PLACES[key] = (weakref.ref(section, lambda _: _PLACES.pop(key, None)), here)


def _check(section: Any, prefix: str, ctx: _Context) -> None:
    """Run the ``check(here)`` rules of ``section`` and of every section below it, innermost first; sections
    that kept their defaults are checked too (a default can break a rule that another key sets)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check(value, prefix + f.name + ".", ctx)
    here = Here(ctx.where, prefix, ctx.source)
    _remember(section, here)
    check = getattr(section, "check", None)
    if callable(check):
        check(here)


def here(section: Any) -> Here:
    """The locations of a section that ``load``/``from_dict`` built, for a check that cannot run in the
    schema (it needs the data, the device or the encoder): ``raise here(cfg).error(msg, "key")`` still
    names the key's FILE:LINE. A section built in code names ``config``."""
    ref, found = _PLACES.get(id(section), (None, None))
    return found if ref is not None and ref() is section else Here(Where(), "", "config")


def _validate(cls: type[T], raw: dict, ctx: _Context) -> T:
    config = _build(cls, raw, "", ctx)
    _check(config, "", ctx)
    return config


def _set_dotted(tree: dict, path: str, value: Any, where: Where) -> None:
    parts = path.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            src, line = where.get(prefix, "--set")
            raise UserError(f"cannot set `{path}`: `{prefix}` is not a section", src, line)
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.epochs=3"`` -> ``("training.epochs", 3)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects KEY=VALUE (e.g. training.epochs=3), got {text!r}", "--set")
    try:
        parsed = parse_yaml(value, "--set")[0] if value.strip() else None
    except UserError as exc:
        raise UserError(f"the value of --set {key.strip()} is not valid YAML: {exc.message}", "--set") from None
    return key.strip(), parsed


def read_raw(path: Optional[Union[str, os.PathLike]], overrides: Sequence[str],
             example: str = "training: {epochs: 3}") -> tuple[dict, Where, str]:
    """``path`` (YAML) with the ``--set`` overrides applied: ``(raw mapping, where each key came from,
    source)``; the schema is not applied yet. ``example``: shown when the file is not a mapping."""
    where = Where()
    raw: dict = {}
    source = "--set"
    if path is not None:
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("config file not found; check the --config path", source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read config: {exc}", source) from None
        raw, node = parse_yaml(text, source)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UserError(f"a config must be a mapping of keys (e.g. `{example}`)", source, 1)
        if node is not None:
            record_lines(node, "", source, where)
    _apply_overrides(raw, overrides, where)
    return raw, where, source


def _apply_overrides(raw: dict, overrides: Sequence[str], where: Where) -> None:
    """Set each ``KEY=VALUE`` of ``overrides`` in ``raw`` (in place), recording it as ``--set:N``."""
    for i, text in enumerate(overrides, 1):
        key, value = parse_override(text)
        where.lines[key] = ("--set", i)
        where.overrides[i] = text
        _set_dotted(raw, key, value, where)


def load(cls: type[T], path: Optional[Union[str, os.PathLike]] = None, overrides: Sequence[str] = (), *,
         reference: str = "the reference config", example: str = "training: {epochs: 3}") -> T:
    """Read ``path`` (YAML), apply the ``--set`` overrides (``KEY=VALUE``, the value parsed as YAML), and
    validate the result into ``cls``: types, ranges, choices, then each section's ``check`` rules.
    ``reference`` names the file listing every key (in the hint for an unknown key); ``example`` is shown
    when the file is not a mapping."""
    raw, where, source = read_raw(path, overrides, example)
    return _validate(cls, raw, _Context(cls, where, source, reference))


def from_dict(cls: type[T], raw: dict, source: str = "config", *, reference: str = "the reference config",
              overrides: Sequence[str] = ()) -> T:
    """Validate a plain mapping (e.g. a saved ``config.yaml``) into ``cls``, after the ``--set`` style
    ``overrides`` (applied to a copy; their errors name ``--set:N``); other errors name ``source``."""
    where = Where()
    if overrides:
        raw = copy.deepcopy(raw)
        _apply_overrides(raw, overrides, where)
    return _validate(cls, raw, _Context(cls, where, source, reference))


def to_dict(config: Any) -> dict:
    """The config as plain mappings and values (what ``save`` writes, what ``from_dict`` reads)."""
    return dataclasses.asdict(config)


def save(config: Any, path: Union[str, os.PathLike]) -> None:
    """Write ``config`` as YAML (atomically: a crash leaves the old file or the new one)."""
    from ..atomic import atomic_write

    with atomic_write(path) as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False, allow_unicode=True)


def reference_yaml(cls: type, header: Sequence[str]) -> str:
    """The commented reference config of the schema ``cls``: ``header`` (comment lines), then every key
    with its default, its help text and its allowed range."""
    lines = [*header, ""]

    def walk(section: type, indent: str) -> None:
        defaults = section()
        for f in dataclasses.fields(section):
            tp = hints(section)[f.name]
            if dataclasses.is_dataclass(tp):
                lines.append(f"{indent}{f.name}:  # {f.metadata['help']}")
                walk(tp, indent + "  ")
                continue
            value = yaml.safe_dump(getattr(defaults, f.name), default_flow_style=True).strip()
            value = value.removesuffix("...").strip()
            allowed = f.metadata.get("range")
            bounds = f"; allowed: {allowed.describe()}" if allowed is not None else ""
            lines.append(f"{indent}{f.name}: {value}  # {f.metadata['help']}{bounds}")

    walk(cls, "")
    return "\n".join(lines) + "\n"
