"""The benchmark's data: CoNLL-2003 blocks read once, the first N sentences of each split written for ours
(the original IOB1 layout) and for the peers (``token tag`` in IOB2), and test predictions rewritten into one
``token gold pred`` file per system for the shared scorer. Runs in the project's virtualenv (standard library)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


@dataclass
class Block:
    """One sentence of a CoNLL file (its raw lines) with the -DOCSTART- lines that came right before it."""

    prefix: list[str]
    lines: list[str]

    @property
    def tokens(self) -> list[str]:
        return [line.split()[0] for line in self.lines]

    @property
    def tags(self) -> list[str]:
        return [line.split()[-1] for line in self.lines]


def read_blocks(path: Path) -> list[Block]:
    """The sentences of an original CoNLL-2003 file, in order."""
    blocks: list[Block] = []
    prefix: list[str] = []
    lines: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if not line.strip():
                if lines:
                    blocks.append(Block(prefix, lines))
                    prefix, lines = [], []
            elif line.startswith("-DOCSTART-"):
                prefix.append(line)
            else:
                lines.append(line)
    if lines:
        blocks.append(Block(prefix, lines))
    return blocks


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Tags read as conlleval reads them (an I-X after O or after another type starts a span; B-X always
    does), written in IOB2. Lossless for IOB1 and IOB2; for ill-formed input it keeps conlleval's spans."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag == "O":
            out.append(tag)
        else:
            prefix, type_ = tag.split("-", 1)
            starts = prefix == "B" or previous == "O" or previous.split("-", 1)[1] != type_
            out.append(("B-" if starts else "I-") + type_)
        previous = tag
    return out


def write_original(path: Path, blocks: Sequence[Block]) -> None:
    """The sentences in the original layout (all columns, IOB1, -DOCSTART- lines kept): ours' input."""
    with open(path, "w", encoding="utf-8") as fh:
        for block in blocks:
            for line in block.prefix:
                fh.write(line + "\n\n")
            fh.write("\n".join(block.lines) + "\n\n")


def write_token_tag(path: Path, blocks: Sequence[Block]) -> None:
    """``token tag`` in IOB2, one blank line after each sentence: the peers' input."""
    with open(path, "w", encoding="utf-8") as fh:
        for block in blocks:
            for token, tag in zip(block.tokens, to_iob2(block.tags)):
                fh.write(f"{token} {tag}\n")
            fh.write("\n")


@dataclass
class Data:
    ours: dict[str, Path]    # train/dev/test/first in the original layout
    peers: dict[str, Path]   # train/dev/test as token tag (IOB2)
    counts: dict[str, int]   # sentences per split


def prepare_data(source: Path, out: Path, limits: dict[str, Optional[int]], write: bool = True) -> Data:
    """The benchmark's splits, written into OUT/data when ``write`` (deterministic: rewritten on every run)."""
    ours_dir, peers_dir = out / "data" / "ours", out / "data" / "peers"
    if write:
        ours_dir.mkdir(parents=True, exist_ok=True)
        peers_dir.mkdir(parents=True, exist_ok=True)
    data = Data({}, {}, {})
    for split in ("train", "dev", "test"):
        blocks = read_blocks(source / f"{split}.txt")
        limit = limits[split]
        if limit is not None:
            if limit < 1:
                sys.exit(f"error: --{split}-sentences must be at least 1")
            blocks = blocks[:limit]
        data.counts[split] = len(blocks)
        data.ours[split], data.peers[split] = ours_dir / f"{split}.txt", peers_dir / f"{split}.txt"
        if split == "test":
            data.ours["first"] = ours_dir / "test_first_sentence.txt"
        if write:
            write_original(data.ours[split], blocks)
            write_token_tag(data.peers[split], blocks)
            if split == "test":
                write_original(data.ours["first"], blocks[:1])
    return data


def read_columns(path: Path) -> list[list[list[str]]]:
    """The token lines of a CoNLL file, split into columns, per sentence (-DOCSTART- lines left out)."""
    sentences: list[list[list[str]]] = []
    current: list[list[str]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if current:
                    sentences.append(current)
                    current = []
                continue
            current.append(parts)
    if current:
        sentences.append(current)
    return sentences


def write_scored_file(source: Path, target: Path, gold_file: Path) -> None:
    """ours' predict.py output (the original columns + its IOB1 prediction) as ``token gold pred`` in IOB2,
    the gold taken from the peers' file after checking that every token is the same."""
    predicted, gold = read_columns(source), read_columns(gold_file)
    if len(predicted) != len(gold):
        raise SystemExit(f"error: {source} holds {len(predicted)} sentences, {gold_file} {len(gold)}")
    with open(target, "w", encoding="utf-8") as fh:
        for pred_rows, gold_rows in zip(predicted, gold):
            if [r[0] for r in pred_rows] != [r[0] for r in gold_rows]:
                raise SystemExit(f"error: {source}: the tokens differ from {gold_file}'s near "
                                 f"{' '.join(r[0] for r in gold_rows[:8])}")
            for row, gold_row, tag in zip(pred_rows, gold_rows, to_iob2([r[-1] for r in pred_rows])):
                fh.write(f"{row[0]} {gold_row[-1]} {tag}\n")
            fh.write("\n")
