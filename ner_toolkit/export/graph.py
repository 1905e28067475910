"""The exported graph's inputs, torch-free: their names (written by ``onnx_export``, fed by ``runtime``) and
the feed of one ``data.batching.Batch`` (numpy arrays for onnxruntime, tensors for the exporter)."""
from __future__ import annotations

from typing import Any

from ..data.batching import Batch

OUTPUT = "emissions"  # (B, T, K) float32


def input_names(num_pools: int, chars: bool) -> list[str]:
    """``input_ids``, ``attention_mask`` (W, S); ``word_ids`` (B, T); ``lengths`` (B,); per pooling map
    ``pool{i}_src``, ``pool{i}_dst``, ``pool{i}_weight`` (P_i,); ``char_ids`` (B, T, L) with chars."""
    names = ["input_ids", "attention_mask", "word_ids", "lengths"]
    for i in range(num_pools):
        names += [f"pool{i}_src", f"pool{i}_dst", f"pool{i}_weight"]
    return names + (["char_ids"] if chars else [])


def batch_inputs(batch: Batch[Any]) -> dict[str, Any]:
    """The graph's inputs by name from a ``Batch``, in :func:`input_names` order."""
    out = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "word_ids": batch.word_ids,
           "lengths": batch.lengths}
    for i, (src, dst, weight) in enumerate(batch.pools):
        out.update({f"pool{i}_src": src, f"pool{i}_dst": dst, f"pool{i}_weight": weight})
    if batch.char_ids is not None:
        out["char_ids"] = batch.char_ids
    return out
