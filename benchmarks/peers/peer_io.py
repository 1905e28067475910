"""What the peers' helper scripts share: reading the benchmark's CoNLL files, writing predictions, JSON
stats, thread settings and a guard that makes any network access fail loudly.

Imported by ``hf_token_classification.py`` and ``flair_tagger.py`` inside the peers' own virtual
environments, so it uses the standard library only (no ner_toolkit, no torch at import time).
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Sequence

Sentence = tuple[list[str], list[str]]  # (tokens, IOB2 tags)


def read_conll(path: Path) -> list[Sentence]:
    """Sentences of a ``token tag`` file written by bench_peers.py: blank lines between sentences,
    no -DOCSTART- lines, the tag in the last column."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def write_predictions(path: Path, sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> None:
    """``token gold pred`` lines, a blank line after each sentence: what ``ner-evaluate`` scores."""
    if len(sentences) != len(predicted):
        raise ValueError(f"{len(sentences)} sentences but {len(predicted)} predictions")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for (tokens, gold), pred in zip(sentences, predicted):
            if len(pred) != len(tokens):
                raise ValueError(f"a sentence of {len(tokens)} tokens got {len(pred)} predicted tags")
            for token, g, p in zip(tokens, gold, pred):
                fh.write(f"{token} {g} {p}\n")
            fh.write("\n")
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def forbid_network() -> None:
    """Make every IP connection from this process raise: the peers must load from local paths only, and
    a silent hub download (or a hang on one) would falsify the benchmark."""
    def refuse(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"bench_peers: network access attempted ({address!r}); everything must be local")
        return original(self, address)

    original = socket.socket.connect
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign,assignment]


def set_threads(threads: int) -> None:
    """Torch CPU threads, as ner_toolkit's ``training.num_threads`` sets them."""
    import torch

    torch.set_num_threads(threads)


def write_predict_stats(path: Path, started: float, loaded: float, tagged: float, sentences: int, how: str,
                        **extra: Any) -> None:
    """The stats JSON of one timed prediction (perf_counter marks: start, model loaded, all tagged), as
    bench_peers.py reads it for every system."""
    import torch

    write_json(path, {"load_seconds": loaded - started, "tag_seconds": tagged - loaded, "sentences": sentences,
                      "threads": torch.get_num_threads(), **extra, "how": how})
