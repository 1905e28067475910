"""Simulated annotation gaps, for measuring training from partial labels (tests and benchmarks).

``hide_spans`` copies a labelled CoNLL file with a random fraction of its entity spans hidden: their
tokens get the unknown tag (``?``: what a partial annotation looks like) or ``O`` (what a toolkit
without partial labels has to assume). Only the last column changes; every other line is kept verbatim.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Union

from ..atomic import atomic_write
from .schemes import Scheme, detect_scheme, to_spans

__all__ = ["hide_spans"]


def hide_spans(src: Path, dst: Path, fraction: float, seed: int, replacement: str = "?",
               scheme: Union[Scheme, str, None] = None) -> tuple[int, int]:
    """Write ``src`` to ``dst`` with each entity span hidden with probability ``fraction`` (its tokens'
    last column set to ``replacement``). ``scheme`` None: detected from ``src``. The same ``seed`` hides
    the same spans whatever ``replacement`` is, so runs that differ only in it are comparable.

    Returns ``(hidden spans, all spans)``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    lines = Path(src).read_text(encoding="utf-8").splitlines()
    blocks: list[list[int]] = [[]]  # line indices of each sentence's token lines
    for i, line in enumerate(lines):
        if not line.strip() or line.startswith("-DOCSTART-"):
            blocks.append([])
        else:
            blocks[-1].append(i)
    blocks = [b for b in blocks if b]
    tags = [[lines[i].split()[-1] for i in block] for block in blocks]
    scheme = scheme or detect_scheme(tags)
    rng = random.Random(seed)
    hidden = total = 0
    for block, sentence in zip(blocks, tags):
        for _, start, end in to_spans(sentence, scheme):
            total += 1
            if rng.random() < fraction:
                hidden += 1
                for i in block[start:end]:
                    lines[i] = " ".join(lines[i].split()[:-1] + [replacement])
    with atomic_write(dst) as fh:  # a benchmark killed mid-write leaves no half a training file
        fh.write("\n".join(lines) + "\n")
    return hidden, total
