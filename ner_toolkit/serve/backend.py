"""``ner-serve --label-studio``: the server is also a Label Studio ML backend (docs/label-studio.md).

Endpoints added to ``serve.app`` (JSON in and out):

- ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": "ner_toolkit", "model_version", "model_dir",
  "labels", "annotations", "training": {"state": "idle" | "running", "current", "queued", "last"}}``; a
  failed round shows in ``training.last`` with its ``error``.
- ``POST /setup`` ``{"project", "schema": XML, "extra_params"}`` -> ``{"model_version", "labels_not_in_model",
  "model_labels_not_in_config"}``; 422 for a config without <Labels> over a <Text>.
- ``POST /predict`` with ``{"tasks": [...], "label_config": XML, ...}`` (a body without ``"tasks"`` is the
  plain API) -> ``{"results": [{"result": [region, ...], "score", "model_version"}, ...], "model_version"}``:
  exactly one result per task, in task order; a task without the config's text field gets an empty one.
- ``POST /webhook`` ``{"action", "annotation", "task", "project"}``: ANNOTATION_CREATED / ANNOTATION_UPDATED
  keep the task's annotation in the corpus (``corpus.Corpus``), ANNOTATION_DELETED / ANNOTATIONS_DELETED
  drop it, START_TRAINING starts (or queues) a training round (``rounds.Rounds``); other actions are
  answered ``{"status": "Unknown event"}``. ``POST /train`` (Label Studio's Start Training, unless its webhook
  feature flag sends ``START_TRAINING``): each task's last submitted annotation joins the corpus, then a round starts.

For a simulation (or any program) the same without HTTP: ``apply(payload)`` is ``POST /webhook``,
``rounds.request()`` starts a round and ``await rounds.wait(number)`` waits for it (``Round.model_version``).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..data.text import Document
from ..errors import UserError
from .app import Limits, RequestError, parse_json, read_body
from .corpus import Corpus, write_training_file
from ..results import entities
from .labelstudio import (AnnotationProblem, ConfigProblem, LabelConfig, parse_label_config, record_of, regions,
                          task_score, task_text)
from .pool import Pool
from .rounds import Rounds, training_command

log = logging.getLogger("ner_toolkit.serve")

ADD = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
TRAIN = "START_TRAINING"


def model_version(model_dir: Path, name: str) -> str:
    """``NAME-SHA8``: the first 8 hex digits of the model's config.yaml digest tell two models apart."""
    try:
        digest = hashlib.sha256((Path(model_dir) / "config.yaml").read_bytes()).hexdigest()[:8]
    except OSError:
        digest = "unknown"
    return f"{name}-{digest}"


class LabelStudioBackend:
    """``loader(model_dir) -> copies``: loads a model as the server's model processes (blocking; run on a
    thread); ``overrides``: ``--set`` strings for every training round; ``unknown_tag``: the partial-label tag."""

    def __init__(self, model_dir: Path, work_dir: Path, loader: Callable[[str], list], overrides: tuple[str, ...],
                 unknown_tag: str) -> None:
        self.model_dir, self.work_dir, self.loader = Path(model_dir), Path(work_dir), loader
        self.overrides, self.unknown_tag = overrides, unknown_tag
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the work directory ({exc.strerror}); choose another --work-dir",
                            self.work_dir) from None
        self.corpus = Corpus(self.work_dir)
        self.rounds = Rounds(self.work_dir, self._prepare, self._command, self._install)
        self.pool: Optional[Pool] = None
        self.limits = Limits()
        self.config: Optional[LabelConfig] = None  # the last labeling config seen
        self._configs: dict[str, LabelConfig] = {}
        self._reported: set[tuple] = set()  # label warnings already logged

    def attach(self, pool: Pool, limits: Limits) -> None:
        """Called by ``create_app``: the models to answer with, and the request limits."""
        self.pool, self.limits = pool, limits
        pool.version = model_version(self.model_dir, "base")

    # --- the model -------------------------------------------------------------------------------------------

    def labels(self) -> set[str]:
        """The entity types the serving model predicts."""
        assert self.pool is not None
        return set(self.pool.copies[0].labels.types)

    def _config(self, xml: Any) -> LabelConfig:
        """The parsed labeling config (cached by its text; None or "": the last one seen); 422 if unusable."""
        if xml is not None and not isinstance(xml, str):
            raise RequestError(422, "the labeling config (label_config / schema) must be XML text")
        if not xml and self.config is not None:
            return self.config
        if xml not in self._configs:
            try:
                self._configs[xml] = parse_label_config(xml)
            except ConfigProblem as exc:
                raise RequestError(422, str(exc)) from None
        self.config = self._configs[xml]
        self._report(self.config)
        return self.config

    def _report(self, config: LabelConfig) -> dict:
        """The labels the config and the model do not share, logged once for each model and config."""
        known = self.labels()
        missing = sorted(set(config.labels) - known)
        unshown = sorted(known - set(config.labels))
        assert self.pool is not None
        key = (self.pool.version, config)
        if key not in self._reported and (missing or unshown):
            self._reported.add(key)
            if missing:
                log.warning("the labeling config's labels %s are unknown to model %s: it never predicts them "
                            "(annotate them: the next training round learns them)", ", ".join(missing),
                            self.pool.version)
            if unshown:
                log.warning("model %s predicts %s, which the labeling config does not offer: those regions are "
                            "left out of its predictions", self.pool.version, ", ".join(unshown))
        return {"labels_not_in_model": missing, "model_labels_not_in_config": unshown}

    # --- endpoints ---------------------------------------------------------------------------------------------

    def health(self) -> dict:
        assert self.pool is not None
        return {"status": "UP", "model_class": "ner_toolkit", "model_version": self.pool.version,
                "model_dir": str(self.model_dir), "labels": sorted(self.labels()), "annotations": len(self.corpus),
                "training": self.rounds.state()}

    def setup(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise RequestError(422, 'send an object with "schema" (the labeling config)')
        config = self._config(body.get("schema") or body.get("label_config"))
        assert self.pool is not None
        return {"model_version": self.pool.version, **self._report(config)}

    async def predict(self, body: dict) -> JSONResponse:
        """Label Studio's ``/predict``: one result per task, in order (``ShuttingDown``/``ModelUnavailable``
        propagate to the app, which answers 503)."""
        tasks = body["tasks"]
        if not isinstance(tasks, list):
            raise RequestError(422, '"tasks" must be a list of Label Studio tasks')
        config = self._config(body.get("label_config"))
        texts = [task_text(task, config) for task in tasks]
        missing = [t.get("id") if isinstance(t, dict) else i for i, (t, x) in enumerate(zip(tasks, texts)) if x is None]
        if missing:
            log.warning("tasks %s have no text in data.%s: their predictions are empty",
                        ", ".join(map(str, missing[:10])), config.text_key)
        assert self.pool is not None
        tokenizer = self.pool.copies[0].word_tokenizer
        present = [x for x in texts if x is not None]
        # Tokenising is Python work in proportion to the text: off the event loop.
        documents = await asyncio.to_thread(lambda: [Document.from_text(x, tokenizer) for x in present])
        pool = self.pool
        version = pool.version  # read with the batcher, in the same step: the answer is this model's
        predictions = await pool.batcher.submit(documents) if documents else []
        allowed = set(config.labels)
        answers, it = [], iter(zip(documents, predictions))
        for text in texts:
            if text is None:
                answers.append({"result": [], "score": 0.0, "model_version": version})
                continue
            document, prediction = next(it)
            answers.append({"result": regions(entities(document, prediction), text, config, allowed),
                            "score": task_score(prediction), "model_version": version})
        return JSONResponse({"results": answers, "model_version": version})

    def apply(self, payload: Any) -> tuple[int, dict]:
        """A webhook payload applied: (HTTP status, answer). The in-process form of ``POST /webhook``."""
        if not isinstance(payload, dict):
            return 422, {"error": 'send an object with "action"'}
        action = payload.get("action")
        try:
            if action in ADD:
                return 201, {"status": "ok", "result": self._add(payload)}
            if action in DELETE:
                annotations = payload.get("annotations") or [payload.get("annotation")]
                ids = [a["id"] for a in annotations if isinstance(a, dict) and isinstance(a.get("id"), int)]
                task = payload.get("task", {}).get("id") if isinstance(payload.get("task"), dict) else None
                return 201, {"status": "ok", "result": {"removed": self.corpus.remove(task, ids)}}
            if action == TRAIN:
                return 201, {"status": "ok", "result": self.rounds.request().to_dict()}
        except (AnnotationProblem, RequestError) as exc:
            message = exc.message if isinstance(exc, RequestError) else str(exc)
            log.warning("webhook %s refused: %s", action, message)
            return 422, {"status": "error", "error": message}
        return 200, {"status": "Unknown event"}

    def _add(self, payload: dict) -> dict:
        project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
        config = self._config(project.get("label_config"))
        record = record_of(payload.get("task"), payload.get("annotation"), config)
        if record is None:  # a skipped task: no annotation to learn from
            task = payload["task"]["id"]
            return {"task": task, "kept": False, "removed": self.corpus.remove(task)}
        new = sorted({e[2] for e in record.entities} - self.labels() - self.corpus.labels())
        self.corpus.put(record)
        if new:
            log.warning("annotations use labels the model %s does not know: %s; the next training round adds them",
                        self.pool.version if self.pool else "", ", ".join(new))
        return {"task": record.task, "kept": True, "partial": record.partial, "new_labels": new}

    def train(self, body: Any) -> tuple[int, dict]:
        """``POST /train``: ``{"annotations": [task with its annotations, ...], "label_config"}``."""
        tasks = body.get("annotations") if isinstance(body, dict) else None
        if not isinstance(tasks, list):
            return 422, {"error": '"annotations" must be the list of annotated tasks'}
        for task in tasks:
            given = task.get("annotations") if isinstance(task, dict) else None
            annotations = [a for a in given if isinstance(a, dict)] if isinstance(given, list) else []
            # The last submitted one, as the webhooks would have left it; a task only skipped keeps no record.
            annotations = [a for a in annotations if not a.get("was_cancelled")] or annotations
            if annotations:
                status, answer = self.apply({"action": "ANNOTATION_UPDATED", "task": task,
                                             "annotation": annotations[-1],
                                             "project": {"label_config": body.get("label_config")}})
                if status != 201:
                    return status, answer
        round_ = self.rounds.request()
        return 201, {"status": "ok", "job": str(round_.number), "result": round_.to_dict()}

    def routes(self) -> list[Route]:
        def endpoint(handle: Callable[[Any], tuple[int, dict]]) -> Callable[[Request], Any]:
            async def answer(request: Request) -> Response:
                try:
                    status, out = handle(parse_json(await read_body(request, self.limits.max_body_bytes)))
                except RequestError as exc:
                    status, out = exc.status, {"error": exc.message}
                return JSONResponse(out, status_code=status)
            return answer

        async def root(request: Request) -> Response:
            return JSONResponse(self.health())

        return [Route("/", root, methods=["GET"]),
                Route("/setup", endpoint(lambda b: (200, self.setup(b))), methods=["POST"]),
                Route("/webhook", endpoint(self.apply), methods=["POST"]),
                Route("/train", endpoint(self.train), methods=["POST"])]

    async def close(self) -> None:
        await self.rounds.close()

    # --- training rounds -----------------------------------------------------------------------------------------

    def _prepare(self, directory: Path) -> int:
        records = list(self.corpus.records.values())
        if not records:
            raise ValueError("no annotations collected yet: annotate some tasks first")
        assert self.pool is not None
        return write_training_file(records, directory / "train.jsonl", self.pool.copies[0].word_tokenizer,
                                   self.unknown_tag)

    def _command(self, directory: Path) -> list[str]:
        return training_command(self.model_dir / "config.yaml", directory, self.overrides,
                                str(directory / "train.jsonl"))

    async def _install(self, model_dir: Path, number: int) -> str:
        copies = await asyncio.to_thread(self.loader, str(model_dir))
        version = model_version(model_dir, f"round-{number}")
        assert self.pool is not None
        self.model_dir = model_dir
        await self.pool.swap(copies, version)
        return version
