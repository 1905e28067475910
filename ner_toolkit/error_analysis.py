"""Where a tagger goes wrong, per entity type: each gold span is correct, of the wrong type (right
boundaries), of the wrong boundaries (overlapped by a prediction, none with its exact boundaries) or
missed (no prediction overlaps it); each predicted span overlapping no gold span is spurious."""
from __future__ import annotations

from typing import Sequence, Union

from .data.schemes import Scheme, to_spans

KINDS = ("correct", "wrong_type", "wrong_boundaries", "missed", "spurious")


def error_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                 scheme: Union[Scheme, str]) -> dict[str, dict[str, int]]:
    """Counts per type (gold spans by their gold type, spurious ones by their predicted type), conlleval reading."""
    counts: dict[str, dict[str, int]] = {}

    def add(type_: str, kind: str) -> None:
        counts.setdefault(type_, dict.fromkeys(KINDS, 0))[kind] += 1

    for gold_tags, pred_tags in zip(gold, pred):
        g_spans, p_spans = to_spans(gold_tags, scheme), to_spans(pred_tags, scheme)
        exact = {(s, e): t for t, s, e in p_spans}
        for type_, start, end in g_spans:
            if exact.get((start, end)) == type_:
                add(type_, "correct")
            elif (start, end) in exact:
                add(type_, "wrong_type")
            elif any(s < end and start < e for _, s, e in p_spans):
                add(type_, "wrong_boundaries")
            else:
                add(type_, "missed")
        for type_, start, end in p_spans:
            if not any(s < end and start < e for _, s, e in g_spans):
                add(type_, "spurious")
    return dict(sorted(counts.items()))


def format_error_report(counts: dict[str, dict[str, int]]) -> str:
    width = max([len("total")] + [len(t) for t in counts])
    header = f"{'type':<{width}}" + "".join(f"{k.replace('_', ' '):>18}" for k in KINDS)
    lines = [header]
    totals = dict.fromkeys(KINDS, 0)
    for type_, row in counts.items():
        lines.append(f"{type_:<{width}}" + "".join(f"{row[k]:>18}" for k in KINDS))
        for k in KINDS:
            totals[k] += row[k]
    lines.append(f"{'total':<{width}}" + "".join(f"{totals[k]:>18}" for k in KINDS))
    return "\n".join(lines)
