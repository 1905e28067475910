"""Span-level evaluation (precision, recall, F1: micro, macro and per type).

Two modes:

* ``conlleval`` (default): spans are read the way conlleval reads them (seqeval's default mode; here
  ``schemes.to_spans``, tested equal to seqeval's ``get_entities``), so illegal
  sequences such as ``O I-PER`` in BIO still produce a chunk. Numbers match ``conlleval.pl``.
* ``strict``: seqeval's strict mode with the scheme's rules; chunks that are not well formed are not counted.

Partially annotated gold (``unknown_tag``, e.g. ``?``): only the annotated positions are scored. Gold spans
are read within each stretch of known tags; a predicted span that covers an unknown position is neither
right nor wrong and is left out; token accuracy counts known positions only.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ner_toolkit.data.schemes import (Scheme, SchemeError, as_roles, convert, detect_scheme, get_scheme, known_runs,
                                      split_tag, tag_runs, to_spans)

# (sentence index, start, end exclusive) per entity type
_SpanSets = dict[str, set[tuple[int, int, int]]]


def _check_shapes(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences but prediction has {len(pred)}")
    for i, (g, p) in enumerate(zip(gold, pred), 1):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: gold has {len(g)} tags but prediction has {len(p)}")


def gold_scheme(gold: Sequence[Sequence[str]], fallback: Union[Scheme, Sequence[Sequence[str]]],
                unknown_tag: Optional[str] = None) -> Scheme:
    """The scheme of ``gold`` (its known runs with ``unknown_tag``), detected once for a whole evaluation.
    All-O gold says nothing about the scheme: ``fallback`` decides, a Scheme or tags to detect it from."""
    known = gold if unknown_tag is None else known_runs(gold, unknown_tag)
    if any(t != "O" for tags in known for t in tags):
        return detect_scheme(known)
    return fallback if isinstance(fallback, Scheme) else detect_scheme(fallback)


def _type_ids(sentences: Sequence[Sequence[str]], scheme: Scheme) -> dict[str, str]:
    """Map entity types to plain names so seqeval's tag parsing cannot mangle types containing "-"."""
    types: set[str] = set()
    for tags in sentences:
        # to_spans validates every tag against the scheme with a user-facing message.
        types.update(t for t, _, _ in to_spans(tags, scheme))
    return {t: f"T{i}" for i, t in enumerate(sorted(types))}


def _for_seqeval(tags: Sequence[str], ids: dict[str, str], scheme: Scheme) -> list[str]:
    """Tags with safe type names and each prefix as its role's letter (seqeval knows no M-, L-, U-)."""
    out = []
    for tag in as_roles(tags, scheme):
        prefix, type_ = split_tag(tag)
        out.append("O" if prefix == "O" else f"{prefix}-{ids[type_]}")
    return out


def _spans(sentences: Sequence[Sequence[str]], scheme: Scheme, strict: bool, ids: dict[str, str]) -> _SpanSets:
    import seqeval.scheme

    names = {v: k for k, v in ids.items()}
    found: _SpanSets = {}
    if strict:
        reading = scheme
        if scheme.strict_via is not None:
            # seqeval has no strict reading of it (IOB1); its legal sequences convert without loss.
            reading = get_scheme(scheme.strict_via)
            sentences = [convert(tags, scheme, reading) for tags in sentences]
        token_scheme = getattr(seqeval.scheme, scheme.seqeval)
        mapped = [_for_seqeval(tags, ids, reading) for tags in sentences]
        for sent, entities in enumerate(seqeval.scheme.Entities(mapped, token_scheme).entities):
            for e in entities:
                found.setdefault(names[e.tag], set()).add((sent, e.start, e.end))
    else:
        # The conlleval reading is schemes.to_spans: the same spans as seqeval's get_entities (the tests
        # hold them equal on random tag sequences of every scheme), without importing seqeval.metrics,
        # which imports scikit-learn and scipy (1.3 s before a training run's first dev score).
        for sent, tags in enumerate(sentences):
            for type_, start, end in to_spans(tags, scheme):
                found.setdefault(type_, set()).add((sent, start, end))
    return found


def _prf(correct: int, predicted: int, support: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "support": support, "predicted": predicted, "correct": correct}


def _score(gold_spans: _SpanSets, pred_spans: _SpanSets) -> tuple[dict, dict, dict]:
    """Per-type, micro and macro P/R/F1 of two span sets (exact matches of type and position)."""
    per_type: dict[str, dict] = {}
    # Types seen only in gold or only in pred still get a row: they are all misses or all false alarms.
    for type_ in sorted(set(gold_spans) | set(pred_spans)):
        g, p = gold_spans.get(type_, set()), pred_spans.get(type_, set())
        per_type[type_] = _prf(len(g & p), len(p), len(g))
    micro = _prf(sum(r["correct"] for r in per_type.values()),
                 sum(r["predicted"] for r in per_type.values()),
                 sum(r["support"] for r in per_type.values()))
    n_types = len(per_type)
    macro = {k: (sum(r[k] for r in per_type.values()) / n_types if n_types else 0.0)
             for k in ("precision", "recall", "f1")}
    return per_type, micro, macro


def evaluate_offsets(gold: Sequence[Sequence[tuple[str, int, int]]],
                     pred: Sequence[Sequence[tuple[str, int, int]]]) -> dict:
    """P/R/F1 of predicted character spans ``(label, start, end)`` against gold, per document (lists of
    equal length): a prediction is correct when its label, start and end all equal a gold span's.

    Returns the shape of :func:`evaluate_spans` with ``mode`` ``offsets`` and ``documents`` (no token
    counts: the two sides may be tokenised differently).
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} documents but prediction has {len(pred)}")

    def sets(docs: Sequence[Sequence[tuple[str, int, int]]]) -> _SpanSets:
        found: _SpanSets = {}
        for doc, spans in enumerate(docs):
            for label, start, end in spans:
                found.setdefault(label, set()).add((doc, start, end))
        return found

    per_type, micro, macro = _score(sets(gold), sets(pred))
    return {"mode": "offsets", "scheme": "character offsets", "micro": micro, "macro": macro,
            "per_type": per_type, "documents": len(gold)}


def _known_gold_spans(gold: Sequence[Sequence[str]], scheme: Scheme, strict: bool, ids: dict[str, str],
                      unknown_tag: str) -> _SpanSets:
    """Gold spans read within each sentence's stretches of known tags, at their sentence positions."""
    runs, origin = [], []
    for sent, tags in enumerate(gold):
        for offset, run in tag_runs(tags, unknown_tag):
            runs.append(run)
            origin.append((sent, offset))
    found: _SpanSets = {}
    for type_, spans in _spans(runs, scheme, strict, ids).items():
        found[type_] = {(origin[r][0], origin[r][1] + s, origin[r][1] + e) for r, s, e in spans}
    return found


def _without_unknown(spans: _SpanSets, gold: Sequence[Sequence[str]], unknown_tag: str) -> _SpanSets:
    """``spans`` less those that cover a position whose gold tag is unknown."""
    unknown = [[i for i, t in enumerate(tags) if t == unknown_tag] for tags in gold]
    return {type_: {(sent, s, e) for sent, s, e in found if not any(s <= i < e for i in unknown[sent])}
            for type_, found in spans.items()}


def evaluate_spans(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                   scheme: Union[Scheme, str, None] = None, strict: bool = False,
                   unknown_tag: Optional[str] = None) -> dict:
    """Span P/R/F1 of ``pred`` against ``gold`` (lists of tag sentences of equal lengths).

    ``scheme`` (a Scheme or its name) None detects it from gold (:func:`gold_scheme`: from pred when gold is
    all O). ``unknown_tag``: gold positions holding it are left out of the score (see the module docstring);
    None: every gold tag must be a tag. Returns a JSON-serialisable dict with ``mode``, ``scheme`` (its name),
    ``micro``, ``macro``, ``per_type``, ``sentences``, ``tokens``, ``token_accuracy`` (and ``unknown_tokens``
    with ``unknown_tag``); all rates are fractions in [0, 1]. Raises ValueError on shape mismatch, SchemeError
    on bad tags.
    """
    _check_shapes(gold, pred)
    known = gold if unknown_tag is None else known_runs(gold, unknown_tag)
    scheme = gold_scheme(known, pred) if scheme is None else get_scheme(scheme)
    ids = _type_ids(list(known) + list(pred), scheme)
    pred_spans = _spans(pred, scheme, strict, ids)
    if unknown_tag is None:
        gold_spans = _spans(gold, scheme, strict, ids)
    else:
        gold_spans = _known_gold_spans(gold, scheme, strict, ids, unknown_tag)
        pred_spans = _without_unknown(pred_spans, gold, unknown_tag)
    per_type, micro, macro = _score(gold_spans, pred_spans)
    pairs = [(g, p) for gs, ps in zip(gold, pred) for g, p in zip(gs, ps) if g != unknown_tag]
    tokens = len(pairs)
    result = {
        "mode": "strict" if strict else "conlleval",
        "scheme": scheme.name,
        "micro": micro,
        "macro": macro,
        "per_type": per_type,
        "sentences": len(gold),
        "tokens": tokens,
        "token_accuracy": sum(g == p for g, p in pairs) / tokens if tokens else 0.0,
    }
    if unknown_tag is not None:
        result["unknown_tokens"] = sum(len(tags) for tags in gold) - tokens
    return result


def format_report(result: dict) -> str:
    """conlleval-like text table of an :func:`evaluate_spans` result (percentages, 2 decimals)."""
    micro = result["micro"]
    if "tokens" in result:
        counts = (f"sentences: {result['sentences']}; tokens: {result['tokens']}; "
                  f"accuracy: {100 * result['token_accuracy']:.2f}%")
        if "unknown_tokens" in result:
            counts += f"; unknown (not scored): {result['unknown_tokens']}"
    else:
        counts = f"documents: {result['documents']}"
    lines = [f"mode: {result['mode']}; scheme: {result['scheme']}; {counts}; "
             f"phrases: {micro['support']}; found: {micro['predicted']}; correct: {micro['correct']}"]
    width = max([len("macro avg")] + [len(t) for t in result["per_type"]])
    lines.append(f"{'type':<{width}}  {'precision':>10}  {'recall':>10}  {'f1':>10}  {'support':>8}")

    def row(name: str, r: dict, support: str) -> str:
        return (f"{name:<{width}}  {100 * r['precision']:9.2f}%  {100 * r['recall']:9.2f}%  "
                f"{100 * r['f1']:9.2f}%  {support:>8}")

    for type_ in sorted(result["per_type"]):
        r = result["per_type"][type_]
        lines.append(row(type_, r, str(r["support"])))
    lines.append(row("micro avg", micro, str(micro["support"])))
    lines.append(row("macro avg", result["macro"], str(micro["support"])))
    return "\n".join(lines)


def warn_unseen(gold: Sequence[Sequence[str]], types: set[str], scheme: Union[Scheme, str], path: object,
                unknown_tag: Optional[str] = None) -> None:
    """Warn (never fail) about gold entity types outside ``types`` (what the model can predict): they
    count as misses. Gold tags that do not belong to ``scheme`` are a UserError naming ``path``;
    ``unknown_tag`` positions are skipped."""
    from ner_toolkit.errors import UserError, warn

    known = gold if unknown_tag is None else known_runs(gold, unknown_tag)
    try:
        found = {t for tags in known for t, _, _ in to_spans(tags, scheme)}
    except SchemeError as exc:
        raise UserError(str(exc), path) from None
    missing = sorted(found - types)
    if missing:
        warn(f"gold entity types never seen in training: {', '.join(missing)}; their spans count as misses", path)


def unknown_gold_problem(tag: str, unknown_tag: str, ignore_unknown: bool) -> Optional[str]:
    """None if ``tag`` may stand in a gold column, else a one-line reason with the fix."""
    from ner_toolkit.data.schemes import tag_problem

    if tag == unknown_tag:
        return None if ignore_unknown else (f"gold tag {tag!r} marks a token nobody annotated; pass --ignore-unknown "
                                            f"to leave such positions out of the score")
    return tag_problem(tag)


__all__ = ["evaluate_spans", "evaluate_offsets", "gold_scheme", "format_report", "warn_unseen", "unknown_gold_problem",
           "SchemeError"]
