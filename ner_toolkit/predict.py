"""The Predictor: tags token lists and raw text held in memory; its result types.

The tagging itself is ``model.inference.Inference``'s (training scores with it too); the Predictor adds
loading a model directory, or an ``ner-export`` directory into the ONNX runtime. Files are streamed by
``streaming.py``; how results are written is ``formats.py``'s.
"""
from __future__ import annotations

import os
from typing import Optional, Union

from . import distributed
from .calibration import read_temperature
from .devices import resolve_device
from .errors import UserError
from .model.compiled import compile_network
from .model.directory import load_model
from .model.inference import Inference
from .model.precision import check_precision
from .model.quantize import check_quantize, quantize_int8
from .results import Entity, Prediction, Span, entities
from .tagging import MAX_NBEST

__all__ = ["Predictor", "Prediction", "Span", "Entity", "entities", "MAX_NBEST"]


class Predictor(Inference):
    """Tags token lists and raw text with a trained model. Output tags are in the training data's scheme."""

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], device: str = "cpu", batch_size: int = 64,
             precision: str = "fp32", trust_remote_code: bool = False,
             word_tokenizer: Optional[str] = None, quantize: Optional[str] = None,
             compile: bool = False) -> "Predictor":
        """``trust_remote_code``: the user's decision to let the directory's custom code (auto_map) run.
        ``word_tokenizer``: how ``predict_text`` splits raw text (default: the one the model was trained with).
        ``quantize``: ``int8`` for dynamic int8 Linear/LSTM weights (CPU; the CRF stays float32).
        ``compile``: torch.compile the network before the CRF (the first batch of each shape family pays
        the compile; see ``model.compiled``).
        An ``ner-export`` directory loads the ONNX runtime instead (same methods, no torch at inference)."""
        from .export import is_export

        if is_export(directory):
            from .export.runtime import OnnxPredictor

            if quantize not in (None, "none"):
                raise UserError("an export is quantised by ner-export --quantize int8, not at load time", "--quantize")
            if compile:
                raise UserError("--compile is for a model directory; an export runs in ONNX Runtime", "--compile")
            return OnnxPredictor.load(directory, device, batch_size, precision,  # type: ignore[return-value]
                                      trust_remote_code=trust_remote_code, word_tokenizer=word_tokenizer)
        _, rank_device = distributed.init_from_env(device)  # torchrun: one process per device
        dev = resolve_device(rank_device or device)
        check_precision(precision, dev, "--precision")
        try:
            check_quantize(quantize, dev, precision)  # before the model loads
        except ValueError as exc:
            raise UserError(str(exc), "--quantize") from None
        model = load_model(directory, dev, trust_remote_code=trust_remote_code)
        tagger = quantize_int8(model.tagger, inplace=True) if quantize == "int8" else model.tagger
        if compile:
            compile_network(tagger)
        predictor = cls(tagger, model.tokenizer, model.vocab, model.labels, model.config.model.encoder, dev,
                        batch_size, model.config.data.token_column, precision, model.chars,
                        word_tokenizer or model.config.data.word_tokenizer)
        predictor.temperature = read_temperature(model.directory)
        predictor.label_column = model.config.data.label_column
        return predictor
