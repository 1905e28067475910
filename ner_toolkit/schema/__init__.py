"""The generic config machinery, public: a schema is a tree of ``@dataclass`` sections whose attributes are
``field(default, help, range=..., choices=...)``s.

- ``load(Schema, path, overrides)``: YAML (aliases bounded) + dotted ``--set KEY=VALUE`` overrides ->
  a validated ``Schema``; every problem is one ``UserError`` naming FILE:LINE (or ``--set:N``) and the key,
  with the closest valid key for a typo and the closest choice for a misspelt name.
- cross-field rules: a section defines ``check(self, here: Here) -> None`` and raises
  ``here.error(message, key, ...)``, which names the line of the offending key; a check that needs the
  data or the device raises ``schema.here(section).error(...)`` and names the line all the same.
- ``from_dict`` / ``to_dict`` / ``save``: a saved config reads back through the same checks.
- ``reference_yaml(Schema, header)``: every key with its default, help text and range.

Torch-free (the ONNX runtime reads a model's config through it).
"""
from __future__ import annotations

from .fields import (MAX_COUNT, MAX_LAYERS, MAX_SEED, MAX_SIZE, MAX_THREADS, NON_NEGATIVE, POSITIVE, RATE, Range,
                     choice_problem, choose, field, size)
from .loading import Here, all_keys, here, from_dict, load, parse_override, read_raw, reference_yaml, save, to_dict
from .yaml_text import MAX_YAML_NODES, Where, parse_yaml

__all__ = ["MAX_COUNT", "MAX_LAYERS", "MAX_SEED", "MAX_SIZE", "MAX_THREADS", "MAX_YAML_NODES", "NON_NEGATIVE",
           "POSITIVE", "RATE", "Here", "Range", "Where", "all_keys", "choice_problem", "choose", "field", "from_dict",
           "here", "load", "parse_override", "parse_yaml", "read_raw", "reference_yaml", "save", "size", "to_dict"]
