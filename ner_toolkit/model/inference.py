"""A Tagger held in memory, tagging token lists: subword encoding, length-bucketed batches (split to a
subword cap), the network under the run's precision, and CRF decoding on the device with one host copy
per batch. ``predict.Predictor`` is this plus loading a model directory; training scores dev/test and fits
the calibration temperature with it directly, so training needs nothing from prediction.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch

from ..config import EncoderConfig
from ..data.batching import Batch, Encoded, bucketed_batches, encode_sentences, make_collator, micro_batches
from ..data.schemes import segment_continues
from ..data.text import check_tokenizer, detect_tokenizer
from ..data.vocab import CharVocab, Vocab
from ..results import Prediction
from ..tagging import Tagging, to_predictions
from ..data.labels import LabelInfo
from .encoder import max_positions
from .precision import autocast, check_precision
from .tagger import Tagger


class Inference(Tagging):
    """Tags token lists with a ``Tagger`` held in memory. Output tags are in the training data's scheme."""

    def __init__(self, tagger: Tagger, tokenizer: Any, vocab: Optional[Vocab], labels: LabelInfo,
                 encoder_cfg: EncoderConfig, device: torch.device, batch_size: int = 64, token_column: int = 0,
                 precision: str = "fp32", chars: Optional[CharVocab] = None, word_tokenizer: str = "auto",
                 max_subwords: Optional[int] = None) -> None:
        """``max_subwords``: a batch of more padded subwords runs as smaller ones (``training.
        micro_batch_subwords`` for dev/test scoring and calibration): the tags are the same, the peak
        memory bounded."""
        check_precision(precision, device, "--precision")
        check_tokenizer(word_tokenizer)
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
        the CRF's other quantities: ``selection``, ``training.calibration``)."""
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
