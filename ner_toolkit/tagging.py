"""The Predictor API, torch-free: what ``predict.Predictor`` (PyTorch) and ``export.runtime.OnnxPredictor``
(onnxruntime) share. A subclass encodes sentences and runs batches (``_encode``, ``_run``); choosing
which sentences to encode, turning decoded ids into ``Prediction``s and raw text into entities is here,
once.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Union, overload

from .data.schemes import convert, to_spans
from .data.text import Document
from .data.validate import check_text, check_tokens
from .results import Entity, Prediction, Span, entities

MAX_NBEST = 50  # k-best memory grows with K x tags x length per sentence; past 50 paths differ in noise only


def check_token_lists(sentences: Any) -> None:
    """A list of token lists of ``str``, each text valid (``data.validate``); raw strings where token lists
    belong would be tagged one character per token, and bytes or numbers would reach the tokenizers
    library: each is refused with a ``TypeError`` naming what is expected (``InvalidText`` for surrogates)."""
    if isinstance(sentences, (str, bytes, bytearray)) or not hasattr(sentences, "__len__") \
            or not hasattr(sentences, "__getitem__"):
        raise TypeError(f"Predictor.predict takes a list of token lists (e.g. [['Peter', 'Blackburn']]), not "
                        f"{type(sentences).__name__}; for raw text use Predictor.predict_text(text) or "
                        "predict_text([text, ...])")
    for i, sentence in enumerate(sentences):
        check_tokens(sentence, f"sentence {i}")


def to_predictions(items: Sequence[Any], host: dict[str, list], labels: Any, nbest: int,
                   scores: bool) -> list[Prediction]:
    """``Prediction``s of one decoded batch from its host lists: ``paths`` (B, T) label ids, with
    ``nbest`` > 1 ``k_paths`` (B, K, T) and ``k_scores`` (B, K), with ``scores`` ``token_p`` (B, T),
    ``span_start`` (B, T) and ``span_p`` (B, T) (see ``CRF.span_log_probs``). ``labels``: a LabelInfo."""
    names, internal_scheme, scheme = labels.labels, labels.tag_scheme, labels.output_scheme
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


class Tagging:
    """Tags token lists and raw text; subclasses set ``context`` and ``word_tokenizer``."""

    context: int = 0
    word_tokenizer: str = "conll"
    # Confidences (marginals, span probabilities) are computed with every CRF score over this; the model
    # directory's calibration.json sets it (fitted on dev by training). Tags never depend on it.
    temperature: float = 1.0
    # Where a CoNLL input holds its gold tags (the model's data.label_column): read by --evaluate and named
    # in the output's column header.
    label_column: int = -1

    def _encode(self, sentences: list[Sequence[str]], documents: Optional[list[int]]) -> list[Any]:
        """The sentences as encoded items (``.index`` = position in ``sentences``)."""
        raise NotImplementedError

    def _run(self, encoded: list[Any], nbest: int, scores: bool) -> Iterator[tuple[Any, Prediction]]:
        """(item, its prediction) for every encoded item, in any order."""
        raise NotImplementedError

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
        check_token_lists(sentences)
        if not 1 <= nbest <= MAX_NBEST:
            raise ValueError(f"nbest must be from 1 to {MAX_NBEST}, got {nbest}")
        out: list[Prediction] = [Prediction([], []) for _ in sentences]
        if documents is not None and len(documents) != len(sentences):
            raise ValueError(f"{len(documents)} document numbers for {len(sentences)} sentences")
        wanted = range(len(sentences)) if only is None else only
        # With document context every non-empty sentence is encoded (it is someone's context); only the
        # wanted ones are tagged.
        non_empty = [i for i in (range(len(sentences)) if self.context > 0 else wanted) if len(sentences[i]) > 0]
        encoded = self._encode([sentences[i] for i in non_empty],
                               None if documents is None else [documents[i] for i in non_empty])
        if self.context > 0 and only is not None:
            keep = set(only)
            encoded = [e for e in encoded if non_empty[e.index] in keep]
        for item, prediction in self._run(encoded, nbest, scores):
            out[non_empty[item.index]] = prediction
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
        if isinstance(texts, (bytes, bytearray)):
            check_text(texts, "predict_text's text")  # TypeError: decode it first
        batch = [texts] if single else list(texts)
        for i, text in enumerate(batch):
            if isinstance(text, (list, tuple)):
                raise TypeError(f"predict_text takes a string or a list of strings; text {i} is "
                                f"{type(text).__name__} (token lists go to Predictor.predict)")
            check_text(text, "the text" if single else f"text {i}")
        documents = [Document.from_text(text, tokenizer or self.word_tokenizer) for text in batch]
        found = [entities(d, p) for d, p in zip(documents, self.predict_documents(documents))]
        return found[0] if single else found

    def predict_documents(self, documents: Sequence[Document], nbest: int = 1) -> list[Prediction]:
        """Predictions with CRF scores for tokenised texts; each text is its own document (its own
        context), and the predictions' token spans index its tokens."""
        return self.predict_detailed([d.tokens for d in documents], nbest, scores=True,
                                     documents=list(range(len(documents))))
