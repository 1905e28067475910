"""``OnnxPredictor``: the ``Predictor`` API over an ONNX export (``ner-export``), with no torch anywhere.

Emissions come from onnxruntime; decoding is the toolkit's own constrained Viterbi / k-best (the C
library of ``model/crf/viterbi_native.c`` on numpy arrays, numpy when it cannot be built), and
confidences are CRF marginals and exact-span probabilities computed in numpy (:mod:`.numpy_crf`).
Inputs are collated by ``data.batching.Collator`` itself (it emits numpy arrays), in the same longest-first
batches, so results match ``Predictor``'s (fp32: the same tags; int8: close).

The import chain (this module, ``results``, ``data.text``/``schemes``, ``config``, ``model.directory_checks``,
``transformers``' tokenizer) does not import torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from ..calibration import read_temperature
from ..config import Config, from_dict
from ..schema import parse_yaml
from ..data.batching import Batch, Collator, Encoded, bucketed_batches, encode_sentences
from ..data.labels import LabelInfo
from ..data.schemes import segment_continues
from ..data.text import check_tokenizer, detect_tokenizer
from ..extras import require
from ..devices import parse_device
from ..errors import UserError
from ..model import directory_checks as checks
from ..results import Prediction
from ..tagging import MAX_NBEST, Tagging, to_predictions
from . import CRF_FILE, FORMAT_VERSION, GRAPH, GRAPH_INT8, MANIFEST, numpy_crf
from ..data.vocab import CharVocab, Vocab
from ..data.windows import SubwordAligner, plain_backend
from .graph import batch_inputs


__all__ = ["OnnxPredictor", "LabelInfo", "MAX_NBEST"]


class FastTokenizer:
    """The exported ``tokenizer.json`` through the ``tokenizers`` library, called as ``SubwordAligner``
    calls a transformers tokenizer (transformers imports torch when it is installed). A fast
    transformers tokenizer runs exactly this backend: the export checks both give the same ids."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            loaded = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library's errors are plain Exceptions
            raise UserError(f"cannot load the tokenizer: {str(exc).splitlines()[0] if str(exc) else exc}", path) from None
        self.backend = plain_backend(loaded)  # without the file's padding and truncation

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


def _read_manifest(directory: Path) -> dict:
    manifest = checks.read_json_object(directory / MANIFEST)
    if manifest.get("format") != "ner_toolkit-onnx" or not isinstance(manifest.get("version"), int):
        raise UserError("not an ONNX export of ner_toolkit (export.json); run ner-export again", directory / MANIFEST)
    if manifest["version"] > FORMAT_VERSION:
        raise UserError(f"export format {manifest['version']} is newer than this toolkit reads ({FORMAT_VERSION}); "
                        "upgrade ner_toolkit", directory / MANIFEST)
    return manifest


class OnnxPredictor(Tagging):
    """Tags token lists with an exported model. Output tags are in the training data's scheme."""

    def __init__(self, directory: Union[str, os.PathLike], batch_size: int = 64, graph: Optional[str] = None,
                 trust_remote_code: bool = False, word_tokenizer: Optional[str] = None, device: str = "cpu",
                 threads: Optional[int] = None) -> None:
        require("export", "OnnxPredictor", "onnxruntime")
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
        self.vocab = (Vocab.load(d / "word_vocab.txt", bool(manifest["lowercase"]), d / "word_vocab_pretrained.txt")
                      if manifest.get("fusion", "concat") != "none" else None)
        self.chars = CharVocab.load(d / "char_vocab.json") if manifest.get("chars") else None
        c = manifest["collator"]
        self.aligner = SubwordAligner(tokenizer, int(c["max_pieces_per_word"]), int(c["unk_id"]))
        self.collator = Collator(int(c["cls_id"]), int(c["sep_id"]), int(c["pad_id"]), int(c["max_length"]),
                                 int(c["stride"]), str(c["pooling"]))
        self.context = int(manifest.get("context", 0))
        self.token_column = self.config.data.token_column
        self.label_column = self.config.data.label_column
        chosen = word_tokenizer or self.config.data.word_tokenizer
        check_tokenizer(chosen)
        self.word_tokenizer = (detect_tokenizer(self.vocab.words[2:] if self.vocab is not None else [])
                               if chosen == "auto" else chosen)
        self.batch_size = batch_size
        crf = np.load(d / CRF_FILE)
        allowed = (crf["start_allowed"], crf["end_allowed"], crf["transitions_allowed"]) \
            if bool(crf["constrained"]) else None
        self.crf = numpy_crf.CRFParams.from_arrays(crf["start"], crf["end"], crf["transitions"], allowed)
        self.continues = np.array(segment_continues(self.labels.labels, self.labels.tag_scheme), dtype=bool)
        self.temperature = read_temperature(d)  # calibration.json, copied from the model directory
        graphs = manifest.get("graphs", {"fp32": GRAPH})
        self.graph = graph or ("int8" if manifest.get("graph") == GRAPH_INT8 else "fp32")
        if self.graph not in graphs:
            raise UserError(f"this export has no {self.graph} graph (it has: {', '.join(graphs)}); "
                            f"export with --quantize {self.graph}" if self.graph == "int8" else
                            f"this export has no {self.graph} graph", d)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        kind, index = parse_device(device, "--device")
        if kind not in ("cpu", "cuda"):
            raise UserError(f"unknown device {device!r} for an ONNX export: cpu | cuda | cuda:N", "--device")
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)",
                                "--device")
            providers = [("CUDAExecutionProvider", {"device_id": index or 0}), "CPUExecutionProvider"]
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
    def _encode(self, sentences: list[Sequence[str]], documents: Optional[list[int]]) -> Sequence[Encoded]:
        return encode_sentences(self.aligner, self.vocab, sentences, chars=self.chars, documents=documents,
                                context=self.context)

    def _run(self, encoded: Sequence[Encoded], nbest: int, scores: bool) -> Iterator[tuple[Encoded, Prediction]]:
        for items in bucketed_batches(encoded, self.batch_size, shuffle=False):
            yield from zip(items, self._batch(self.collator(items), items, nbest, scores))

    def emissions(self, batch: Batch[np.ndarray]) -> np.ndarray:
        """The graph's (B, T, K) float32 scores for one collated batch."""
        return self.session.run(None, {k: v for k, v in batch_inputs(batch).items() if k in self._inputs})[0]

    def _batch(self, batch: Batch[np.ndarray], items: Sequence[Encoded], nbest: int,
               scores: bool) -> list[Prediction]:
        em = self.emissions(batch)
        mask = batch.mask
        if nbest > 1:
            k_paths, k_scores = numpy_crf.nbest(em, mask, self.crf, nbest)
            paths = k_paths[:, 0]
        else:
            paths = numpy_crf.viterbi(em, mask, self.crf)[0]
        host = {"paths": paths.tolist()}
        if nbest > 1:
            host.update(k_paths=k_paths.tolist(), k_scores=k_scores.tolist())
        if scores:  # confidences under the model directory's calibration temperature (calibration.json)
            t = self.temperature
            crf, scaled_em = self.crf.scaled(t), em / np.float32(t) if t != 1.0 else em
            marg = numpy_crf.marginals(scaled_em, mask, crf)
            _, span_start, log_p = numpy_crf.span_log_probs(scaled_em, mask, crf, paths, self.continues)
            host.update(token_p=np.take_along_axis(marg, paths[:, :, None], 2)[:, :, 0].astype(np.float32).tolist(),
                        span_start=span_start.tolist(), span_p=np.exp(log_p).astype(np.float32).tolist())
        return to_predictions(items, host, self.labels, nbest, scores)
