"""Dynamic batching for the HTTP server: requests that arrive together are tagged in one model call.

Requests queue up on the event loop; one worker coroutine takes the oldest, adds the requests queued
behind it (at most ``max_batch`` texts or sentences in all) and, when the batch is not full, waits for
more until ``max_wait`` seconds after the oldest arrived. The batch then runs as ONE
``predict_documents`` call on a dedicated model thread (the model is not thread-safe, so one batch at a
time; the event loop keeps accepting requests meanwhile, and they form the next batch). Each text is its
own document, so a text's result does not depend on its batch-mates.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

from .data.text import Document
from .predict import Prediction

log = logging.getLogger("ner_toolkit.serve")

PredictFn = Callable[[Sequence[Document]], list[Prediction]]


class ShuttingDown(Exception):
    """The server is draining: no new work is taken."""


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
    """Collects requests into batches and runs them, one at a time, on a dedicated model thread."""

    def __init__(self, predict: PredictFn, max_batch: int, max_wait: float) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._executor: Optional[ThreadPoolExecutor] = None

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        """Start the worker on the running loop (the server's lifespan startup)."""
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ner-serve-model")
        self._task = asyncio.get_running_loop().create_task(self._work(), name="ner-serve-batcher")

    async def close(self) -> None:
        """Refuse new work, finish everything queued (its requests are still waiting), then stop."""
        self._closing = True
        if self._task is None:
            return
        assert self._wake is not None
        self._wake.set()
        await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, documents: list[Document]) -> list[Prediction]:
        """The predictions for ``documents``, in order, once their batch has run."""
        if self._closing or self._task is None:
            raise ShuttingDown()
        if self._task.done():  # the worker died: a bug, never hang the request
            raise RuntimeError("the batching worker has stopped")
        loop = asyncio.get_running_loop()
        job = _Job(documents, loop.create_future(), loop.time())
        self._pending.append(job)
        assert self._wake is not None
        self._wake.set()
        return await job.future

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                return  # closing and nothing left
            await self._run(batch)

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

    async def _run(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # a cancelled request needs no tagging
        if not batch:
            return
        documents = [d for job in batch for d in job.documents]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            predictions = await loop.run_in_executor(self._executor, self.predict, documents)
            if len(predictions) != len(documents):
                raise RuntimeError(f"{len(predictions)} predictions for {len(documents)} documents")
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(batch) > 1:
                # One bad request must not fail its batch-mates: each is retried alone.
                log.warning("a batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
                for job in batch:
                    await self._run([job])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.stats.record(len(batch), len(documents), time.perf_counter() - started)
        offset = 0
        for job in batch:
            n = len(job.documents)
            if not job.future.done():
                job.future.set_result(predictions[offset:offset + n])
            offset += n
