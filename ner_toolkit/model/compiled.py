"""``torch.compile`` (inductor) of the network in front of the CRF: encoder, pooling, fusion and BiLSTM.

Only ``Tagger.compute_emissions`` is compiled. The CRF stays eager: its forward algorithm is a Python loop
over time steps that dynamo would unroll once per sentence length, and its Viterbi on the CPU is already
a C kernel. Shapes are compiled dynamically, so a run compiles one graph per mode (training, evaluation),
not one per batch shape. Sizes of 1 are specialised (dynamo's default): a batch of one sentence, or of
one-word sentences, compiles its own graph once. Making them general too
(``backed_size_oblivious``) broke training graphs with a stride assertion in torch 2.13.

Where compilation cannot happen (no C++ compiler, an encoder dynamo cannot trace), the network runs eager
after one warning: compiling is a speed option, never a reason for a run to fail.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import torch

from ..data.batching import Batch

log = logging.getLogger(__name__)


class CompiledEmissions:
    """A drop-in ``compute_emissions``: the compiled function, or the eager one once compiling failed.

    ``compile_seconds`` adds up the wall time of the calls that compiled a graph (the first call of each
    mode, and any recompilation), so benchmarks and logs report compile time apart from steady-state speed.
    """

    def __init__(self, eager: Callable[[Batch], torch.Tensor]) -> None:
        self.eager = eager
        self.compiled = torch.compile(eager, dynamic=True)
        self.failed = False
        self.compile_seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, batch: Batch) -> torch.Tensor:
        """``batch`` -> emissions (B, T, K), as ``Tagger.compute_emissions``."""
        if self.failed:
            return self.eager(batch)
        graphs = _graphs_compiled()
        started = time.perf_counter()
        try:
            out = self.compiled(batch)
        except Exception as exc:  # noqa: BLE001 - only dynamo/inductor failures are swallowed, see below
            if not _is_compile_failure(exc):
                raise
            with self._lock:
                if not self.failed:
                    self.failed = True
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    log.warning(f"torch.compile failed ({first_line}); the network runs eager")
            return self.eager(batch)
        if _graphs_compiled() != graphs:
            self.compile_seconds += time.perf_counter() - started
        return out


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _is_compile_failure(exc: BaseException) -> bool:
    """Errors raised by dynamo or inductor themselves (tracing, code generation, the C++ compiler), as
    opposed to errors of the model code that eager would raise too."""
    from torch._dynamo import exc as dynamo_exc

    kinds: tuple[type, ...] = tuple(k for k in (getattr(dynamo_exc, "BackendCompilerFailed", None),
                                                getattr(dynamo_exc, "TorchDynamoException", None),
                                                getattr(dynamo_exc, "InternalTorchDynamoError", None))
                                    if isinstance(k, type))
    return isinstance(exc, kinds) or type(exc).__module__.startswith(("torch._inductor", "torch._dynamo"))


def compile_network(tagger: Any) -> CompiledEmissions:
    """Replace ``tagger.compute_emissions`` by its compiled form (idempotent); returns the wrapper.

    The weights are untouched, so saving, loading, EMA and checkpoints see the same state dict."""
    current = tagger.__dict__.get("compute_emissions")
    if isinstance(current, CompiledEmissions):
        return current
    wrapper = CompiledEmissions(tagger.compute_emissions)
    tagger.compute_emissions = wrapper
    return wrapper


def compile_seconds(tagger: Any) -> float:
    """Seconds spent compiling so far (0 for an eager tagger)."""
    current = tagger.__dict__.get("compute_emissions")
    return current.compile_seconds if isinstance(current, CompiledEmissions) else 0.0
