"""The spaCy component: ``nlp.add_pipe("ner_toolkit", config={"model": DIR})`` sets ``doc.ents`` from a model.

Registered through the ``spacy_factories`` entry point (setup.cfg), so ``add_pipe`` finds it without an import.
The model tags each ``doc.text`` through ``Predictor.predict_text`` (its own word tokeniser, character offsets
out) and the entities are placed on whatever tokens the pipeline made (docs/spacy.md has the policy):

- a span on spaCy's token boundaries is taken as it is (``alignment_mode="strict"``);
- a span that cuts a token is expanded to the tokens it touches (``"expand"``): ``span._.ner_expanded`` is
  True and ``span._.ner_offsets`` keeps the model's offsets;
- overlapping spans (after expansion) keep the higher score, then the longer span, then the earlier one;
- nothing is dropped silently: every entity not set is in ``doc._.ner_dropped`` with its reason (``overlap``,
  ``existing``, ``out_of_range``, ``unaligned``), counted in the component's ``stats`` and logged.

Each entity's calibrated span probability is ``span._.ner_score``. No ``from __future__ import annotations``
here: spaCy validates the factory's arguments from its annotations, which must be real types.
"""
import filecmp
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from ..extras import require

require("spacy", "the spaCy component (ner_toolkit.integrations.spacy)")

from spacy.language import Language  # noqa: E402
from spacy.tokens import Doc, Span  # noqa: E402
from spacy.util import minibatch  # noqa: E402

from ..errors import UserError  # noqa: E402
from ..results import Entity  # noqa: E402

__all__ = ["NerToolkitComponent", "make_component", "align", "register_extensions", "FACTORY"]

FACTORY = "ner_toolkit"
MODEL_COPY = "model"  # the model directory's copy inside the component's folder of a saved pipeline
REASONS = ("overlap", "existing", "out_of_range", "unaligned")
MAX_BATCH_SIZE = 65536
_log = logging.getLogger(__name__)


def register_extensions() -> None:
    """The span and doc attributes the component sets; registering twice changes nothing (another copy of the
    component, or this module imported again, keeps the first registration)."""
    for name, default in (("ner_score", None), ("ner_expanded", False), ("ner_offsets", None)):
        if not Span.has_extension(name):
            Span.set_extension(name, default=default)
    if not Doc.has_extension("ner_dropped"):
        Doc.set_extension("ner_dropped", default=None)


def _dropped(entity: Entity, reason: str) -> dict[str, Any]:
    # Plain values only: Doc.to_bytes serialises user_data with msgpack.
    return {"label": entity.label, "start": entity.start, "end": entity.end, "text": entity.text,
            "score": float(entity.score), "reason": reason}


def _overlaps(span: Span, taken: Sequence[Span]) -> bool:
    return any(span.start < other.end and other.start < span.end for other in taken)


def align(doc: Doc, found: Sequence[Entity]) -> tuple[list[tuple[Span, Entity, bool]], list[dict[str, Any]]]:
    """The model's character-offset entities as spans of ``doc``'s tokens, no two overlapping, in text order:
    ``(span, entity, expanded)``; and the entities left out, each a dict with its ``reason``.

    An overlap is resolved by the higher score; equal scores by the longer span (in characters), then the
    earlier start, then the label, so the result never depends on the order the model listed them in."""
    candidates: list[tuple[Span, Entity, bool]] = []
    dropped: list[dict[str, Any]] = []
    length = len(doc.text)
    for entity in found:
        if not 0 <= entity.start < entity.end <= length:
            dropped.append(_dropped(entity, "out_of_range"))
            continue
        span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode="strict")
        expanded = span is None
        if span is None:
            span = doc.char_span(entity.start, entity.end, label=entity.label, alignment_mode="expand")
        if span is None or len(span) == 0:  # no token under it (only whitespace the tokenizer skipped)
            dropped.append(_dropped(entity, "unaligned"))
            continue
        candidates.append((span, entity, expanded))
    candidates.sort(key=lambda c: (-c[1].score, -(c[0].end_char - c[0].start_char), c[0].start_char, c[1].label))
    kept: list[tuple[Span, Entity, bool]] = []
    for candidate in candidates:
        if _overlaps(candidate[0], [k[0] for k in kept]):
            dropped.append(_dropped(candidate[1], "overlap"))
        else:
            kept.append(candidate)
    kept.sort(key=lambda c: c[0].start)
    return kept, dropped


def _same_directory(a: Path, b: Path) -> bool:
    """The two model directories hold the same files with the same bytes (a copy need not be loaded again)."""
    def files(root: Path) -> set[str]:
        return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}

    names = files(a)
    return names == files(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def _load(model: Union[str, "os.PathLike[str]"], device: str, batch_size: int) -> tuple[Any, Path]:
    """The Predictor of ``model`` and the directory it was read from; a missing or broken directory is a
    ``ValueError`` of one line naming the path (the toolkit's ``UserError`` text without ``error:``)."""
    from ..model.directory import resolve_model_dir
    from ..predict import Predictor

    try:
        directory = resolve_model_dir(model)
        return Predictor.load(directory, device=device, batch_size=batch_size), directory
    except UserError as exc:
        where = f"{exc.path}: " if exc.path is not None else ""
        raise ValueError(f"ner_toolkit component: {where}{exc.message}") from None


class NerToolkitComponent:
    """Sets ``doc.ents`` (see the module's docstring); built by the ``ner_toolkit`` factory."""

    def __init__(self, nlp: Language, name: str, model: Optional[str], device: str = "cpu",
                 batch_size: int = 64, overwrite_ents: bool = False) -> None:
        if not model:
            raise ValueError(f"{name}: config 'model' must name a model directory: "
                             f"nlp.add_pipe({FACTORY!r}, config={{'model': DIR}})")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"{name}: batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}")
        register_extensions()
        self.name = name
        self.model = os.fspath(model)
        self.device = device
        self.batch_size = batch_size
        self.overwrite_ents = bool(overwrite_ents)
        self.stats: dict[str, int] = dict.fromkeys(("docs", "entities", "expanded") + REASONS, 0)
        self._warned: set[str] = set()
        self.predictor, self.directory = _load(self.model, device, batch_size)

    @property
    def labels(self) -> tuple[str, ...]:
        """The entity types the model predicts."""
        return tuple(self.predictor.labels.types)

    def __call__(self, doc: Doc) -> Doc:
        [found] = self.predictor.predict_text([doc.text])
        return self.set_annotations(doc, found)

    def pipe(self, stream: Iterable[Doc], *, batch_size: Optional[int] = None) -> Iterator[Doc]:
        """The docs of ``stream`` in their order, ``batch_size`` texts per call of the model (``nlp.pipe``
        passes its own, 1000 by default; the component's when called directly); the model runs their
        windows ``self.batch_size`` at a time."""
        for docs in minibatch(stream, size=batch_size or self.batch_size):
            found = self.predictor.predict_text([doc.text for doc in docs])
            for doc, entities in zip(docs, found):
                yield self.set_annotations(doc, entities)

    def set_annotations(self, doc: Doc, found: Sequence[Entity]) -> Doc:
        """Place ``found`` (character offsets into ``doc.text``) on ``doc``'s tokens as ``doc.ents``."""
        kept, dropped = align(doc, found)
        existing = list(doc.ents)
        ours = [span for span, _, _ in kept]
        if self.overwrite_ents:  # ours win; an existing entity stays where none of ours overlaps it
            existing = [span for span in existing if not _overlaps(span, ours)]
        else:  # the existing entities win, as spaCy's entity_ruler does by default
            clash = [k for k in kept if _overlaps(k[0], existing)]
            dropped += [_dropped(entity, "existing") for _, entity, _ in clash]
            kept = [k for k in kept if k not in clash]
        for span, entity, expanded in kept:
            span._.ner_score = float(entity.score)
            span._.ner_expanded = expanded
            span._.ner_offsets = (entity.start, entity.end)
        doc.ents = sorted(existing + [span for span, _, _ in kept], key=lambda s: s.start)
        doc._.ner_dropped = dropped
        self._count(kept, dropped)
        return doc

    def _count(self, kept: Sequence[tuple[Span, Entity, bool]], dropped: Sequence[dict]) -> None:
        self.stats["docs"] += 1
        self.stats["entities"] += len(kept)
        expanded = [span for span, _, was in kept if was]
        self.stats["expanded"] += len(expanded)
        for span in expanded:
            _log.debug("%s: expanded to spaCy's tokens: %r (%s)", self.name, span.text, span.label_)
        for item in dropped:
            self.stats[item["reason"]] += 1
            _log.debug("%s: entity not set (%s): %r %s [%d, %d)", self.name, item["reason"], item["text"],
                       item["label"], item["start"], item["end"])
        # One warning per kind of event and component; the rest is in stats, doc._.ner_dropped and debug.
        if expanded:
            self._warn_once("expanded", f"{self.name}: an entity did not fall on spaCy's token boundaries and "
                                        "was expanded to them (span._.ner_expanded, span._.ner_offsets)")
        for kind in dict.fromkeys(item["reason"] for item in dropped):  # in the order they came
            self._warn_once(kind, f"{self.name}: an entity was not set ({kind}); see doc._.ner_dropped and "
                                  f"the component's stats")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            _log.warning(message)

    def to_disk(self, path: Union[str, "os.PathLike[str]"], *, exclude: Iterable[str] = ()) -> None:
        """A copy of the model directory in ``path/model``, so the saved pipeline holds its model."""
        target = Path(path) / MODEL_COPY
        if MODEL_COPY in exclude or target.resolve() == self.directory.resolve():
            return  # saved where it was loaded from: the copy is already there
        from ..atomic import atomic_directory

        with atomic_directory(target) as tmp:
            shutil.copytree(self.directory, tmp, dirs_exist_ok=True)

    def from_disk(self, path: Union[str, "os.PathLike[str]"], *,
                  exclude: Iterable[str] = ()) -> "NerToolkitComponent":
        """Use the saved copy of the model (``to_disk``): loaded again only where it differs from the
        directory the config named, which the factory has already loaded."""
        copy = Path(path) / MODEL_COPY
        if MODEL_COPY in exclude or not copy.is_dir() or copy.resolve() == self.directory.resolve() \
                or _same_directory(copy, self.directory):
            return self
        self.predictor, self.directory = _load(copy, self.device, self.batch_size)
        return self


@Language.factory(FACTORY, default_config={"model": None, "device": "cpu", "batch_size": 64,
                                            "overwrite_ents": False},
                  assigns=["doc.ents", "token.ent_type", "token.ent_iob"])
def make_component(nlp: Language, name: str, model: Optional[str], device: str, batch_size: int,
                   overwrite_ents: bool) -> NerToolkitComponent:
    """The ``ner_toolkit`` factory: ``model`` a model directory (or a training output directory holding
    ``model/``), ``device`` auto|cpu|cuda[:N], ``batch_size`` texts per call of the model, ``overwrite_ents``
    whether the model's entities replace overlapping ones already in ``doc.ents``."""
    return NerToolkitComponent(nlp, name, model, device, batch_size, overwrite_ents)
