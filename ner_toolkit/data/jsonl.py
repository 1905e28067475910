"""Streaming readers of raw text and of offset-annotated JSON Lines, yielding ``Document`` objects.

``read_jsonl`` takes, record by record (one file may mix them): this toolkit's ``{"text", "entities":
[[start, end, label] | {"start", "end", "label", ...}]}`` (its prediction output, with ``text`` and
``score`` in each entity, reads back); Doccano ``{"text", "label" | "labels": [[start, end, label]]}``;
Label Studio JSON-MIN ``{"text", "label": [{"start", "end", "text", "labels": [L]}]}``; Label Studio
tasks ``{"data", "annotations": [{"result"}]}``, one per line or as the full export (one JSON array,
known by ``[`` as the file's first non-blank character); Prodigy ``{"text", "spans"}`` (its ``tokens``
ignored: the model's tokeniser decides); HF-datasets rows ``{"tokens", "ner_tags" | "tags"}``, tags as
names or as ids into ``tag_names``; unlabelled ``{"text"}`` or ``{"tokens"}`` alone.

Offsets are Python string indices (code points), end exclusive. Label Studio counts JavaScript
(UTF-16) units, which differ after an emoji: a span whose ``text`` does not match the Python slice is
retried as UTF-16 units and converted when that matches.
"""
from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional, Sequence

from ner_toolkit.data.plaintext import check_readable, decoded_lines, open_binary
from ner_toolkit.data.schemes import entity_type_problem, tag_problem
from ner_toolkit.data.text import MisalignedPolicy, Document, align_spans, bio_tags, get_tokenizer
from ner_toolkit.data.validate import InvalidJSON, InvalidText, decode_json, load_json
from ner_toolkit.errors import PathLike, UserError

__all__ = ["AlignmentReport", "ExpandedSpan", "SkippedSpan", "read_jsonl"]

_POLICIES = ("expand", "skip", "error")
SPAN_KEYS = ("entities", "spans", "label", "labels")
TAG_KEYS = ("ner_tags", "tags")
# Never carried into Document.fields: the text, the tokens and every kind of annotation.
_NOT_FIELDS = frozenset(SPAN_KEYS + TAG_KEYS + ("text", "tokens", "annotations", "completions", "predictions"))
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_CONLL_SPACE = re.compile(r"[ \t\n\r\f\v]")  # what a CoNLL column cannot hold
_FIX_POLICY = "set data.misaligned: expand or skip, or fix the annotation"


# A gold span (whitespace-trimmed) and the token edges it was widened to; one left out, and why.
ExpandedSpan = NamedTuple("ExpandedSpan", [("line", int), ("label", str), ("start", int), ("end", int),
                                           ("text", str), ("to_start", int), ("to_end", int), ("to_text", str)])
SkippedSpan = NamedTuple("SkippedSpan", [("line", int), ("label", str), ("start", int), ("end", int),
                                         ("text", str), ("why", str)])


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


@dataclass
class AlignmentReport:
    """How the gold character spans of one file mapped onto tokens: ``spans == aligned +
    len(expanded) + len(skipped)`` (exact duplicates within a record are collapsed first)."""

    path: str
    spans: int = 0                                            # gold spans read
    aligned: int = 0                                          # kept exactly
    expanded: list[ExpandedSpan] = field(default_factory=list)  # widened to token edges
    skipped: list[SkippedSpan] = field(default_factory=list)    # left out, with why

    def lines(self, limit: int = 10) -> list[str]:
        """A summary line with the counts, then up to ``limit`` expanded or skipped spans in file order."""
        out = [f"{self.path}: {self.spans} gold span(s): {self.aligned} aligned to tokens, "
               f"{len(self.expanded)} expanded to token edges, {len(self.skipped)} skipped"]
        events = sorted([(e.line, e.start, f"does not fall on token boundaries: expanded to [{e.to_start}, "
                                            f"{e.to_end}) {_quote(e.to_text)}", e) for e in self.expanded]
                        + [(s.line, s.start, f"{s.why}: skipped", s) for s in self.skipped], key=lambda x: x[:2])
        out.extend(f"{self.path}:{line}: span [{span.start}, {span.end}) {_quote(span.text)} {span.label} {what}"
                   for line, _, what, span in events[:limit])
        if len(events) > limit:
            out.append(f"... and {len(events) - limit} more")
        return out


def read_jsonl(path: PathLike, tokenizer: str, misaligned: MisalignedPolicy = "expand",
               tag_names: Optional[Sequence[str]] = None,
               report: Optional[AlignmentReport] = None, unknown_tag: Optional[str] = None) -> Iterator[Document]:
    """One ``Document`` per record of ``path`` (``-``: stdin), in file order; see the module docstring.

    Text records are tokenised with ``tokenizer``; their gold spans become BIO ``labels`` and, as given
    but whitespace-trimmed, ``entities`` (aligned, expanded and skipped alike, for scoring by exact
    offsets; not spans whose offsets miss their own ``text``). Token rows get their tags as ``labels``,
    ``entities`` None. Under ``misaligned: error`` any span not kept exactly (inside a token, overlapping,
    covering no token, offsets missing their text) is a UserError. Other keys of a record go to
    ``fields``; a Label Studio task's keys (``id``, ``meta``) too, and ``data``'s other than the text
    under ``fields["data"]``. A Label Studio array export is read whole; a task's line is the line it
    starts on, and messages also name it ``task N``. ``unknown_tag``: a token row's tag that marks a token
    nobody annotated (partial labels, kept as it is); None: no such tag. Every string of a record is
    checked (``data.validate``): text that cannot be tokenised is a UserError naming the line.
    """
    get_tokenizer(tokenizer)
    if misaligned not in _POLICIES:
        raise ValueError(f"misaligned must be one of {', '.join(_POLICIES)}, not {misaligned!r}")
    check_readable(path, "JSONL")
    return _Reader(path, tokenizer, misaligned, tag_names, report, unknown_tag).documents()


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass: true/false are not offsets


class _Reader:
    def __init__(self, path: PathLike, tokenizer: str, policy: MisalignedPolicy,
                 tag_names: Optional[Sequence[str]], report: Optional[AlignmentReport],
                 unknown_tag: Optional[str] = None) -> None:
        self.path, self.tokenizer, self.policy, self.tag_names, self.report = path, tokenizer, policy, tag_names, report
        self.unknown_tag = unknown_tag
        self.line, self.where = 0, ""   # the record being read, for messages

    def error(self, message: str) -> UserError:
        return UserError(self.where + message, self.path, self.line)

    def documents(self) -> Iterator[Document]:
        with open_binary(self.path) as handle:
            lines = decoded_lines(handle, self.path, "JSONL")
            for number, text in lines:
                if not text.strip():
                    continue
                if self.line == 0 and text.lstrip().startswith("["):  # the first record: an array export
                    rest = "\n".join([text] + [t for _, t in lines])
                    yield from self._array(rest, number)
                    return
                self.line = number
                try:
                    record = load_json(text)
                except InvalidJSON as e:
                    raise self.error(f"{e}; write one JSON object per line" if e.syntax else str(e)) from None
                except InvalidText as e:
                    raise self.error(str(e)) from None
                yield self.record(record)

    def _array(self, doc: str, first_line: int) -> Iterator[Document]:
        """The tasks of a JSON array, decoded one at a time so each gets the line it starts on."""

        def skip(at: int) -> int:
            return _JSON_SPACE.match(doc, at).end()  # type: ignore[union-attr]

        def fail(message: str) -> UserError:
            return UserError(message, self.path, first_line + doc.count("\n", 0, pos))

        pos, counted, self.line = skip(doc.index("[") + 1), 0, first_line
        for index in itertools.count(1):
            if index == 1 and doc.startswith("]", pos):
                break
            self.line += doc.count("\n", counted, pos)
            counted = pos
            try:
                record, end = decode_json(doc, pos)
            except InvalidJSON as e:
                line = self.line if e.line is None else first_line + e.line - 1
                raise UserError(f"{e}; fix the JSON array of tasks" if e.syntax else f"task {index}: {e}", self.path,
                                line) from None
            except InvalidText as e:
                raise UserError(f"task {index}: {e}", self.path, self.line) from None
            self.where = f"task {index}: "
            yield self.record(record)
            self.where, pos = "", skip(end)
            if doc.startswith(",", pos):
                pos = skip(pos + 1)
            elif doc.startswith("]", pos):
                break
            else:
                raise fail(f"expected , or ] after task {index} (is the array cut short?); fix the JSON array")
        pos = skip(pos + 1)
        if pos < len(doc):
            raise fail("content after the closing ] of the JSON array; a file holds one array of tasks or "
                       "one JSON object per line")

    def record(self, obj: Any) -> Document:
        if not isinstance(obj, dict):
            raise self.error(f"a record is {_kind(obj)}, not a JSON object; write one object per line "
                             '(e.g. {"text": ..., "entities": [[start, end, "LABEL"]]})')
        fields = {k: v for k, v in obj.items() if k not in _NOT_FIELDS}
        has_text, has_tokens = "text" in obj, "tokens" in obj
        if not has_text and not has_tokens and isinstance(obj.get("data"), dict):
            return self._label_studio(obj, fields)
        span_keys, tag_keys = [k for k in SPAN_KEYS if k in obj], [k for k in TAG_KEYS if k in obj]
        for keys in (span_keys, tag_keys):
            if len(keys) > 1:
                raise self.error(f"has both {keys[0]!r} and {keys[1]!r}; keep the one that holds the annotation")
        if has_tokens and (not has_text or (tag_keys and not span_keys)):
            return self._tokens(obj, tag_keys[0] if tag_keys else None, fields)
        if not has_text:
            raise self.error(f"has no \"text\" or \"tokens\" (its keys: {', '.join(map(str, obj)) or 'none'}); give "
                             'each record its "text" (with "entities") or its "tokens" (with "ner_tags")')
        # text + entities + tokens + tags is this toolkit's own output: the entities are the annotation.
        if tag_keys and not span_keys:
            raise self.error(f"{tag_keys[0]!r} holds one tag per token; give the \"tokens\" too, or give character "
                             'spans as "entities" instead')
        text = obj["text"]
        if not isinstance(text, str):
            raise self.error(f'"text" is {_kind(text)}, not a string; give the text as a JSON string')
        if not span_keys:
            return Document.from_text(text, self.tokenizer, self.line, fields)
        items = obj[span_keys[0]]
        if not isinstance(items, list):
            raise self.error(f"{span_keys[0]!r} is {_kind(items)}, not a list of spans; write it as "
                             '[[start, end, "LABEL"], ...] or [{"start": ..., "end": ..., "label": ...}, ...]')
        spans = [s for i, item in enumerate(items) for s in self._span(item, f"entity {i + 1}", text)]
        return self._aligned(text, spans, fields)

    def _label_studio(self, task: dict, fields: dict) -> Document:
        data = task["data"]
        strings = ["text"] if "text" in data else [k for k, v in data.items() if isinstance(v, str)]
        if len(strings) != 1:
            raise self.error(f"the task's data has {'several' if strings else 'no'} string values (its keys: "
                             f"{', '.join(map(str, data)) or 'none'}); name the text field \"text\"")
        key, text = strings[0], data[strings[0]]
        if not isinstance(text, str):
            raise self.error(f'data.{key} is {_kind(text)}, not a string; give the text as a JSON string')
        rest = {k: v for k, v in data.items() if k != key}
        fields = {k: v for k, v in fields.items() if k != "data"} | ({"data": rest} if rest else {})
        annotations = task.get("annotations", task.get("completions", []))  # completions: before LS 1.0
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise self.error('"annotations" must be a list of objects; export the tasks from Label Studio as JSON')
        chosen = next((a for a in annotations if not a.get("was_cancelled")), None)
        if chosen is None:  # no annotation, or every one cancelled: unlabelled
            return Document.from_text(text, self.tokenizer, self.line, fields)
        result = chosen.get("result", [])
        if not isinstance(result, list):
            raise self.error(f'an annotation\'s "result" is {_kind(result)}, not a list')
        # Relations, choices, text areas... annotate something else than entity spans.
        spans = [s for i, item in enumerate(result) if isinstance(item, dict) and item.get("type") == "labels"
                 for s in self._span(item.get("value"), f"annotation result {i + 1}", text)]
        return self._aligned(text, spans, fields)

    def _span(self, item: Any, name: str, text: str) -> list[tuple[int, int, str, Optional[str]]]:
        """(start, end, label, its text if given) for each label of one span, offsets checked."""
        shape = '; write a span as [start, end, "LABEL"] or {"start": ..., "end": ..., "label": ...}'
        given: Optional[str] = None
        if isinstance(item, list) and len(item) == 3:
            start, end, labels = item[0], item[1], [item[2]]
        elif isinstance(item, dict):
            start, end, given = item.get("start"), item.get("end"), item.get("text")  # missing: null
            labels = item["labels"] if "labels" in item else [item.get("label")]  # Label Studio's: a list
            if not isinstance(labels, list) or not labels or not isinstance(given, (str, type(None))):
                raise self.error(f'{name}: "labels" must be a non-empty list of label names and "text" a string; '
                                 "fix the span as Label Studio exports it")
        else:
            raise self.error(f"{name} is {_kind(item)}{f' of {len(item)} items' if isinstance(item, list) else ''}{shape}")
        if not _is_int(start) or not _is_int(end):
            raise self.error(f"{name}: start and end must be integers, not {_kind(start)} and {_kind(end)}{shape}")
        for label in labels:
            if not isinstance(label, str) or not label.strip():
                raise self.error(f"{name}: the label must be a non-empty string, not {label!r}; name the entity type")
            if _CONLL_SPACE.search(label):
                raise self.error(f"{name}: label {label!r} holds whitespace, which a tag column cannot hold; "
                                 f"rename it (e.g. {'_'.join(label.split())})")
            problem = entity_type_problem(label)
            if problem:
                raise self.error(f"{name}: {problem}")
        if given is not None and text[start:end] != given and 0 <= start:
            converted = _from_utf16(text, start, end)
            if converted is not None and text[converted[0]:converted[1]] == given:
                start, end = converted
            elif 0 <= start < end <= len(text):
                return [(start, end, label, given) for label in labels]  # a mismatch: skipped by _aligned
        if not 0 <= start < end <= len(text):
            raise self.error(f"{name} [{start}, {end}) is out of range for a text of {len(text)} characters; "
                             "offsets are character positions with 0 <= start < end <= length (end exclusive)")
        return [(start, end, label, None) for label in labels]

    def _aligned(self, text: str, spans: list[tuple[int, int, str, Optional[str]]], fields: dict) -> Document:
        doc = Document.from_text(text, self.tokenizer, self.line, fields)
        seen: set[tuple[int, int, str, bool]] = set()
        unique, mismatched = [], []
        for start, end, label, given in spans:
            while given is None and start < end and text[start].isspace():
                start += 1
            while given is None and end > start and text[end - 1].isspace():
                end -= 1
            if (start, end, label, given is None) in seen or seen.add((start, end, label, given is None)):
                continue  # exact duplicates collapse silently
            if given is None:
                unique.append((start, end, label))
            else:
                why = f"offsets do not match its text {_quote(given)} (in Python or UTF-16 units)"
                mismatched.append(SkippedSpan(self.line, label, start, end, text[start:end], why))
        alignment = align_spans(unique, doc.offsets, "skip" if self.policy == "error" else self.policy, text)
        skipped = mismatched + [SkippedSpan(self.line, label, s, e, text[s:e], why if s < e else "is only whitespace")
                                for label, s, e, why in alignment.skipped]
        if self.policy == "error" and skipped:
            s = skipped[0]
            raise self.error(f"span [{s.start}, {s.end}) {_quote(s.text)} {s.label} {s.why}; {_FIX_POLICY}")
        doc.labels = bio_tags(alignment.spans, len(doc.tokens))
        doc.entities = [(label, s, e) for s, e, label in unique if s < e]
        if self.report is not None:
            starts, ends = [s for s, _ in doc.offsets], [e for _, e in doc.offsets]
            for label, s, e in alignment.expanded:
                first, last = bisect.bisect_right(ends, s), bisect.bisect_left(starts, e) - 1
                to_start, to_end = doc.offsets[first][0], doc.offsets[last][1]
                self.report.expanded.append(ExpandedSpan(self.line, label, s, e, text[s:e], to_start, to_end,
                                                         text[to_start:to_end]))
            self.report.spans += len(unique) + len(mismatched)
            self.report.aligned += len(alignment.spans) - len(alignment.expanded)
            self.report.skipped.extend(skipped)
        return doc

    def _tokens(self, obj: dict, tag_key: Optional[str], fields: dict) -> Document:
        tokens = obj["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise self.error('"tokens" must be a list of strings; give the words as JSON strings')
        bad = next((i for i, token in enumerate(tokens) if not token or _CONLL_SPACE.search(token)), None)
        if bad is not None:
            raise self.error(f"token {bad + 1} {tokens[bad]!r} is empty or holds whitespace; give each token "
                             "as one non-empty word")
        if tag_key is None:
            return Document.from_tokens(tokens, None, self.line, fields)
        tags = obj[tag_key]
        if not isinstance(tags, list):
            raise self.error(f"{tag_key!r} is {_kind(tags)}, not a list of tags")
        if len(tags) != len(tokens):
            raise self.error(f"{len(tokens)} tokens but {len(tags)} {tag_key}; give one tag per token")
        if tags and all(_is_int(t) for t in tags):
            names = self.tag_names
            if names is None:
                raise self.error(f"{tag_key!r} holds tag ids but no tag names were given; set data.tag_names "
                                 "(the dataset's ClassLabel names, e.g. [O, B-PER, I-PER]) or write the tags as names")
            bad = next((t for t in tags if not 0 <= t < len(names)), None)
            if bad is not None:
                raise self.error(f"tag id {bad} is out of range for {len(names)} tag names; check the tag names")
            tags = [names[t] for t in tags]
        elif not all(isinstance(t, str) for t in tags):
            raise self.error(f"{tag_key!r} must hold all tag names (strings) or all tag ids (integers); "
                             "write them one way")
        problem = next(filter(None, (tag_problem(t) for t in tags if t != self.unknown_tag)), None)
        if problem:
            raise self.error(problem)
        return Document.from_tokens(tokens, tags, self.line, fields)


def _from_utf16(text: str, start: int, end: int) -> Optional[tuple[int, int]]:
    """UTF-16 unit offsets (JavaScript's, Label Studio's) as code-point offsets (the same unless the text
    holds characters outside the BMP); None when one falls inside a surrogate pair or past the end."""
    units = list(itertools.accumulate((2 if ord(ch) > 0xFFFF else 1 for ch in text), initial=0))
    i, j = bisect.bisect_left(units, start), bisect.bisect_left(units, end)
    return (i, j) if i <= j < len(units) and units[i] == start and units[j] == end else None
