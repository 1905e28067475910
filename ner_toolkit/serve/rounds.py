"""Training rounds of ``ner-serve --label-studio``: a new model trained on the collected annotations in a
process of its own (``python -m ner_toolkit train``), then put in service by the caller's ``install``.

One round runs at a time. A round asked for while one runs is queued (one at most: every request made
meanwhile joins it, and it trains on the corpus as it is when it starts). A round that fails (no
annotations, a training error, a model that does not load) is logged and kept as the last round with its
error, which ``GET /health`` shows; the server and its current model carry on. Each round has its directory
``WORK/rounds/N``: ``train.jsonl`` (the corpus when it started), ``train.log`` (the training command's
output), and the run's output (``config.yaml``, ``model/``, ``metrics.jsonl``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable, Optional

log = logging.getLogger("ner_toolkit.serve")

ROUNDS = "rounds"


@dataclass
class Round:
    number: int
    state: str = "queued"                # queued | running | done | failed
    examples: int = 0                    # annotated tasks it trained on
    model_version: Optional[str] = None  # the model it put in service (done)
    error: Optional[str] = None          # why it failed
    seconds: Optional[float] = None      # from its start to its model answering

    def to_dict(self) -> dict:
        return asdict(self)


class Rounds:
    """``prepare(directory) -> examples`` writes a round's training file (``ValueError``: nothing to train
    on); ``command(directory) -> argv`` is its training command; ``install(model_dir, number) -> version``
    loads the trained model and swaps it in."""

    def __init__(self, work_dir: Path, prepare: Callable[[Path], int], command: Callable[[Path], list[str]],
                 install: Callable[[Path, int], Awaitable[str]]) -> None:
        self.root = Path(work_dir) / ROUNDS
        self.prepare, self.command, self.install = prepare, command, install
        numbers = [int(p.name) for p in self.root.glob("*") if p.name.isdigit()] if self.root.is_dir() else []
        self._next = max(numbers, default=0) + 1  # a restarted server never reuses a round's directory
        self.current: Optional[Round] = None
        self.queued: Optional[Round] = None
        self.last: Optional[Round] = None
        self._done: dict[int, asyncio.Event] = {}
        self._rounds: dict[int, Round] = {}
        self._task: Optional[asyncio.Task] = None
        self._process: Optional[asyncio.subprocess.Process] = None
        self._closed = False

    def request(self) -> Round:
        """Start a round now, or queue one behind the round that runs (the one already queued, if any)."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        if self.current is not None:
            if self.queued is None:
                self.queued = self._new()
            return self.queued
        self._start(self._new())
        assert self.current is not None
        return self.current

    def get(self, number: int) -> Optional[Round]:
        return self._rounds.get(number)

    async def wait(self, number: int, timeout: Optional[float] = None) -> Round:
        """The round ``number`` once it is done or failed (``KeyError``: no such round here)."""
        await asyncio.wait_for(self._done[number].wait(), timeout)
        return self._rounds[number]

    def state(self) -> dict:
        return {"state": "running" if self.current else "idle",
                "current": self.current.to_dict() if self.current else None,
                "queued": self.queued.to_dict() if self.queued else None,
                "last": self.last.to_dict() if self.last else None}

    async def close(self) -> None:
        """Stop: the training process is killed, the queued round dropped, no model is swapped in."""
        self._closed = True
        self.queued = None
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _new(self) -> Round:
        number, self._next = self._next, self._next + 1
        self._rounds[number] = Round(number)
        self._done[number] = asyncio.Event()
        return self._rounds[number]

    def _start(self, round_: Round) -> None:
        self.current, round_.state = round_, "running"
        self._task = asyncio.get_running_loop().create_task(self._run(round_), name=f"training-round-{round_.number}")

    async def _run(self, round_: Round) -> None:
        started = time.monotonic()
        directory = self.root / f"{round_.number:04d}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # On the event loop: the corpus changes there (a small file: what people annotated by hand).
            round_.examples = self.prepare(directory)
            log.info("training round %d started on %d annotated tasks (%s)", round_.number, round_.examples,
                     directory / "train.log")
            await self._train(directory)
            round_.model_version = await self.install(directory / "model", round_.number)
            round_.state = "done"
            log.info("training round %d done: model version %s serves now", round_.number, round_.model_version)
        except asyncio.CancelledError:
            round_.state, round_.error = "failed", "the server stopped during the round"
            raise
        except Exception as exc:  # a round's failure is reported, never the server's end
            round_.state, round_.error = "failed", " ".join(str(exc).split()) or type(exc).__name__
            log.warning("training round %d failed: %s", round_.number, round_.error)
        finally:
            round_.seconds = round(time.monotonic() - started, 3)
            self.last, self.current, self._process = round_, None, None
            self._done[round_.number].set()
            if self.queued is not None and not self._closed:
                queued, self.queued = self.queued, None
                self._start(queued)

    async def _train(self, directory: Path) -> None:
        """Run the training command, its output in ``train.log``; a failure raises with its error line."""
        logfile = directory / "train.log"
        with open(logfile, "wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(directory), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT)
            code = await self._process.wait()
        if code != 0:
            lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()
            why = next((line for line in reversed(lines) if line.startswith("error:")), None)
            raise RuntimeError(f"training exited with code {code}: {why or f'see {logfile}'}")


def training_command(config: Path, directory: Path, overrides: tuple[str, ...], train_file: str) -> list[str]:
    """``python -m ner_toolkit train`` from ``config`` on ``train_file`` into ``directory``: no dev or test
    file unless ``overrides`` (the user's, after the server's) name one; the training file last, so it wins."""
    sets = ["data.dev=null", "data.test=null", "data.format=jsonl", "data.input_scheme=BIO",
            "training.progress=false", *overrides, f"data.train={json.dumps(train_file)}"]  # JSON is YAML
    return [sys.executable, "-m", "ner_toolkit", "train", "--config", str(config),
            *(arg for s in sets for arg in ("--set", s)), "--output-dir", str(directory)]
