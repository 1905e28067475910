"""The one check for text entering the toolkit, from a file, a request or the API; torch-free.

A Python string can hold what no UTF-8 file can: unpaired surrogates (U+D800..U+DFFF), which JSON's
``"\\ud800"`` escapes and Python callers produce. The tokenizers backend refuses them with a TypeError of
its own, and every UTF-8 writer fails on them; so a text is checked where it enters and refused with a
message naming where it came from.

- ``text_problem(text)``: None, or why ``text`` cannot be processed (one line).
- ``check_text(value, what)`` / ``check_tokens(value, what)``: the API's check of one text or token
  list: ``TypeError`` for what is not a ``str`` (bytes, numbers), ``InvalidText`` (a ValueError) for
  unencodable text; ``what`` names the item in the message ("text 3").
- ``load_json(text)`` / ``decode_json(doc, pos)``: JSON with every decoding failure (syntax, integers
  past Python's 4,300-digit limit, nesting past the recursion limit) as one ``InvalidJSON`` line, and
  every string of the value (keys included) checked: ``InvalidText`` naming where in the value it is.

Files decoded as strict UTF-8 (CoNLL, plain text) cannot hold surrogates; JSON and API strings can.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, Iterator, Optional

__all__ = ["InvalidText", "InvalidJSON", "text_problem", "check_text", "check_tokens", "load_json", "decode_json"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# Only a \uD800..\uDFFF escape puts a surrogate into a decoded value (a paired one decodes to one character).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER = json.JSONDecoder()


class InvalidText(ValueError):
    """A string the toolkit cannot process (unpaired surrogates): the caller's input, not a bug."""


class InvalidJSON(ValueError):
    """A JSON document that does not decode; ``line`` (1-based, within the document) when known.
    ``syntax``: a syntax error, whose fix the caller knows (one object per line, a JSON array, ...);
    the other messages end with their own fix."""

    def __init__(self, message: str, line: Optional[int] = None, syntax: bool = False) -> None:
        super().__init__(message)
        self.line, self.syntax = line, syntax


def text_problem(text: str) -> Optional[str]:
    """None when ``text`` can be tokenised and written as UTF-8, else the reason and its fix."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"holds an unpaired surrogate U+{ord(found.group()):04X} at character {found.start()}: not Unicode "
            "text (a JSON \\ud800 escape without its pair?); fix or remove it")


def _not_str(value: Any, what: str, expected: str) -> TypeError:
    kind = type(value).__name__
    if isinstance(value, (bytes, bytearray, memoryview)):
        return TypeError(f"{what} is {kind}, not {expected}: decode it first (e.g. data.decode('utf-8'))")
    return TypeError(f"{what} is {kind}, not {expected}")


def check_text(value: Any, what: str = "text") -> str:
    """``value`` when it is a ``str`` that ``text_problem`` accepts; else ``TypeError`` / ``InvalidText``."""
    if not isinstance(value, str):
        raise _not_str(value, what, "a str")
    problem = text_problem(value)
    if problem:
        raise InvalidText(f"{what} {problem}")
    return value


def check_tokens(value: Any, what: str = "sentence") -> None:
    """``value`` must be a sequence (list, tuple, array) of ``str`` tokens that ``text_problem`` accepts."""
    if isinstance(value, str):
        raise TypeError(f"{what} is a str, not a list of tokens (e.g. ['Peter', 'Blackburn']); raw text goes to "
                        "Predictor.predict_text")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise _not_str(value, what, "a list of str tokens")
    if isinstance(value, Mapping) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{what} is {type(value).__name__}, not a list of str tokens (e.g. ['Peter', 'Blackburn'])")
    bad = next((i for i, token in enumerate(value) if not isinstance(token, str)), None)
    if bad is not None:
        raise _not_str(value[bad], f"{what}, token {bad},", "a str")
    if _SURROGATE.search("".join(value)):  # one search per sentence; the token only for the message
        bad = next(i for i, token in enumerate(value) if _SURROGATE.search(token))
        raise InvalidText(f"{what}, token {bad}, {text_problem(value[bad])}")


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """(where, string) for every key and string of a decoded JSON value, without recursion; ``where`` is
    the path from the top, as ``"tokens"[3]`` (ASCII: a message may not hold the surrogate itself)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where or "the value", item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield f"the key {json.dumps(key)}" + (f" in {where}" if where else ""), key
                stack.append((child, f"{where}[{json.dumps(key)}]" if where else json.dumps(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


def _check_strings(value: Any, source: str) -> None:
    if not _SURROGATE.search(source) and not _SURROGATE_ESCAPE.search(source):
        return  # the common case: no string of the value can hold a surrogate
    for where, string in _strings(value):
        problem = text_problem(string)
        if problem:
            raise InvalidText(f"{where} {problem}")


def decode_json(doc: str, pos: int = 0, whole: bool = False) -> tuple[Any, int]:
    """The JSON value at ``doc[pos:]`` and where it ends, its strings checked (``json.JSONDecoder.
    raw_decode``); with ``whole`` ``doc`` must hold that value alone, with whitespace around it
    (``json.loads``). ``InvalidJSON.line`` counts from the start of ``doc``."""
    try:
        if whole:
            value, end = _DECODER.decode(doc), len(doc)
        else:
            value, end = _DECODER.raw_decode(doc, pos)
    except json.JSONDecodeError as e:
        raise InvalidJSON(f"invalid JSON: {e.msg} (column {e.colno})", e.lineno, syntax=True) from None
    except RecursionError:  # the C scanner recurses once per [ or {
        raise InvalidJSON("invalid JSON: arrays or objects nested too deeply to decode (Python's recursion "
                          "limit); flatten them") from None
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
        raise InvalidJSON(f"invalid JSON: a number of more than {sys.get_int_max_str_digits()} digits (Python's "
                          "limit for integers); write it as a string") from None
    _check_strings(value, doc[pos:end])
    return value, end


def load_json(text: str) -> Any:
    """``json.loads(text)`` with the failures of ``decode_json``."""
    return decode_json(text, whole=True)[0]
