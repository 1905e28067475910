"""The one collator and the one POOLINGS table: numpy maps equal to the per-word definition for every
pooling, tensors without a copy, and a new pooling mode that is one table entry (collate -> encoder ->
exported graph inputs)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ner_toolkit.config import EncoderConfig
from ner_toolkit.data import pooling
from ner_toolkit.data.batching import Batch, Collator, Encoded, encode_sentences
from ner_toolkit.data.pooling import POOLINGS, Pooling, get_pooling
from ner_toolkit.data.windows import SubwordAligner, fit_context, plan_windows
from ner_toolkit.devices import parse_device
from ner_toolkit.errors import UserError

from conftest import TINY_SCRATCH, TOKENIZER

SENTENCE = ["EU", "rejects", "Blackburnshire", "unbelievably", "lamb", "."]


def _random_items(rng: random.Random, n: int, chars: bool, context: bool) -> list[Encoded]:
    out = []
    for i in range(n):
        T = rng.choice([1, 2, 5, 20, 60, 150])
        pieces = [[rng.randrange(5, 999) for _ in range(rng.choice([1, 1, 1, 2, 3, 7]))] for _ in range(T)]
        char_ids = [[rng.randrange(1, 30) for _ in range(rng.randrange(1, 6))] for _ in range(T)] if chars else None
        left = [rng.randrange(5, 999) for _ in range(rng.randrange(0, 40))] if context else []
        right = [rng.randrange(5, 999) for _ in range(rng.randrange(0, 40))] if context else []
        out.append(Encoded([rng.randrange(0, 50) for _ in range(T)], pieces, [rng.randrange(0, 9) for _ in range(T)],
                           i, char_ids, left, right))
    return out


def _reference_maps(items: list[Encoded], content: int, stride: int, parts: tuple[str, ...], T: int,
                    S: int) -> list[tuple[list[int], list[int], list[float]]]:
    """The definition, one word at a time: each word read from its owner window; ``first`` / ``last`` one
    entry of weight 1, ``mean`` one entry per subword of weight 1/n, word-major."""
    maps: list[tuple[list[int], list[int], list[float]]] = [([], [], []) for _ in parts]
    r = 0
    for b, item in enumerate(items):
        lengths = [len(p) for p in item.pieces]
        left: list[int] = []
        if sum(lengths) <= content:
            windows, owner = [(0, len(lengths))], None
            left, _ = fit_context(item.left, item.right, content - sum(lengths))
        else:
            windows, owner = plan_windows(lengths, content, stride)
        for w, (s, e) in enumerate(windows):
            column = 1 + len(left)
            for t in range(s, e):
                n = lengths[t]
                if owner is None or owner[t] == w:
                    for (src, dst, weight), part in zip(maps, parts):
                        cols = {"first": [column], "last": [column + n - 1], "mean": list(range(column, column + n))}
                        src.extend(r * S + c for c in cols[part])
                        dst.extend([b * T + t] * len(cols[part]))
                        weight.extend([1.0 / n if part == "mean" else 1.0] * len(cols[part]))
                column += n
            r += 1
    return maps


@pytest.mark.parametrize("name", list(POOLINGS))
def test_collator_maps_are_the_per_word_definition(name):
    rng = random.Random(name)
    for trial in range(30):
        items = _random_items(rng, rng.randrange(1, 9), trial % 2 == 0, trial % 3 == 0)
        max_length, stride = rng.choice([(16, 4), (32, 8), (128, 64), (64, 0)])
        collator = Collator(2, 3, 0, max_length, stride, name, pad_multiple=rng.choice([1, 8]))
        batch = collator(items)
        (_, S), (B, T) = batch.input_ids.shape, batch.mask.shape
        want = _reference_maps(items, max_length - 2, stride, POOLINGS[name].parts, T, S)
        assert len(batch.pools) == POOLINGS[name].width
        for (src, dst, weight), (w_src, w_dst, w_weight) in zip(batch.pools, want):
            assert (src.dtype, dst.dtype, weight.dtype) == (np.int64, np.int64, np.float32)
            np.testing.assert_array_equal(src, w_src)
            np.testing.assert_array_equal(dst, w_dst)
            np.testing.assert_array_equal(weight, np.array(w_weight, dtype=np.float32))
        assert batch.mask.dtype == np.bool_ and batch.input_ids.dtype == batch.word_ids.dtype == np.int64
        assert batch.mask.sum() == sum(len(x) for x in items)
        np.testing.assert_array_equal(batch.tags[batch.mask], [t for x in items for t in x.tags])
        if batch.char_ids is not None:
            assert batch.char_ids.shape[:2] == (B, T)
            assert batch.char_ids[0, 0, :len(items[0].char_ids[0])].tolist() == items[0].char_ids[0]


def test_batch_to_makes_tensors_without_copying():
    items = _random_items(random.Random(1), 4, True, False)
    batch = Collator(2, 3, 0, 32, 8, "first_last")(items)
    tensors = batch.to(torch.device("cpu"))
    assert tensors.input_ids.dtype == torch.long and tensors.mask.dtype == torch.bool
    assert tensors.pools[1][2].dtype == torch.float32 and tensors.char_ids.dtype == torch.long
    assert tensors.input_ids.data_ptr() == batch.input_ids.ctypes.data  # a view: no copy on the CPU
    assert tensors.indices == batch.indices and tensors.known is None


def test_a_pooling_is_distinct_known_parts():
    with pytest.raises(ValueError, match="distinct parts"):
        Pooling(("first", "first"))
    with pytest.raises(ValueError, match="distinct parts"):
        Pooling(("max",))
    with pytest.raises(ValueError, match="first, last, mean, first_last"):
        get_pooling("max")
    with pytest.raises(ValueError, match="pooling must be one of"):
        Collator(2, 3, 0, 32, 8, "max")


@pytest.fixture(scope="module")
def tiny_encoder():
    from ner_toolkit.model.encoder import build_hf_encoder

    torch.manual_seed(0)
    hf, tokenizer = build_hf_encoder(EncoderConfig(scratch=dict(TINY_SCRATCH), tokenizer=TOKENIZER))
    return hf.eval(), tokenizer


@pytest.mark.parametrize("parts", [("first", "mean"), ("mean", "last", "first")])
def test_a_new_pooling_mode_is_one_table_entry(tiny_encoder, monkeypatch, parts):
    """An entry added to POOLINGS at run time: the collator builds its maps, the encoder pools and sizes its
    output from it, and the exporter's graph takes one input triple per part."""
    from ner_toolkit.export.graph import batch_inputs, input_names
    from ner_toolkit.export.onnx_export import EmissionNet
    from ner_toolkit.model.encoder import Encoder

    hf, tokenizer = tiny_encoder
    name = "_".join(parts)
    monkeypatch.setitem(pooling.POOLINGS, name, Pooling(parts))
    aligner = SubwordAligner(tokenizer, 8)
    collator = Collator(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, 128, 16, name)
    batch = collator(encode_sentences(aligner, None, [SENTENCE, SENTENCE[:2]])).to(torch.device("cpu"))
    assert len(batch.pools) == len(parts)
    encoder = Encoder(hf, name, freeze=False, dropout=0.0).eval()
    hidden_size = hf.config.hidden_size
    assert encoder.output_dim == len(parts) * hidden_size
    with torch.no_grad():
        words = encoder(batch)
        enc = tokenizer(SENTENCE, is_split_into_words=True, return_tensors="pt")
        hidden = hf(**enc).last_hidden_state[0]
    positions = [[i for i, w in enumerate(enc.word_ids()) if w == t] for t in range(len(SENTENCE))]
    assert any(len(p) > 1 for p in positions), "the sentence must have multi-subword words"
    read = {"first": lambda p: hidden[p[0]], "last": lambda p: hidden[p[-1]], "mean": lambda p: hidden[p].mean(0)}
    expected = torch.stack([torch.cat([read[part](p) for part in parts]) for p in positions])
    assert words.shape == (2, len(SENTENCE), len(parts) * hidden_size)
    torch.testing.assert_close(words[0], expected, atol=1e-5, rtol=1e-4)

    names = input_names(POOLINGS[name].width, chars=False)
    assert [n for n in names if n.startswith("pool")] == [f"pool{i}_{k}" for i in range(len(parts))
                                                           for k in ("src", "dst", "weight")]
    assert list(batch_inputs(batch)) == names

    class Scores(torch.nn.Module):  # the exporter's network over the encoder alone
        def crf_scores(self, b: Batch) -> torch.Tensor:
            return encoder(b)

    net = EmissionNet(Scores(), len(parts), chars=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(**batch_inputs(batch)), words)


def test_device_names_are_parsed_once_torch_free():
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("cuda:1") == ("cuda", 1)
    assert parse_device("auto") == ("auto", None)
    for bad in ("cuda:x", "CUDA", "cuda:", "auto:0", ""):
        with pytest.raises(UserError, match=f"--opt: unknown device {bad!r}"):
            parse_device(bad, "--opt")
