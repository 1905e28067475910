"""``OnnxPredictor``: the ``Predictor`` API over an ONNX export (``ner-export``), with no torch anywhere.

Emissions come from onnxruntime; decoding is the toolkit's own constrained Viterbi / k-best (the C
library of ``model/crf/viterbi_native.c`` on numpy arrays, numpy when it cannot be built), and
confidences are CRF marginals and exact-span probabilities computed in numpy (:mod:`.numpy_crf`).
Inputs are collated exactly as ``data.batching.Collator`` does (:mod:`.collate`), in the same
longest-first batches, so results match ``Predictor``'s (fp32: the same tags; int8: close).

The import chain (this module, ``results``, ``data.text``/``schemes``, ``config``, ``model.directory_checks``,
``transformers``' tokenizer) does not import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union, overload

import numpy as np

from ..config import Config, from_dict
from ..config_checks import parse_yaml
from ..data.schemes import allowed_transitions, convert, segment_continues, to_spans
from ..data.text import TOKENIZERS, Document, detect_tokenizer
from ..errors import UserError
from ..model import directory_checks as checks
from ..results import Entity, Prediction, Span, entities
from . import CRF_FILE, FORMAT_VERSION, GRAPH, GRAPH_INT8, MANIFEST, numpy_crf
from .collate import CharLookup, NumpyBatch, NumpyCollator, SubwordAligner, WordLookup, encode_sentences, sorted_batches

MAX_NBEST = 50  # as predict.MAX_NBEST

__all__ = ["OnnxPredictor", "LabelInfo", "MAX_NBEST"]


@dataclass
class LabelInfo:
    """``model.directory.LabelInfo`` (that module imports torch)."""

    labels: list[str]
    tag_scheme: str
    output_scheme: str

    @property
    def types(self) -> set[str]:
        return {label.split("-", 1)[1] for label in self.labels if label != "O"}

    def constraints(self) -> tuple[list[bool], list[bool], list[list[bool]]]:
        return allowed_transitions(self.labels, self.tag_scheme)


class FastTokenizer:
    """The exported ``tokenizer.json`` through the ``tokenizers`` library, called as ``SubwordAligner``
    calls a transformers tokenizer (transformers imports torch when it is installed). A fast
    transformers tokenizer runs exactly this backend: the export checks both give the same ids."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self.backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library's errors are plain Exceptions
            raise UserError(f"cannot load the tokenizer: {str(exc).splitlines()[0] if str(exc) else exc}", path) from None
        self.backend.no_truncation()
        self.backend.no_padding()

    def __call__(self, batch: Sequence[Sequence[str]], is_split_into_words: bool = True,
                 add_special_tokens: bool = False) -> dict:
        assert is_split_into_words, "called with words"
        encodings = self.backend.encode_batch([list(words) for words in batch], is_pretokenized=True,
                                              add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings]}


def load_tokenizer(directory: Path, trust_remote_code: bool = False, backend: str = "tokenizers") -> Any:
    """``tokenizer.json`` via :class:`FastTokenizer`; an export without one (a slow-only tokenizer), or whose
    backend the export found to differ from transformers (``backend="transformers"``), uses transformers'
    ``AutoTokenizer``, which imports torch when it is installed."""
    if backend == "tokenizers" and (directory / "tokenizer.json").is_file():
        return FastTokenizer(directory / "tokenizer.json")
    checks.check_tokenizer_files(directory, trust_remote_code)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot load the tokenizer: {str(exc).splitlines()[0]}", directory) from None


def _check_token_lists(sentences: Any) -> None:
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
        raise TypeError("OnnxPredictor.predict takes a list of token lists (e.g. [['Peter', 'Blackburn']]); "
                        "for raw text use predict_text(text) or predict_text([text, ...])")


def _read_manifest(directory: Path) -> dict:
    manifest = checks.read_json_object(directory / MANIFEST)
    if manifest.get("format") != "ner_toolkit-onnx" or not isinstance(manifest.get("version"), int):
        raise UserError("not an ONNX export of ner_toolkit (export.json); run ner-export again", directory / MANIFEST)
    if manifest["version"] > FORMAT_VERSION:
        raise UserError(f"export format {manifest['version']} is newer than this toolkit reads ({FORMAT_VERSION}); "
                        "upgrade ner_toolkit", directory / MANIFEST)
    return manifest


class OnnxPredictor:
    """Tags token lists with an exported model. Output tags are in the training data's scheme."""

    def __init__(self, directory: Union[str, os.PathLike], batch_size: int = 64, graph: Optional[str] = None,
                 trust_remote_code: bool = False, word_tokenizer: Optional[str] = None, device: str = "cpu",
                 threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        d = self.directory
        manifest = _read_manifest(d)
        self.manifest = manifest
        raw, _ = parse_yaml((d / "config.yaml").read_text(encoding="utf-8"), str(d / "config.yaml"))
        if not isinstance(raw, dict):
            raise UserError("corrupted config: not a mapping", d / "config.yaml")
        self.config: Config = from_dict(raw, str(d / "config.yaml"))
        self.labels = LabelInfo(*checks.check_labels(checks.read_json_object(d / "labels.json"), d / "labels.json"))
        if len(self.labels.labels) != manifest.get("num_labels"):
            raise UserError("labels.json does not match the exported graph; export the model again", d / "labels.json")
        tokenizer = load_tokenizer(d, trust_remote_code, manifest.get("tokenizer", "tokenizers"))
        self.tokenizer = tokenizer
        self.vocab = WordLookup.load(d / "word_vocab.txt", bool(manifest["lowercase"])) \
            if manifest.get("fusion", "concat") != "none" else None
        self.chars = CharLookup.load(d / "char_vocab.json") if manifest.get("chars") else None
        c = manifest["collator"]
        self.aligner = SubwordAligner(tokenizer, int(c["max_pieces_per_word"]), int(c["unk_id"]))
        self.collator = NumpyCollator(int(c["cls_id"]), int(c["sep_id"]), int(c["pad_id"]), int(c["max_length"]),
                                      int(c["stride"]), str(c["pooling"]))
        self.context = int(manifest.get("context", 0))
        self.token_column = self.config.data.token_column
        chosen = word_tokenizer or self.config.data.word_tokenizer
        if chosen != "auto" and chosen not in TOKENIZERS:
            raise ValueError(f"unknown word tokenizer {chosen!r}; choose one of {', '.join(TOKENIZERS)}")
        self.word_tokenizer = (detect_tokenizer(self.vocab.words[2:] if self.vocab is not None else [])
                               if chosen == "auto" else chosen)
        self.batch_size = batch_size
        crf = np.load(d / CRF_FILE)
        allowed = (crf["start_allowed"], crf["end_allowed"], crf["transitions_allowed"]) \
            if bool(crf["constrained"]) else None
        self.crf = numpy_crf.CRFParams.from_arrays(crf["start"], crf["end"], crf["transitions"], allowed)
        self.continues = np.array(segment_continues(self.labels.labels, self.labels.tag_scheme), dtype=bool)
        graphs = manifest.get("graphs", {"fp32": GRAPH})
        self.graph = graph or ("int8" if manifest.get("graph") == GRAPH_INT8 else "fp32")
        if self.graph not in graphs:
            raise UserError(f"this export has no {self.graph} graph (it has: {', '.join(graphs)}); "
                            f"export with --quantize {self.graph}" if self.graph == "int8" else
                            f"this export has no {self.graph} graph", d)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise UserError(f"unknown device {device!r} for an ONNX export: cpu | cuda | cuda:N", "--device")
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)",
                                "--device")
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.device = device
        self.precision = self.graph  # "fp32" | "int8", what a server reports
        self.session = ort.InferenceSession(str(d / graphs[self.graph]), options, providers=providers)
        self._inputs = {i.name for i in self.session.get_inputs()}

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], device: str = "cpu", batch_size: int = 64,
             precision: str = "fp32", trust_remote_code: bool = False, word_tokenizer: Optional[str] = None,
             graph: Optional[str] = None) -> "OnnxPredictor":
        """``Predictor.load``'s signature. ``precision``: only fp32 (the graph's own arithmetic); ``graph``:
        "fp32" or "int8" (default: the export's choice, int8 when it was exported with --quantize int8)."""
        if precision != "fp32":
            raise UserError(f"--precision {precision} does not apply to an ONNX export (its graph fixes the "
                            "arithmetic: export with --quantize int8 for a faster one)", "--precision")
        return cls(directory, batch_size, graph, trust_remote_code, word_tokenizer, device)

    # ------------------------------------------------------------------------------ prediction
    def predict(self, sentences: Sequence[Sequence[str]],
                documents: Optional[Sequence[int]] = None) -> list[list[str]]:
        """Tags for each sentence (one per token, always), in the input order."""
        return [p.tags for p in self.predict_detailed(sentences, documents=documents)]

    def predict_detailed(self, sentences: Sequence[Sequence[str]], nbest: int = 1, scores: bool = False,
                         documents: Optional[Sequence[int]] = None,
                         only: Optional[Sequence[int]] = None) -> list[Prediction]:
        """As ``Predictor.predict_detailed``."""
        _check_token_lists(sentences)
        if not 1 <= nbest <= MAX_NBEST:
            raise ValueError(f"nbest must be from 1 to {MAX_NBEST}, got {nbest}")
        out: list[Prediction] = [Prediction([], []) for _ in sentences]
        if documents is not None and len(documents) != len(sentences):
            raise ValueError(f"{len(documents)} document numbers for {len(sentences)} sentences")
        wanted = range(len(sentences)) if only is None else only
        non_empty = [i for i in (range(len(sentences)) if self.context > 0 else wanted) if len(sentences[i]) > 0]
        encoded = encode_sentences(self.aligner, self.vocab, [sentences[i] for i in non_empty], chars=self.chars,
                                   documents=None if documents is None else [documents[i] for i in non_empty],
                                   context=self.context)
        if self.context > 0 and only is not None:
            keep = set(only)
            encoded = [e for e in encoded if non_empty[e.index] in keep]
        for items in sorted_batches(encoded, self.batch_size):
            batch = self.collator(items)
            for item, prediction in zip(items, self._batch(batch, items, nbest, scores)):
                out[non_empty[item.index]] = prediction
        return out if only is None else [out[i] for i in only]

    @overload
    def predict_text(self, texts: str, tokenizer: Optional[str] = None) -> list[Entity]: ...

    @overload
    def predict_text(self, texts: Sequence[str], tokenizer: Optional[str] = None) -> list[list[Entity]]: ...

    def predict_text(self, texts: Union[str, Sequence[str]],
                     tokenizer: Optional[str] = None) -> Union[list[Entity], list[list[Entity]]]:
        """As ``Predictor.predict_text``: entities with character offsets for one text or several."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"predict_text takes a string or a list of strings; item {i} is "
                                f"{type(text).__name__} (token lists go to predict)")
        documents = [Document.from_text(text, tokenizer or self.word_tokenizer) for text in batch]
        found = [entities(d, p) for d, p in zip(documents, self.predict_documents(documents))]
        return found[0] if single else found

    def predict_documents(self, documents: Sequence[Document], nbest: int = 1) -> list[Prediction]:
        """As ``Predictor.predict_documents``."""
        return self.predict_detailed([d.tokens for d in documents], nbest, scores=True,
                                     documents=list(range(len(documents))))

    def emissions(self, batch: NumpyBatch) -> np.ndarray:
        """The graph's (B, T, K) float32 scores for one collated batch."""
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "word_ids": batch.word_ids,
                "lengths": batch.lengths}
        for i, (src, dst, weight) in enumerate(batch.pools):
            feed.update({f"pool{i}_src": src, f"pool{i}_dst": dst, f"pool{i}_weight": weight})
        if batch.char_ids is not None:
            feed["char_ids"] = batch.char_ids
        return self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]

    def _batch(self, batch: NumpyBatch, items: Sequence[Any], nbest: int, scores: bool) -> list[Prediction]:
        em = self.emissions(batch)
        mask = batch.mask
        if nbest > 1:
            k_paths, k_scores = numpy_crf.nbest(em, mask, self.crf, nbest)
            paths = k_paths[:, 0]
        else:
            paths = numpy_crf.viterbi(em, mask, self.crf)[0]
        if scores:
            marg = numpy_crf.marginals(em, mask, self.crf)
            token_p = np.take_along_axis(marg, paths[:, :, None], 2)[:, :, 0].astype(np.float32).tolist()
            _, span_start, log_p = numpy_crf.span_log_probs(em, mask, self.crf, paths, self.continues)
            span_start = span_start.tolist()
            span_p = np.exp(log_p).astype(np.float32).tolist()
        host_paths = paths.tolist()
        names, internal_scheme, scheme = self.labels.labels, self.labels.tag_scheme, self.labels.output_scheme
        results = []
        for b, item in enumerate(items):
            n = len(item)
            internal = [names[k] for k in host_paths[b][:n]]
            prediction = Prediction(convert(internal, internal_scheme, scheme), [])
            if scores or nbest > 1:
                for label, start, end in to_spans(internal, internal_scheme):
                    confidence = None
                    if scores and span_start[b][end - 1] == start:
                        confidence = span_p[b][end - 1]
                    prediction.spans.append(Span(label, start, end, confidence))
            if scores:
                prediction.token_confidence = token_p[b][:n]
            if nbest > 1:
                prediction.nbest = [
                    (convert([names[k] for k in path[:n]], internal_scheme, scheme), score)
                    for path, score in zip(k_paths[b].tolist(), k_scores[b].tolist()) if score != float("-inf")]
            results.append(prediction)
        return results
