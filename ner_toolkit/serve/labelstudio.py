"""Label Studio's side of the ML-backend protocol, without HTTP: the labeling config read, predictions
written as Label Studio regions, annotations read back as corpus records.

Label Studio indexes a text in JavaScript (UTF-16) units; Python in code points. They differ after a
character outside the BMP (an emoji): regions are written in UTF-16 units and annotations converted back
(``formats`` and ``data.jsonl`` do the same for files).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..data.jsonl import _from_utf16
from ..formats import label_studio_regions
from ..results import Entity, Prediction

# A <Choices> answer that marks an annotation as incomplete: its unlabelled words train as unknown.
PARTIAL_CHOICES = frozenset({"incomplete", "partial"})


class ConfigProblem(ValueError):
    """A labeling config this backend cannot serve (no <Labels> over a <Text>): the message says why."""


@dataclass(frozen=True)
class LabelConfig:
    """What a labeling config says to an NER backend: the <Labels> control (``from_name``), the <Text>
    object it labels (``to_name``), the task data key holding the text (``text_key``, from
    ``value="$text"``), and the label values it offers."""

    from_name: str
    to_name: str
    text_key: str
    labels: tuple[str, ...]


def parse_label_config(xml: str) -> LabelConfig:
    """The first <Labels> whose ``toName`` is a <Text> with a ``$key`` value; ``ConfigProblem`` otherwise."""
    if not isinstance(xml, str) or not xml.strip():
        raise ConfigProblem("no labeling config was sent (label_config / schema is empty)")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigProblem(f"the labeling config is not well-formed XML ({exc})") from None
    texts = {}
    for tag in root.iter("Text"):
        value, name = tag.get("value", ""), tag.get("name")
        if name and value.startswith("$") and tag.get("valueType", "text") == "text":
            texts[name] = value[1:]
    for control in root.iter("Labels"):
        name, to_name = control.get("name"), control.get("toName")
        if name and to_name in texts:
            labels = tuple(dict.fromkeys(v for v in (c.get("value") for c in control.iter("Label")) if v))
            return LabelConfig(name, to_name, texts[to_name], labels)
    raise ConfigProblem('the labeling config has no <Labels name=".." toName=".."> over a <Text name=".." '
                        'value="$key"> (an NER template; a Text with valueType="url" is not read)')


def task_text(task: Any, config: LabelConfig) -> Optional[str]:
    """The task's text (``task["data"][text_key]``), or None when it has none."""
    data = task.get("data") if isinstance(task, dict) else None
    text = data.get(config.text_key) if isinstance(data, dict) else None
    return text if isinstance(text, str) else None


def regions(found: Sequence[Entity], text: str, config: LabelConfig, allowed: Optional[set] = None) -> list[dict]:
    """Label Studio ``labels`` results for the entities of ``text``; ``allowed``: the labels the config
    offers (an entity of another label is left out: Label Studio cannot show it)."""
    shown = ((e.start, e.end, e.label, e.score) for e in found if allowed is None or e.label in allowed)
    return label_studio_regions(text, shown, config.from_name, config.to_name, "ner")


def task_score(prediction: Optional[Prediction]) -> float:
    """How sure the model is of a whole task, for ordering (Label Studio sorts by it: ascending puts the
    least sure first): the geometric mean over the words of the CRF marginal probability of each predicted
    tag, ``exp(mean(log p))``, the per-word analogue of ``ner select``'s least-confidence (1 - score ranks
    as it does); 1.0 for a text without words."""
    if prediction is None or not prediction.token_confidence:
        return 1.0
    logs = [math.log(max(p, 1e-12)) for p in prediction.token_confidence]
    return round(math.exp(sum(logs) / len(logs)), 6)


@dataclass
class Record:
    """One task's annotation as the corpus keeps it: Python character offsets, end exclusive."""

    task: int
    annotation: Optional[int]
    text: str
    entities: list[list] = field(default_factory=list)  # [start, end, label]
    partial: bool = False

    def to_dict(self) -> dict:
        return {"task": self.task, "annotation": self.annotation, "text": self.text, "entities": self.entities,
                "partial": self.partial}

    @classmethod
    def from_dict(cls, obj: dict) -> "Record":
        return cls(obj["task"], obj.get("annotation"), obj["text"], [list(e) for e in obj.get("entities", [])],
                   bool(obj.get("partial")))


class AnnotationProblem(ValueError):
    """An annotation that cannot be kept (no text, a region outside it): the message names the task."""


def record_of(task: Any, annotation: Any, config: LabelConfig) -> Optional[Record]:
    """The corpus record of ``annotation`` on ``task``; None for a cancelled (skipped) annotation, which
    keeps no record. Only regions of ``config``'s <Labels> are read; a <Choices> answer in
    ``PARTIAL_CHOICES`` marks the annotation incomplete."""
    if not isinstance(task, dict) or not isinstance(task.get("id"), int):
        raise AnnotationProblem('the webhook has no "task" object with an integer "id"')
    text = task_text(task, config)
    if text is None:
        raise AnnotationProblem(f'task {task["id"]}: its data has no string "{config.text_key}" (the labeling '
                                f'config\'s <Text value="${config.text_key}">)')
    if not isinstance(annotation, dict):
        raise AnnotationProblem(f'task {task["id"]}: the webhook has no "annotation" object')
    if annotation.get("was_cancelled"):
        return None
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise AnnotationProblem(f'task {task["id"]}: the annotation\'s "result" is not a list')
    entities, partial = [], False
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            continue
        value = item["value"]
        if item.get("type") == "choices":
            partial |= any(str(c).strip().lower() in PARTIAL_CHOICES for c in value.get("choices") or [])
        if item.get("type") != "labels" or item.get("from_name") != config.from_name:
            continue
        start, end = _offsets(text, value, task["id"])
        entities.extend([start, end, label] for label in value.get("labels") or [] if isinstance(label, str))
    aid = annotation.get("id")
    return Record(task["id"], aid if isinstance(aid, int) else None, text, sorted(entities), partial)


def _offsets(text: str, value: dict, task: int) -> tuple[int, int]:
    """A region's offsets in Python units: as given when they select its ``text``, else read as UTF-16."""
    start, end, given = value.get("start"), value.get("end"), value.get("text")
    if type(start) is not int or type(end) is not int:
        raise AnnotationProblem(f"task {task}: a region's start and end must be integers, got {start!r}, {end!r}")
    if isinstance(given, str) and text[start:end] != given:
        converted = _from_utf16(text, start, end)
        if converted is not None and text[converted[0]:converted[1]] == given:
            start, end = converted
    if not 0 <= start < end <= len(text):
        raise AnnotationProblem(f"task {task}: region [{start}, {end}) is outside its text of {len(text)} "
                                f"characters")
    return start, end


def annotation_payload(task: int, text: str, spans: Sequence[tuple[int, int, str]], config: LabelConfig,
                       annotation: Optional[int] = None, partial: bool = False,
                       action: str = "ANNOTATION_CREATED") -> dict:
    """The webhook payload Label Studio sends when ``spans`` (Python offsets, end exclusive) are submitted on
    ``task``: what a simulation posts to ``/webhook`` (or hands to ``LabelStudioBackend.apply``). ``partial``
    adds the ``incomplete`` choice (its config needs no <Choices>: only the choice is read)."""
    result = label_studio_regions(text, ((s, e, label, None) for s, e, label in spans), config.from_name,
                                  config.to_name, "s")
    if partial:
        result.append({"from_name": "status", "to_name": config.to_name, "type": "choices",
                       "value": {"choices": ["incomplete"]}})
    return {"action": action, "task": {"id": task, "data": {config.text_key: text}},
            "annotation": {"id": task if annotation is None else annotation, "result": result, "was_cancelled": False}}
