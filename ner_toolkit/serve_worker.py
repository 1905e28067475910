"""The model of ``ner-serve`` in a process of its own.

Python runs one thread at a time (the GIL), so a model thread inside the server process shares one core
with the event loop: every request parsed, every response written and every Python step of tagging
(collation, decoding, building predictions) waits for the other. In a child process the model keeps a
core to itself while the server process handles HTTP; a batch crosses a pipe as pickled documents and
comes back as pickled predictions (tens of microseconds for a batch of sentences).

``ModelProcess`` looks to ``serve.create_app`` like a predictor (``labels``, ``word_tokenizer``,
``batch_size``, ``device``, ``precision``; ``submit`` in place of ``predict_documents``); the child sends
those attributes once the model has loaded. A model directory the user must fix comes back as a ``UserError`` before the server
listens. A child that dies (killed, out of memory) is replaced, and the batch it was tagging is sent to
the new one.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any, Optional, Sequence

from .data.text import Document
from .errors import UserError
from .results import Prediction

log = logging.getLogger("ner_toolkit.serve")

_SHOWN = ("labels", "word_tokenizer", "batch_size", "device", "precision")


def _child(conn: Connection, load: dict, threads: Optional[int]) -> None:
    """Load the model, report its attributes, then tag every batch received until the pipe closes."""
    # The server process decides when to stop (after draining); a Ctrl-C sent to the terminal's process
    # group must not kill the model under requests still in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    from .predict import Predictor

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        predictor = Predictor.load(**load)
        if load.get("compile"):
            # Compiling takes seconds: on a warm-up batch now, not inside the first requests' latency.
            # Sizes of 1 compile graphs of their own: one sentence, one word, and the general case.
            for warm_up in ([["a"]], [["a", "b"]], [["a"], ["b"]], [["a", "b"], ["c", "d"]]):
                predictor.predict(warm_up)
    except UserError as exc:
        conn.send(("user-error", (exc.message, exc.path, exc.line)))
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    shown = {name: getattr(predictor, name) for name in _SHOWN}
    shown["device"] = str(shown["device"])
    conn.send(("ready", shown))
    while True:
        try:
            documents = conn.recv()
        except EOFError:  # the server process is gone
            return
        if documents is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", predictor.predict_documents(documents))
        except Exception:
            reply = ("error", traceback.format_exc())
        conn.send(reply)


class ModelProcessError(RuntimeError):
    """A batch failed in the model process (its traceback is the message) or the process died."""


class ModelProcess:
    """A predictor living in a child process; ``submit`` sends it a batch from the event loop.

    ``load``: the keyword arguments of ``Predictor.load`` (picklable: paths as strings); ``threads``:
    torch threads in the child (None: torch's default).
    """

    def __init__(self, load: dict, threads: Optional[int] = None) -> None:
        self.load, self.threads = dict(load), threads
        self._context = multiprocessing.get_context("spawn")  # fork would copy the server's threads and locks
        self._process: Optional[Any] = None
        self._conn: Optional[Connection] = None
        self.restarts = 0
        self.labels: Any = None
        self.word_tokenizer: str = ""
        self.batch_size = 0
        self.device = ""
        self.precision = ""

    def start(self) -> "ModelProcess":
        """Start the child and wait until its model has loaded (``UserError``: a bad model directory)."""
        return self.launch().wait_ready()

    def launch(self) -> "ModelProcess":
        """Start the child; ``wait_ready`` then waits for its model (several children load at once)."""
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_child, args=(child, self.load, self.threads),
                                        name="ner-serve-model", daemon=True)
        process.start()
        child.close()  # only the child holds its end: its death is an EOF here
        self._process, self._conn = process, parent
        return self

    def wait_ready(self) -> "ModelProcess":
        process, parent = self._process, self._conn
        assert process is not None and parent is not None, "launch() first"
        self._process = self._conn = None  # set again once ready
        try:
            kind, payload = parent.recv()
        except EOFError:
            process.join()
            parent.close()
            raise ModelProcessError(f"the model process exited while loading (exit code {process.exitcode})")
        if kind != "ready":
            process.join()
            parent.close()
            if kind == "user-error":
                raise UserError(*payload)
            raise ModelProcessError(f"the model process failed to load the model:\n{payload}")
        for name, value in payload.items():
            setattr(self, name, value)
        self._process, self._conn = process, parent
        return self

    def submit(self, documents: Sequence[Document]) -> "asyncio.Future[list[Prediction]]":
        """Send a batch to the child now; the future gives its predictions (with CRF scores, as
        ``Predictor.predict_documents``). Call on the event loop, one batch at a time (the batcher gives a
        model its next batch only once the last is answered).

        The batch is written here, not in a task, so the model starts before the loop runs anything else.
        The answer is read when the pipe is readable, on the loop: no thread waits for it (a thread
        would wait for the GIL behind the event loop on every batch). A child that dies under a batch
        (killed, out of memory) is replaced and the batch sent again, once: tagging has no side effects, so
        the requests behind it are answered, not lost. A batch that kills a second child too raises
        ``ModelProcessError``."""
        batch = list(documents)
        return asyncio.ensure_future(self._answer(batch, self._send(batch)))

    def _send(self, batch: list[Document]) -> bool:
        """Whether the batch reached a live child (False: it has died and was reaped)."""
        if self._conn is None:
            return False
        try:
            self._conn.send(batch)
            return True
        except OSError:  # a broken pipe: the child is gone
            self._died()
            return False

    async def _answer(self, batch: list[Document], sent: bool) -> list[Prediction]:
        for attempt in (1, 2):
            if not sent:
                self.restarts += 1
                log.warning("starting a new model process (restart %d)", self.restarts)
                await asyncio.to_thread(self.start)  # loads the model: seconds, off the loop
                sent = self._send(batch)
                if not sent:
                    continue
            assert self._conn is not None
            try:
                await _readable(self._conn)
                kind, payload = self._conn.recv()
            except (EOFError, OSError):
                sent = False
                self._died()
                continue
            if kind != "ok":
                raise ModelProcessError(f"the model failed on a batch:\n{payload}")
            return payload
        raise ModelProcessError(f"the model process died again on the same batch of {len(batch)} documents")

    def _died(self) -> None:
        code = self._reap()
        log.warning("the model process died (exit code %s); its batch goes to a new one", code)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child after the batch it is running (it takes no new one)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        self._reap(timeout)

    def _reap(self, timeout: float = 5.0) -> Optional[int]:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        return process.exitcode

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid


async def _readable(conn: Connection) -> None:
    """Wait on the running loop until ``conn`` has data (or its writer has gone: EOF)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def start_models(load: dict, workers: int, threads: Optional[int]) -> list[ModelProcess]:
    """``workers`` model processes, loading in parallel; all are stopped if one fails."""
    models = [ModelProcess(load, threads).launch() for _ in range(workers)]
    try:
        for model in models:
            model.wait_ready()
    except BaseException:
        for model in models:
            model._reap()
        raise
    return models


def default_threads(workers: int = 1) -> int:
    """Torch threads for each of ``workers`` model processes: the cores shared out, at least one each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)
