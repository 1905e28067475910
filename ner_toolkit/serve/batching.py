"""Dynamic batching for the HTTP server: requests that arrive together are tagged in one model call.

Requests queue up on the event loop; one worker coroutine takes the oldest, adds the requests queued
behind it (at most ``max_batch`` texts or sentences in all) and, when the batch is not full, waits for
more until ``max_wait`` seconds after the oldest arrived. The batch then runs as ONE
``predict_documents`` call on a model thread of its own. With several models (``ner-serve --workers``:
one model process each) up to that many batches run at once, each model taking one batch at a time
(none is thread-safe); the event loop keeps accepting requests meanwhile, and they form the next batch.
Each text is its own document, so a text's result does not depend on its batch-mates.

A model that cannot take batches for a while (``ModelUnavailable``: its process keeps dying, or its model
does not load) is set aside until its wait is over; its batch goes back to the head of the queue for the
other models, or, when none is left, every waiting request is refused with that reason (a 503).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union, runtime_checkable

from ..data.text import Document
from ..results import Prediction

log = logging.getLogger("ner_toolkit.serve")

PredictFn = Callable[[Sequence[Document]], list[Prediction]]


@runtime_checkable
class AsyncModel(Protocol):
    """A model answering on the event loop (``worker.ModelProcess``): ``submit`` starts the batch at
    once and returns a future of its predictions."""

    def submit(self, documents: Sequence[Document]) -> "asyncio.Future[list[Prediction]]": ...


Model = Union[PredictFn, AsyncModel]  # a plain function runs on a thread of its own


class ShuttingDown(Exception):
    """The server is draining: no new work is taken."""


class ModelUnavailable(Exception):
    """A model cannot take batches now (its process keeps dying, or its model does not load): a 503.
    ``retry_after``: seconds until it is tried again."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


@dataclass
class BatchStats:
    """What the batcher has done since the server started (``GET /stats``)."""

    requests: int = 0             # requests tagged (with at least one text or sentence)
    sentences: int = 0            # texts and sentences tagged
    batches: int = 0              # model calls
    max_batch_sentences: int = 0  # the most texts/sentences one model call tagged
    max_batch_requests: int = 0   # the most requests one model call served
    merged_requests: int = 0      # requests that shared their model call with another request
    failed_batches: int = 0       # model calls that raised (their requests were retried one by one)
    model_seconds: float = 0.0    # time spent inside the model calls
    histogram: dict[int, int] = field(default_factory=dict)  # requests per batch -> number of batches

    def record(self, requests: int, sentences: int, seconds: float) -> None:
        self.requests += requests
        self.sentences += sentences
        self.batches += 1
        self.max_batch_sentences = max(self.max_batch_sentences, sentences)
        self.max_batch_requests = max(self.max_batch_requests, requests)
        if requests > 1:
            self.merged_requests += requests
        self.model_seconds += seconds
        self.histogram[requests] = self.histogram.get(requests, 0) + 1

    def to_dict(self) -> dict:
        out = asdict(self)
        out["model_seconds"] = round(self.model_seconds, 6)
        out["mean_batch_sentences"] = round(self.sentences / self.batches, 3) if self.batches else 0.0
        out["histogram"] = {str(k): v for k, v in sorted(self.histogram.items())}  # JSON keys are strings
        return out


@dataclass
class _Job:
    documents: list[Document]
    future: "asyncio.Future[list[Prediction]]"
    arrived: float  # loop.time() when queued: the batch deadline counts from the oldest job


class Batcher:
    """Collects requests into batches and runs each on a free model, in a thread of that model's own.

    ``predict``: one per model, a function (run on a thread of its own) or an ``AsyncModel``; a batch
    goes to whichever model is free first.
    """

    def __init__(self, predict: Union[Model, Sequence[Model]], max_batch: int, max_wait: float) -> None:
        models = [predict] if callable(predict) or isinstance(predict, AsyncModel) else list(predict)
        if max_batch < 1 or max_wait < 0 or not models:
            raise ValueError(f"max_batch must be >= 1, max_wait >= 0 and a model given, got {max_batch}, "
                             f"{max_wait}, {len(models)} models")
        self.models, self.max_batch, self.max_wait = models, max_batch, max_wait
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._wake: Optional[asyncio.Event] = None
        self._free: Optional[asyncio.Queue[Optional[Model]]] = None  # None: stop (see close)
        self._running: set[asyncio.Task] = set()
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._executor: Optional[ThreadPoolExecutor] = None
        # id(model) -> (why it is set aside, time.monotonic() when it is back)
        self._parked: dict[int, tuple[ModelUnavailable, float]] = {}

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def closing(self) -> bool:
        return self._closing

    def unavailable(self) -> Optional[ModelUnavailable]:
        """Why no model can take a batch now (every one is set aside), or None."""
        if self._parked and len(self._parked) == len(self.models):
            exc, back = min(self._parked.values(), key=lambda parked: parked[1])
            return ModelUnavailable(exc.reason, max(0.0, back - time.monotonic()))  # the wait left, not the first
        return None

    async def start(self) -> None:
        """Start the worker on the running loop (the server's lifespan startup)."""
        self._wake = asyncio.Event()
        self._free = asyncio.Queue()
        for model in self.models:
            self._free.put_nowait(model)
        self._executor = ThreadPoolExecutor(max_workers=len(self.models), thread_name_prefix="ner-serve-model")
        self._task = asyncio.get_running_loop().create_task(self._work(), name="ner-serve-batcher")

    async def close(self) -> None:
        """Refuse new work, finish everything queued (its requests are still waiting), then stop."""
        self._closing = True
        if self._task is None:
            return
        assert self._wake is not None
        self._wake.set()
        if self.unavailable() is not None:
            assert self._free is not None
            self._free.put_nowait(None)  # every model is set aside: the worker must not wait for one
        await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, documents: list[Document]) -> list[Prediction]:
        """The predictions for ``documents``, in order, once their batch has run."""
        if self._closing or self._task is None:
            raise ShuttingDown()
        if self._task.done():  # the worker died: a bug, never hang the request
            raise RuntimeError("the batching worker has stopped")
        down = self.unavailable()
        if down is not None:
            raise down
        loop = asyncio.get_running_loop()
        job = _Job(documents, loop.create_future(), loop.time())
        self._pending.append(job)
        assert self._wake is not None
        self._wake.set()
        return await job.future

    async def _work(self) -> None:
        assert self._free is not None
        while True:
            # A batch is collected only once a model is free for it: requests arriving while every model
            # is busy join the queue, and the next batch takes them all.
            model = await self._free.get()
            if model is None:  # closing with every model set aside: their requests were refused already
                if self._running:
                    await asyncio.gather(*self._running)
                return
            batch = [job for job in await self._collect() if not job.future.done()]  # cancelled: no tagging
            if not batch:
                if not self._pending and self._closing:  # nothing left: wait for the batches still running
                    if self._running:
                        await asyncio.gather(*self._running)
                    return
                self._free.put_nowait(model)
                continue
            # The model starts on the batch now, not when a task gets its turn on the loop: the responses
            # of the previous batch are written while this one runs.
            started = time.perf_counter()
            call = self._call(model, batch)
            task = asyncio.get_running_loop().create_task(self._finish(batch, model, call, started))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _call(self, model: Model, batch: list[_Job]) -> "asyncio.Future[list[Prediction]]":
        documents = [d for job in batch for d in job.documents]
        if isinstance(model, AsyncModel):
            return model.submit(documents)
        return asyncio.get_running_loop().run_in_executor(self._executor, model, documents)

    async def _collect(self) -> list[_Job]:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._closing:
                return []
            self._wake.clear()
            await self._wake.wait()
        deadline = self._pending[0].arrived + self.max_wait
        # Wait for batch-mates only while the batch is not full; a draining server waits for no one.
        while not self._closing and self._queued_sentences() < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                break
        # The oldest job always goes, even when larger than max_batch; the others only while they fit,
        # in arrival order (no overtaking: latency stays fair).
        batch = [self._pending.popleft()]
        size = len(batch[0].documents)
        while self._pending and size + len(self._pending[0].documents) <= self.max_batch:
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.documents)
        return batch

    def _queued_sentences(self) -> int:
        total = 0
        for job in self._pending:
            total += len(job.documents)
            if total >= self.max_batch:
                break
        return total

    async def _finish(self, batch: list[_Job], model: Model, call: "asyncio.Future[list[Prediction]]",
                      started: float) -> None:
        """Answer the batch's requests once ``call`` (the model on it) is done, and free the model."""
        assert self._free is not None
        free = self._free
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                free.put_nowait(model)

        try:
            await self._answer(batch, model, call, started, release)
        except ModelUnavailable as exc:
            released = True  # set aside: back among the free models when its wait is over
            self._park(model, exc, batch)
        finally:
            release()

    def _park(self, model: Model, exc: ModelUnavailable, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        wait = max(exc.retry_after, 0.05)
        self._parked[id(model)] = (exc, time.monotonic() + wait)
        loop.call_later(wait, self._unpark, model)
        jobs = [job for job in batch if not job.future.done()]
        if len(self._parked) < len(self.models):
            self._pending.extendleft(reversed(jobs))  # first in line again, for another model
            assert self._wake is not None
            self._wake.set()
            return
        jobs += self._pending
        self._pending.clear()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    def _unpark(self, model: Model) -> None:
        assert self._free is not None
        if self._parked.pop(id(model), None) is not None:
            self._free.put_nowait(model)

    async def _answer(self, batch: list[_Job], model: Model, call: "asyncio.Future[list[Prediction]]",
                      started: float, release: Callable[[], None]) -> None:
        """``release``: frees the model once its work for this batch is over."""
        size = sum(len(job.documents) for job in batch)
        try:
            predictions = await call
            if len(predictions) != size:
                raise RuntimeError(f"{len(predictions)} predictions for {size} documents")
        except ModelUnavailable:
            raise  # not the batch's fault: ``_finish`` sets the model aside
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(batch) > 1:
                # One bad request must not fail its batch-mates: each is retried alone, on this model.
                log.warning("a batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
                for job in batch:
                    if not job.future.done():
                        await self._answer([job], model, self._call(model, [job]), time.perf_counter(),
                                           lambda: None)  # the model is still needed for the next one
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.stats.record(len(batch), size, time.perf_counter() - started)
        # Freed before the answers: the collector wakes ahead of the answered requests' handlers (futures
        # wake in order), so the next batch reaches the model before these responses are serialised.
        release()
        offset = 0
        for job in batch:
            n = len(job.documents)
            if not job.future.done():
                job.future.set_result(predictions[offset:offset + n])
            offset += n
