"""How closely does the ``conll`` word tokenizer reproduce CoNLL-2003's own tokenisation from natural text?

For each sentence of CoNLL-2003 (IOB1 files, first column the token, -DOCSTART- skipped) the gold tokens are
detokenised into natural text with NLTK's ``TreebankWordDetokenizer`` and re-tokenised with
``tokenize(text, name)``. Reported per split and tokenizer (``whitespace`` is the reference row):

- exact sent %: sentences whose produced tokens equal the gold tokens exactly;
- boundary F1 %: gold token character boundaries reproduced. Gold tokens are located in the detokenised text
  (in order; the detokenizer rewrites `` and '' as "), each token contributes its start and end offset, and
  boundary precision/recall/F1 compare the produced tokens' boundary set with the gold one; recall is
  "% of gold token boundaries reproduced";
- token %: gold tokens whose exact (start, end) span is a produced token;
- entity %: gold entity spans (IOB1 tags via ``to_spans(tags, "IOB1")``) whose first-token start and
  last-token end are both produced token boundaries (so the entity could be labelled on these tokens).

Then the most frequent disagreements of the first tokenizer (gold token -> produced tokens covering it, digits
written 9 so that one kind is counted together).

    python benchmarks/tokenizer_agreement.py [--data DIR] [--limit N] [--tokenizers conll,whitespace]
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ner_toolkit.data.schemes import to_spans  # noqa: E402
from ner_toolkit.data.text import tokenize  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "conll2003"
SPLITS = ("train", "dev", "test")
# The detokenizer turns both Treebank quote tokens back into a plain double quote.
_QUOTE_FORMS = {"``": ('``', '"'), "''": ("''", '"')}


def read_conll(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                if tokens:
                    yield tokens, tags
                tokens, tags = [], []
                continue
            if parts[0] == "-DOCSTART-":
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield tokens, tags


def _shape(token: str) -> str:
    """Digits as 9, so that 64 .500 -> 64.500 and 59 .543 -> 59.543 are one kind of disagreement."""
    return re.sub(r"\d", "9", token)


def locate(text: str, tokens: list[str]) -> Optional[list[tuple[int, int]]]:
    """Offsets of the gold tokens in the detokenised text, in order; None if one cannot be found."""
    spans = []
    pos = 0
    for token in tokens:
        forms = _QUOTE_FORMS.get(token, (token,))
        best = None
        for form in forms:
            i = text.find(form, pos)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, i + len(form))
        if best is None or text[pos:best[0]].strip():
            return None
        spans.append(best)
        pos = best[1]
    return spans


class Score:
    def __init__(self) -> None:
        self.sentences = self.exact = self.unlocated = 0
        self.gold_tokens = self.token_hits = 0
        self.gold_bounds = self.produced_bounds = self.bound_hits = 0
        self.entities = self.entity_hits = 0
        self.seconds = 0.0
        self.disagreements: Counter = Counter()
        self.examples: dict = {}

    def add(self, gold: list[str], tags: list[str], text: str, name: str) -> None:
        self.sentences += 1
        t0 = time.perf_counter()
        produced, offsets = tokenize(text, name)
        self.seconds += time.perf_counter() - t0
        self.exact += produced == gold
        gold_offsets = locate(text, gold)
        if gold_offsets is None:  # cannot happen with the detokenizer's output; counted, not scored
            self.unlocated += 1
            return
        produced_spans = set(offsets)
        starts = {s for s, _ in offsets}
        ends = {e for _, e in offsets}
        gold_b = {s for s, _ in gold_offsets} | {e for _, e in gold_offsets}
        prod_b = starts | ends
        self.gold_tokens += len(gold)
        self.gold_bounds += len(gold_b)
        self.produced_bounds += len(prod_b)
        self.bound_hits += len(gold_b & prod_b)
        for token, span in zip(gold, gold_offsets):
            if span in produced_spans:
                self.token_hits += 1
            else:
                covering = " ".join(text[s:e] for s, e in offsets if s < span[1] and e > span[0])
                kind = (_shape(token), _shape(covering))
                self.disagreements[kind] += 1
                self.examples.setdefault(kind, (token, covering))
        for _, first, end in to_spans(tags, "IOB1"):
            self.entities += 1
            self.entity_hits += gold_offsets[first][0] in starts and gold_offsets[end - 1][1] in ends

    def row(self, split: str, name: str) -> str:
        pct = lambda a, b: f"{100.0 * a / b:.2f}" if b else "-"  # noqa: E731
        p = self.bound_hits / self.produced_bounds if self.produced_bounds else 0.0
        r = self.bound_hits / self.gold_bounds if self.gold_bounds else 0.0
        f1 = f"{200 * p * r / (p + r):.2f}" if p + r else "-"
        return (f"| {split} | {name} | {self.sentences} | {pct(self.exact, self.sentences)} | "
                f"{pct(self.token_hits, self.gold_tokens)} | {pct(self.bound_hits, self.gold_bounds)} | {f1} | "
                f"{pct(self.entity_hits, self.entities)} ({self.entities}) | {self.seconds:.1f} |")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with train.txt, dev.txt, test.txt")
    parser.add_argument("--limit", type=int, default=0, help="sentences per split (0: all)")
    parser.add_argument("--tokenizers", default="conll,whitespace", help="comma-separated; the first gets the "
                        "disagreement list")
    parser.add_argument("--top", type=int, default=10, help="disagreement kinds to list")
    args = parser.parse_args(argv)
    print("$ python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    splits = [(s, args.data / f"{s}.txt") for s in SPLITS if (args.data / f"{s}.txt").is_file()]
    if not splits:
        print(f"SKIP: no CoNLL-2003 data at {args.data} (expected train.txt, dev.txt, test.txt)")
        return 0
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    detok = TreebankWordDetokenizer()
    names = [n.strip() for n in args.tokenizers.split(",") if n.strip()]
    total = {n: Score() for n in names}
    print()
    print("Gold CoNLL-2003 tokens -> TreebankWordDetokenizer text -> tokenize(text, name). exact sent: produced "
          "tokens == gold; token: gold tokens whose exact char span is a produced token; boundary R: gold token "
          "char boundaries (starts and ends) reproduced; boundary F1: vs produced boundaries; entity: gold "
          "IOB1 entities whose start and end are produced token boundaries; secs: tokenizer time.")
    print()
    print("| split | tokenizer | sentences | exact sent % | token % | boundary R % | boundary F1 % | entity % (n) | secs |")
    print("|---|---|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    for split, path in splits:
        scores = {n: Score() for n in names}
        for i, (tokens, tags) in enumerate(read_conll(path)):
            if args.limit and i >= args.limit:
                break
            text = detok.detokenize(tokens)
            for n in names:
                scores[n].add(tokens, tags, text, n)
        for n in names:
            print(scores[n].row(split, n))
            t = total[n]
            for attr in ("sentences", "exact", "unlocated", "gold_tokens", "token_hits", "gold_bounds",
                         "produced_bounds", "bound_hits", "entities", "entity_hits", "seconds"):
                setattr(t, attr, getattr(t, attr) + getattr(scores[n], attr))
            t.disagreements.update(scores[n].disagreements)
            for kind, example in scores[n].examples.items():
                t.examples.setdefault(kind, example)
    for n in names:
        print(total[n].row("**all**", n))
    unlocated = {n: t.unlocated for n, t in total.items() if t.unlocated}
    if unlocated:
        print(f"\nsentences whose gold tokens could not be located in the detokenised text (not scored): {unlocated}")
    first = names[0]
    print(f"\nTop {args.top} disagreement kinds for `{first}` (gold token -> produced tokens overlapping it; digits "
          "shown as 9), all splits; each gold token not reproduced counts once:")
    print()
    print("| count | gold | produced | example |")
    print("|---|---|---|---|")
    for kind, count in total[first].disagreements.most_common(args.top):
        gold, produced = kind
        example = total[first].examples[kind]
        print(f"| {count} | `{gold}` | `{produced}` | `{example[0]}` -> `{example[1]}` |")
    print(f"\nwall time: {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
