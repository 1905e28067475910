"""Subword-to-word pooling modes, torch-free: the config schema, the collator, the encoder and the exporter
read the names from here."""
from __future__ import annotations

POOLINGS: tuple[str, ...] = ("first", "last", "mean", "first_last")
