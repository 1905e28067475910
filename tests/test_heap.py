"""heap.py: free heap pages given back during training, with every item passed through in order."""
import platform

import pytest

from ner_toolkit import heap


def test_trimming_passes_every_item_in_order_and_trims_after_every_nth(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append(pad) or 1)
    seen = []
    for item in heap.trimming(range(12), every=5):
        seen.append((item, len(calls)))
    assert [item for item, _ in seen] == list(range(12))
    # a trim follows the 5th and the 10th item, before the next one is handed out
    assert [trims for _, trims in seen] == [0] * 5 + [1] * 5 + [2] * 2
    assert calls == [0, 0]


def test_release_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_TRIM", None)
    heap.release_free_memory()  # nothing to call, nothing raised


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_s_malloc_trim_is_found_and_runs():
    assert heap._TRIM is not None  # else training would silently keep its fragmented heap
    heap.release_free_memory()
