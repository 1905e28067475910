"""The models that answer ``ner-serve``'s requests, and the one ``Batcher`` in front of them, replaceable
while the server runs (``--label-studio``'s training rounds).

``swap`` puts a new batcher over the new models first, so every request from then on goes to them, then
closes the old batcher, which answers everything it had queued or running (``Batcher.close``), and only
then stops the old model processes: no request is dropped or answered by a model that has gone. A request
reads ``pool.batcher`` and submits to it in one step of the event loop (``submit`` checks and queues before
its first ``await``), so it is either the old batcher's, answered before it closes, or the new one's. The
batch statistics carry over (one ``BatchStats`` for the server's life).
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

from .batching import AsyncModel, Batcher


class Pool:
    """``copies``: the models (``ModelProcess``es, or predictors with ``predict_documents``); ``version``:
    the name of the model they hold, reported with their answers."""

    def __init__(self, copies: Sequence[Any], max_batch: int, max_wait: float,
                 version: Optional[str] = None) -> None:
        self.max_batch, self.max_wait = max_batch, max_wait
        self.copies = list(copies)
        self.version = version
        self.batcher = self._batcher(self.copies)
        self.swaps = 0

    def _batcher(self, copies: list[Any]) -> Batcher:
        return Batcher([c if isinstance(c, AsyncModel) else c.predict_documents for c in copies], self.max_batch,
                       self.max_wait)

    async def start(self) -> None:
        await self.batcher.start()

    async def swap(self, copies: Sequence[Any], version: Optional[str]) -> None:
        """Serve ``copies`` (already loaded) from now on; returns once the old models have drained and stopped."""
        batcher = self._batcher(list(copies))
        batcher.stats = self.batcher.stats
        await batcher.start()
        old_batcher, old_copies = self.batcher, self.copies
        # One step: no request sees the new batcher with the old version, or the reverse.
        self.batcher, self.copies, self.version = batcher, list(copies), version
        self.swaps += 1
        await old_batcher.close()
        await _stop(old_copies)

    async def close(self) -> None:
        """The server is stopping: finish what is queued, then stop the models."""
        await self.batcher.close()
        await _stop(self.copies)


async def _stop(copies: list[Any]) -> None:
    """Ask each model process to stop after its last batch, then wait for it to exit (off the event loop)."""
    for copy in copies:
        if hasattr(copy, "aclose"):
            await copy.aclose()
    for copy in copies:
        if hasattr(copy, "close"):
            await asyncio.to_thread(copy.close)
