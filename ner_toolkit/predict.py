"""The Predictor: tags token lists and raw text held in memory; its result types.

Files are streamed by ``streaming.py``; how results are written is ``formats.py``'s.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union, overload

import torch

from . import distributed
from .config import EncoderConfig
from .data.batching import Batch, Encoded, bucketed_batches, encode_sentences, make_collator
from .data.schemes import convert, segment_continues, to_spans
from .data.text import TOKENIZERS, Document, detect_tokenizer
from .data.vocab import CharVocab, Vocab
from .devices import resolve_device
from .errors import UserError
from .model.directory import LabelInfo, load_model
from .model.encoder import max_positions
from .model.precision import autocast, check_precision
from .model.quantize import check_quantize, quantize_int8
from .model.tagger import Tagger
from .results import Entity, Prediction, Span, entities

__all__ = ["Predictor", "Prediction", "Span", "Entity", "entities", "MAX_NBEST"]

MAX_NBEST = 50  # k-best memory grows with K x tags x length per sentence; past 50 paths differ in noise only


def _check_token_lists(sentences: Any) -> None:
    """Raw strings where token lists belong would be tagged one character per token: refuse them."""
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
        raise TypeError("Predictor.predict takes a list of token lists (e.g. [['Peter', 'Blackburn']]); "
                        "for raw text use Predictor.predict_text(text) or predict_text([text, ...])")


class Predictor:
    """Tags token lists with a model held in memory. Output tags are in the training data's scheme."""

    def __init__(self, tagger: Tagger, tokenizer: Any, vocab: Optional[Vocab], labels: LabelInfo,
                 encoder_cfg: EncoderConfig, device: torch.device, batch_size: int = 64, token_column: int = 0,
                 precision: str = "fp32", chars: Optional[CharVocab] = None, word_tokenizer: str = "auto") -> None:
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
        self.device, self.batch_size = device, batch_size
        self.aligner, self.collator = make_collator(tokenizer, max_positions(tagger.encoder.model), encoder_cfg)
        self.context = encoder_cfg.context
        self.continues = torch.tensor(segment_continues(labels.labels, labels.tag_scheme), dtype=torch.bool,
                                      device=device)

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], device: str = "cpu", batch_size: int = 64,
             precision: str = "fp32", trust_remote_code: bool = False,
             word_tokenizer: Optional[str] = None, quantize: Optional[str] = None) -> "Predictor":
        """``trust_remote_code``: the user's decision to let the directory's custom code (auto_map) run.
        ``word_tokenizer``: how ``predict_text`` splits raw text (default: the one the model was trained with).
        ``quantize``: ``int8`` for dynamic int8 Linear/LSTM weights (CPU; the CRF stays float32).
        An ``ner-export`` directory loads the ONNX runtime instead (same methods, no torch at inference)."""
        from .export import is_export

        if is_export(directory):
            from .export.runtime import OnnxPredictor

            if quantize not in (None, "none"):
                raise UserError("an export is quantised by ner-export --quantize int8, not at load time", "--quantize")
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
        return cls(tagger, model.tokenizer, model.vocab, model.labels, model.config.model.encoder, dev, batch_size,
                   model.config.data.token_column, precision, model.chars,
                   word_tokenizer or model.config.data.word_tokenizer)

    def predict(self, sentences: Sequence[Sequence[str]],
                documents: Optional[Sequence[int]] = None) -> list[list[str]]:
        """Tags for each sentence (one per token, always), in the input order. A sentence is a list of
        tokens; raw text goes to :meth:`predict_text`."""
        return [p.tags for p in self.predict_detailed(sentences, documents=documents)]

    def predict_detailed(self, sentences: Sequence[Sequence[str]], nbest: int = 1, scores: bool = False,
                         documents: Optional[Sequence[int]] = None,
                         only: Optional[Sequence[int]] = None) -> list[Prediction]:
        """Tags plus, on request, the ``nbest`` best paths and CRF confidences, in the input order.

        ``scores``: each token's marginal probability of its predicted tag, and each predicted span's
        probability under the CRF (that exact span, not a softmax over path scores).
        ``documents``: a document number per sentence, for a model trained with document context
        (``model.encoder.context``): neighbours in the same document are its context. None: the
        sentences are one document, in order. ``only``: predict just these indices (in this order),
        the other sentences serving as context.
        """
        _check_token_lists(sentences)
        if not 1 <= nbest <= MAX_NBEST:
            raise ValueError(f"nbest must be from 1 to {MAX_NBEST}, got {nbest}")
        out: list[Prediction] = [Prediction([], []) for _ in sentences]
        if documents is not None and len(documents) != len(sentences):
            raise ValueError(f"{len(documents)} document numbers for {len(sentences)} sentences")
        wanted = range(len(sentences)) if only is None else only
        # With document context every non-empty sentence is encoded (it is someone's context); only the
        # wanted ones are tagged.
        non_empty = [i for i in (range(len(sentences)) if self.context > 0 else wanted) if len(sentences[i]) > 0]
        encoded = encode_sentences(self.aligner, self.vocab, [sentences[i] for i in non_empty], chars=self.chars,
                                   documents=None if documents is None else [documents[i] for i in non_empty],
                                   context=self.context)
        if self.context > 0 and only is not None:
            keep = set(only)
            encoded = [e for e in encoded if non_empty[e.index] in keep]
        was_training = self.tagger.training
        self.tagger.eval()
        try:
            with torch.inference_mode():
                for items in bucketed_batches(encoded, self.batch_size, shuffle=False):
                    batch = self.collator(items).to(self.device)
                    for item, prediction in zip(items, self._batch(batch, items, nbest, scores)):
                        out[non_empty[item.index]] = prediction
        finally:
            self.tagger.train(was_training)
        return out if only is None else [out[i] for i in only]

    @overload
    def predict_text(self, texts: str, tokenizer: Optional[str] = None) -> list[Entity]: ...

    @overload
    def predict_text(self, texts: Sequence[str], tokenizer: Optional[str] = None) -> list[list[Entity]]: ...

    def predict_text(self, texts: Union[str, Sequence[str]],
                     tokenizer: Optional[str] = None) -> Union[list[Entity], list[list[Entity]]]:
        """Entities with character offsets for one text (a list of entities) or several (a list per text).

        A text is a document of any length: it is split into words by the model's word tokeniser
        (``tokenizer`` overrides it: whitespace | conll | chars) and tagged as one sequence, through
        the encoder's windows when long; no word is dropped. Each entity's ``text`` is exactly
        ``original[start:end]``; its ``score`` is the span's probability under the CRF.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"predict_text takes a string or a list of strings; item {i} is "
                                f"{type(text).__name__} (token lists go to Predictor.predict)")
        documents = [Document.from_text(text, tokenizer or self.word_tokenizer) for text in batch]
        found = [entities(d, p) for d, p in zip(documents, self.predict_documents(documents))]
        return found[0] if single else found

    def predict_documents(self, documents: Sequence[Document], nbest: int = 1) -> list[Prediction]:
        """Predictions with CRF scores for tokenised texts; each text is its own document (its own
        context), and the predictions' token spans index its tokens."""
        return self.predict_detailed([d.tokens for d in documents], nbest, scores=True,
                                     documents=list(range(len(documents))))

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
            marginals = crf.marginals(emissions, batch.mask)
            device_out["token_p"] = marginals.gather(2, paths.unsqueeze(2)).squeeze(2)
            is_end, starts, log_p = crf.span_log_probs(emissions, batch.mask, paths, self.continues)
            device_out.update(span_start=starts, span_p=log_p.exp())
        host = {k: v.cpu().tolist() for k, v in device_out.items()}  # the host copy, after all device work
        names, internal_scheme, scheme = self.labels.labels, self.labels.tag_scheme, self.labels.output_scheme
        results = []
        for b, item in enumerate(items):
            n = len(item)
            internal = [names[k] for k in host["paths"][b][:n]]
            prediction = Prediction(convert(internal, internal_scheme, scheme), [])
            if scores or nbest > 1:
                for label, start, end in to_spans(internal, internal_scheme):
                    confidence = None
                    if scores and host["span_start"][b][end - 1] == start:
                        confidence = host["span_p"][b][end - 1]
                    prediction.spans.append(Span(label, start, end, confidence))
            if scores:
                prediction.token_confidence = host["token_p"][b][:n]
            if nbest > 1:
                prediction.nbest = [
                    (convert([names[k] for k in path[:n]], internal_scheme, scheme), score)
                    for path, score in zip(host["k_paths"][b], host["k_scores"][b]) if score != float("-inf")]
            results.append(prediction)
        return results
