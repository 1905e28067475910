"""Dynamic int8 quantisation of the PyTorch predictor (CPU): what is replaced, what is kept, agreement with fp32."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from conftest import SAMPLE

from ner_toolkit.data.conll import read_sentences
from ner_toolkit.data.schemes import is_legal
from ner_toolkit.model.quantize import check_quantize, is_quantized, quantize_int8


@pytest.fixture(scope="module")
def quantized(predictor):
    """A Predictor sharing everything with the fp32 one but its (quantised) tagger."""
    q = copy.copy(predictor)
    q.tagger = quantize_int8(predictor.tagger)
    return q


@pytest.fixture(scope="module")
def dev_sentences():
    return [s.tokens for s in read_sentences(SAMPLE / "dev.txt")]


def _float_modules(module: nn.Module, kind: type) -> list[str]:
    return [name for name, m in module.named_modules() if type(m) is kind]


def test_linear_and_lstm_replaced_crf_untouched(predictor, quantized):
    from torch.ao.nn.quantized.dynamic import LSTM as QLSTM
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    fp32, int8 = predictor.tagger, quantized.tagger
    assert is_quantized(int8) and not is_quantized(fp32)
    # Every float Linear / LSTM is gone, in the encoder too; the original tagger is left as it was.
    assert _float_modules(int8, nn.Linear) == [] and _float_modules(int8, nn.LSTM) == []
    linears = _float_modules(fp32, nn.Linear)
    assert any(n.startswith("encoder.model.") for n in linears) and "emissions" in linears
    for name in linears:
        assert type(int8.get_submodule(name)) is QLinear, name
    lstms = _float_modules(fp32, nn.LSTM)
    assert len(lstms) == 2 * len(fp32.lstm.forward_layers)
    for name in lstms:
        q = int8.get_submodule(name)
        assert type(q) is QLSTM and q.batch_first, name
    # Embeddings stay float.
    assert type(int8.fusion.words) is nn.Embedding and int8.fusion.words.weight.dtype == torch.float32
    # The CRF: the same float32 parameters, bit for bit.
    fp32_crf, int8_crf = dict(fp32.crf.named_parameters()), dict(int8.crf.named_parameters())
    assert fp32_crf.keys() == int8_crf.keys() and fp32_crf
    for name, param in int8_crf.items():
        assert param.dtype == torch.float32, name
        assert torch.equal(param, fp32_crf[name]), name


def test_no_deprecation_noise(predictor):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_int8(predictor.tagger)


def test_tags_agree_with_fp32(predictor, quantized, dev_sentences):
    scheme = predictor.labels.output_scheme
    fp32 = predictor.predict(dev_sentences)
    int8 = quantized.predict(dev_sentences)
    assert [len(t) for t in int8] == [len(s) for s in dev_sentences]
    assert all(is_legal(tags, scheme) for tags in int8)
    tokens = sum(len(s) for s in dev_sentences)
    same = sum(a == b for x, y in zip(fp32, int8) for a, b in zip(x, y))
    assert same / tokens >= 0.95, f"int8 agrees with fp32 on {same}/{tokens} tokens"


def test_detailed_outputs_work_quantised(quantized, dev_sentences):
    sentences = dev_sentences[:8] + [[]]
    out = quantized.predict_detailed(sentences, nbest=3, scores=True)
    for sentence, p in zip(sentences, out):
        assert len(p.tags) == len(sentence)
        assert p.token_confidence is None or len(p.token_confidence) == len(sentence)
        assert p.nbest is None or p.nbest[0][0] == p.tags


def test_refuses_other_devices_and_precisions(predictor):
    for device in ("cuda", "cuda:0", "mps", torch.device("meta")):
        with pytest.raises(ValueError, match="CPU only"):
            check_quantize("int8", device)
    with pytest.raises(ValueError, match="fp32"):
        check_quantize("int8", "cpu", "bf16")
    with pytest.raises(ValueError, match="int8"):
        check_quantize("int4", "cpu")
    check_quantize("int8", "cpu")
    check_quantize(None, "cuda")
    check_quantize("none", "cuda", "bf16")
    on_meta = copy.deepcopy(predictor.tagger).to("meta")
    with pytest.raises(ValueError, match="CPU only.*meta"):
        quantize_int8(on_meta)


def test_predictor_load_hook(trained, quantized, dev_sentences):
    """``Predictor.load(..., quantize="int8")``, once predict.py has the hook: the same tags as quantize_int8."""
    import inspect

    from ner_toolkit.predict import Predictor

    if "quantize" not in inspect.signature(Predictor.load).parameters:
        pytest.skip("Predictor.load has no quantize parameter yet")
    loaded = Predictor.load(trained.model_dir, quantize="int8")
    assert is_quantized(loaded.tagger)
    assert loaded.predict(dev_sentences[:40]) == quantized.predict(dev_sentences[:40])
    with pytest.raises(Exception, match="fp32"):
        Predictor.load(trained.model_dir, precision="bf16", quantize="int8")
