"""The Predictor: tags token lists and raw text held in memory; its result types.

Files are streamed by ``streaming.py``; how results are written is ``formats.py``'s.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from . import distributed
from .calibration import read_temperature
from .config import EncoderConfig
from .data.batching import Batch, Encoded, bucketed_batches, encode_sentences, make_collator, micro_batches
from .data.schemes import segment_continues
from .data.text import TOKENIZERS, detect_tokenizer
from .data.vocab import CharVocab, Vocab
from .devices import resolve_device
from .errors import UserError
from .model.compiled import compile_network
from .data.labels import LabelInfo
from .model.directory import load_model
from .model.encoder import max_positions
from .model.precision import autocast, check_precision
from .model.quantize import check_quantize, quantize_int8
from .model.tagger import Tagger
from .results import Entity, Prediction, Span, entities
from .tagging import MAX_NBEST, Tagging, to_predictions

__all__ = ["Predictor", "Prediction", "Span", "Entity", "entities", "MAX_NBEST"]

class Predictor(Tagging):
    """Tags token lists with a model held in memory. Output tags are in the training data's scheme."""

    def __init__(self, tagger: Tagger, tokenizer: Any, vocab: Optional[Vocab], labels: LabelInfo,
                 encoder_cfg: EncoderConfig, device: torch.device, batch_size: int = 64, token_column: int = 0,
                 precision: str = "fp32", chars: Optional[CharVocab] = None, word_tokenizer: str = "auto",
                 max_subwords: Optional[int] = None) -> None:
        """``max_subwords``: a batch of more padded subwords runs as smaller ones (``training.
        micro_batch_subwords`` for dev/test scoring and calibration): the tags are the same, the peak
        memory bounded."""
        check_precision(precision, device, "--precision")
        if word_tokenizer != "auto" and word_tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown word tokenizer {word_tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
        # Models saved before data.word_tokenizer existed: chosen from the words the model was trained on.
        self.word_tokenizer = (detect_tokenizer(vocab.words[2:] if vocab is not None else []) if word_tokenizer == "auto"
                               else word_tokenizer)
        self.chars = chars
        self.tagger, self.vocab, self.labels = tagger, vocab, labels
        self.precision = precision
        self.token_column = token_column  # where prediction inputs hold their tokens (as in training)
        self.device, self.batch_size, self.max_subwords = device, batch_size, max_subwords
        self.aligner, self.collator = make_collator(tokenizer, max_positions(tagger.encoder.model), encoder_cfg)
        self.context = encoder_cfg.context
        self.continues = torch.tensor(segment_continues(labels.labels, labels.tag_scheme), dtype=torch.bool,
                                      device=device)

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
        return predictor

    def _encode(self, sentences: list[Sequence[str]], documents: Optional[list[int]]) -> list[Encoded]:
        return encode_sentences(self.aligner, self.vocab, sentences, chars=self.chars, documents=documents,
                                context=self.context)

    def _run(self, encoded: list[Encoded], nbest: int, scores: bool) -> Iterator[tuple[Encoded, Prediction]]:
        was_training = self.tagger.training
        if was_training:  # train()/eval() walk every submodule: a cost per call that small batches feel
            self.tagger.eval()
        try:
            with torch.inference_mode():
                for items, batch in self._batches(encoded):
                    yield from zip(items, self._batch(batch.to(self.device), items, nbest, scores))
        finally:
            if was_training:
                self.tagger.train()

    def _batches(self, encoded: Sequence[Encoded]) -> Iterator[tuple[Sequence[Encoded], Batch]]:
        """Length-sorted batches of ``batch_size`` sentences, each split to ``max_subwords``; on the host."""
        for items in bucketed_batches(encoded, self.batch_size, shuffle=False):
            yield from micro_batches(items, self.collator, self.max_subwords)

    def emission_batches(self, sentences: Sequence[Sequence[str]], documents: Optional[Sequence[int]] = None
                         ) -> Iterator[tuple[list[int], Batch, torch.Tensor]]:
        """``(indices, batch, emissions)`` for the non-empty ``sentences``, length-bucketed as ``predict``
        does: ``indices[b]`` is row ``b``'s position in ``sentences``; ``emissions`` ``(B, T, K)`` float32,
        computed in eval mode under inference mode and the predictor's precision (for callers that need
        the CRF's other quantities: ``selection``, ``temperature``)."""
        keep = [i for i, s in enumerate(sentences) if len(s) > 0]
        encoded = self._encode([sentences[i] for i in keep], None if documents is None else [documents[i] for i in keep])
        was_training = self.tagger.training
        self.tagger.eval()
        try:
            with torch.inference_mode():
                for items, batch in self._batches(encoded):
                    batch = batch.to(self.device)
                    with autocast(self.device, self.precision):
                        emissions = self.tagger.crf_scores(batch)
                    yield [keep[item.index] for item in items], batch, emissions.float()
        finally:
            if was_training:
                self.tagger.train()

    def _batch(self, batch: Batch, items: Sequence[Encoded], nbest: int, scores: bool) -> list[Prediction]:
        """Decode one batch on the device; results come to the host together at the end."""
        crf = self.tagger.crf
        with autocast(self.device, self.precision):
            emissions = self.tagger.crf_scores(batch)  # the CRF below computes in float32
        if nbest > 1:
            k_paths, k_scores = crf.nbest(emissions, batch.mask, nbest)
            paths = k_paths[:, 0]
        else:
            paths = crf.decode(emissions, batch.mask)[0]
        device_out = {"paths": paths}
        if nbest > 1:
            device_out.update(k_paths=k_paths, k_scores=k_scores)
        if scores:
            marginals, is_end, starts, log_p = crf.posteriors(emissions, batch.mask, paths, self.continues,
                                                              self.temperature)
            device_out["token_p"] = marginals.gather(2, paths.unsqueeze(2)).squeeze(2)
            device_out.update(span_start=starts, span_p=log_p.exp())
        host = {k: v.cpu().tolist() for k, v in device_out.items()}  # the host copy, after all device work
        return to_predictions(items, host, self.labels, nbest, scores)
