"""The annotations Label Studio has sent, kept as one JSONL file: one record per task, in task order.

Every change rewrites the whole file through ``atomic.atomic_write`` (a temporary sibling, then
``os.replace``): a crash leaves the previous complete file, never a torn one. A created or updated annotation
replaces its task's record; a deleted one removes it. The corpus is small (what people annotate by hand),
so a rewrite per change costs little and the file is always exactly the corpus.

``write_training_file`` turns the corpus into a training file the toolkit's JSONL reader takes: a complete
annotation as ``{"text", "entities"}`` (unlabelled words are O), an incomplete one as ``{"tokens",
"ner_tags"}`` with the unknown tag on every word outside its spans (partial labels: the CRF sums over every
tag there).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from ..atomic import atomic_write
from ..data.text import Document, align_spans, bio_tags
from ..errors import UserError
from .labelstudio import Record

CORPUS = "annotations.jsonl"


class Corpus:
    """The records of ``directory/annotations.jsonl``, read once at start and kept in memory."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / CORPUS
        self.records: dict[int, Record] = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        record = Record.from_dict(json.loads(line))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise UserError(f"not a corpus record ({exc}); move the file away to start a new corpus",
                                        self.path, number) from None
                    self.records[record.task] = record

    def __len__(self) -> int:
        return len(self.records)

    def put(self, record: Record) -> None:
        self.records[record.task] = record
        self._save()

    def remove(self, task: Optional[int] = None, annotations: Iterable[int] = ()) -> int:
        """Drop the record of ``task`` and the records of the annotation ids ``annotations``; how many went."""
        ids = set(annotations)
        gone = [t for t, r in self.records.items() if t == task or (r.annotation is not None and r.annotation in ids)]
        for t in gone:
            del self.records[t]
        if gone:
            self._save()
        return len(gone)

    def labels(self) -> set[str]:
        return {e[2] for r in self.records.values() for e in r.entities}

    def _save(self) -> None:
        with atomic_write(self.path) as out:
            for task in sorted(self.records):
                out.write(json.dumps(self.records[task].to_dict(), ensure_ascii=False) + "\n")


def write_training_file(records: Iterable[Record], path: Path, tokenizer: str, unknown_tag: str) -> int:
    """Write ``records`` as a JSONL training file (see the module docstring); how many were written."""
    count = 0
    with atomic_write(path) as out:
        for record in records:
            spans = [(s, e, label) for s, e, label in record.entities]
            if record.partial:
                doc = Document.from_text(record.text, tokenizer)
                if not doc.tokens:
                    continue
                aligned = align_spans(spans, doc.offsets, "expand", record.text).spans
                tags = [t if t != "O" else unknown_tag for t in bio_tags(aligned, len(doc.tokens))]
                row: dict = {"tokens": doc.tokens, "ner_tags": tags}
            else:
                row = {"text": record.text, "entities": [list(s) for s in spans]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
