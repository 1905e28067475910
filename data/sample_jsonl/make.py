"""Rebuild train/dev/test.jsonl of this directory from ../sample/*.txt (CoNLL-2003, IOB1).

Each CoNLL sentence becomes one record {"id", "text", "entities": [[start, end, label], ...]}: the
tokens are detokenised into natural text (NLTK's Treebank detokenizer: "Germany 's" -> "Germany's",
"Paris ." -> "Paris.") and every entity gets the character offsets of its tokens in that text. This
is the shape annotation tools export, so training from it exercises the same path as a user's
Doccano or Label Studio data.

    python data/sample_jsonl/make.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from nltk.tokenize.treebank import TreebankWordDetokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from ner_toolkit.data.conll import Sentence, is_docstart, read_conll  # noqa: E402
from ner_toolkit.data.schemes import to_spans  # noqa: E402


def locate(text: str, tokens: list[str]) -> list[tuple[int, int]]:
    """Each token's offsets in the detokenised text (found in order; the detokenizer keeps their characters)."""
    offsets, pos = [], 0
    for token in tokens:
        start = text.index(token, pos)
        offsets.append((start, start + len(token)))
        pos = start + len(token)
    return offsets


def convert(source: Path, target: Path) -> int:
    detokenizer = TreebankWordDetokenizer()
    records, document = [], 0
    for item in read_conll(source, 0, -1):
        if is_docstart(item):
            document += 1
        if not isinstance(item, Sentence):
            continue
        text = detokenizer.detokenize(item.tokens)
        offsets = locate(text, item.tokens)
        entities = [[offsets[s][0], offsets[e - 1][1], label] for label, s, e in to_spans(item.labels, "IOB1")]
        records.append({"id": f"{source.stem}-{document}-{len(records)}", "text": text, "entities": entities})
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return len(records)


if __name__ == "__main__":
    for split in ("train", "dev", "test"):
        n = convert(HERE.parent / "sample" / f"{split}.txt", HERE / f"{split}.jsonl")
        print(f"{split}.jsonl: {n} records")
