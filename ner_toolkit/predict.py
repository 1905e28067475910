"""Batch prediction: token lists in memory (``Predictor.predict``) and CoNLL files (streamed, order kept)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Union

import torch

from . import distributed
from .atomic import atomic_write, is_stream
from .config import EncoderConfig
from .data.batching import Batch, Collator, Encoded, SubwordAligner, bucketed_batches, encode_sentences
from .data.conll import (Passthrough, Sentence, check_text_file, document_ids, format_passthrough, format_sentence,
                         is_docstart, read_conll)
from .data.schemes import SchemeError, convert, segment_continues, tag_problem, to_spans
from .data.vocab import CharVocab, Vocab
from .errors import UserError, warn
from .formats import conll_columns, jsonl_record
from .model.directory import LabelInfo, load_model
from .model.encoder import max_positions
from .model.precision import autocast, check_precision
from .model.tagger import Tagger
from .paths import STDIO


def make_collator(tokenizer: Any, hf_model: torch.nn.Module, cfg: EncoderConfig) -> tuple[SubwordAligner, Collator]:
    """The aligner and collator for an encoder: window size from the config or the encoder's limit."""
    limit = max_positions(hf_model)
    max_length = min(cfg.max_length or limit, limit)
    if max_length < 4:
        raise UserError(f"`model.encoder.max_length` must be at least 4, got {max_length}", "config")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # A word never needs more than a window (minus [CLS]/[SEP]); capping keeps every word in one window.
    aligner = SubwordAligner(tokenizer, max(1, min(cfg.max_subwords_per_word, max_length - 2)))
    return aligner, Collator(cls_id, sep_id, pad_id, max_length, cfg.stride, cfg.pooling)


def resolve_device(name: str, source: str = "--device") -> torch.device:
    """A torch device from ``auto``/``cpu``/``cuda[:N]`` (``mps``/``xpu`` where the machine has one);
    a device this machine lacks is a user error here, not a crash at the first tensor. ``source``
    names the option in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N", source) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available; use cpu", source)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}", source)
        return device
    backend = {"mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if backend is not None and backend.is_available():
        return device
    raise UserError(f"device {name!r} is not available on this machine; use cpu"
                    f"{' or cuda' if torch.cuda.is_available() else ''}", source)


MAX_NBEST = 50  # k-best memory grows with K x tags x length per sentence; past 50 paths differ in noise only


@dataclass
class Span:
    label: str
    start: int                          # token index of the first token
    end: int                            # token index after the last token
    confidence: Optional[float] = None  # probability of this exact span under the CRF (with scores=True)


@dataclass
class Prediction:
    tags: list[str]                                   # in the training data's scheme
    spans: list[Span]                                 # filled with nbest > 1 or scores=True
    token_confidence: Optional[list[float]] = None    # marginal probability of each predicted tag
    nbest: Optional[list[tuple[list[str], float]]] = None  # (tags, path score), best first, best included


class Predictor:
    """Tags token lists with a model held in memory. Output tags are in the training data's scheme."""

    def __init__(self, tagger: Tagger, tokenizer: Any, vocab: Optional[Vocab], labels: LabelInfo,
                 encoder_cfg: EncoderConfig, device: torch.device, batch_size: int = 64, token_column: int = 0,
                 precision: str = "fp32", chars: Optional[CharVocab] = None) -> None:
        check_precision(precision, device, "--precision")
        self.chars = chars
        self.tagger, self.vocab, self.labels = tagger, vocab, labels
        self.precision = precision
        self.token_column = token_column  # where prediction inputs hold their tokens (as in training)
        self.device, self.batch_size = device, batch_size
        self.aligner, self.collator = make_collator(tokenizer, tagger.encoder.model, encoder_cfg)
        self.context = encoder_cfg.context
        self.continues = torch.tensor(segment_continues(labels.labels, labels.tag_scheme), dtype=torch.bool,
                                      device=device)

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], device: str = "cpu", batch_size: int = 64,
             precision: str = "fp32", trust_remote_code: bool = False) -> "Predictor":
        """``trust_remote_code``: the user's decision to let the directory's custom code (auto_map) run."""
        _, rank_device = distributed.init_from_env(device)  # torchrun: one process per device
        dev = resolve_device(rank_device or device)
        check_precision(precision, dev, "--precision")
        model = load_model(directory, dev, trust_remote_code=trust_remote_code)
        return cls(model.tagger, model.tokenizer, model.vocab, model.labels, model.config.model.encoder, dev, batch_size,
                   model.config.data.token_column, precision, model.chars)

    def predict(self, sentences: Sequence[Sequence[str]],
                documents: Optional[Sequence[int]] = None) -> list[list[str]]:
        """Tags for each sentence (one per token, always), in the input order."""
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


@dataclass
class FileResult:
    input: Path
    output: Optional[Path]
    sentences: int = 0
    tokens: int = 0
    gold: list[list[str]] = field(default_factory=list)
    pred: list[list[str]] = field(default_factory=list)


@dataclass
class OutputOptions:
    """What ``predict_file`` writes: ``fmt`` conll (input lines + columns) or jsonl (one object per sentence)."""

    nbest: int = 1
    scores: bool = False
    fmt: str = "conll"


def _write_chunk(out: IO[str], items: list, predictor: Predictor, result: FileResult, keep_gold: bool,
                 options: OutputOptions) -> None:
    sentences = [it for it in items if isinstance(it, Sentence)]
    scores = options.scores or options.fmt == "jsonl"
    dist = distributed.current()
    mine = dist.shard(range(len(sentences)))  # under torchrun each rank tags its share of the chunk
    local = predictor.predict_detailed([s.tokens for s in sentences], options.nbest, scores,
                                       documents=document_ids(items), only=mine)
    gathered = distributed.gather_to_main(list(zip(mine, local)))
    if gathered is None:
        return  # not rank 0: rank 0 writes the merged chunk in input order
    predictions: list[Any] = [None] * len(sentences)
    for part in gathered:
        for index, prediction in part:
            predictions[index] = prediction
    in_order = iter(predictions)  # sentences appear among the items in the order they were predicted
    for it in items:
        if isinstance(it, Passthrough):
            if options.fmt == "jsonl":
                continue
            line = it.line
            if line.split() and line.split()[0] == "-DOCSTART-":
                # conlleval needs the same column count on every non-blank line: DOCSTART gets an O too
                # (and "-" for every further column).
                extra = options.nbest - 1 + (2 if options.scores else 0)
                line = (("\t" if "\t" in line else " ")).join([line.rstrip(), "O"] + ["-"] * extra)
            out.write(format_passthrough(Passthrough(line, it.line_number)))
            continue
        prediction = next(in_order)
        if options.fmt == "jsonl":
            out.write(jsonl_record(it, prediction))
        else:
            out.write(format_sentence(it, conll_columns(prediction, options.nbest, options.scores)))
        result.sentences += 1
        result.tokens += len(it.tokens)
        if keep_gold and it.labels is not None:
            result.gold.append(it.labels)
            result.pred.append(prediction.tags)


def predict_file(predictor: Predictor, path: Path, output: Optional[Path], evaluate: bool = False,
                 chunk_sentences: int = 1024, options: Optional[OutputOptions] = None) -> FileResult:
    """Predict one CoNLL file into ``output`` (stdout when None), streaming in chunks of sentences.

    The output is written under a temporary name and renamed at the end, so an interrupted run never
    leaves a partial file behind.
    """
    options = options or OutputOptions()
    result = FileResult(path, output)
    items_iter = read_conll(path, token_column=predictor.token_column)

    def run(out: IO[str]) -> None:
        chunk: list = []
        count = 0
        for item in items_iter:
            # With document context a chunk ends only where a document does (or, to bound memory,
            # after 16 chunks' worth of one document), so that every sentence sees its neighbours.
            document_ends = is_docstart(item) or count >= 16 * chunk_sentences
            if predictor.context > 0 and count >= chunk_sentences and document_ends:
                _write_chunk(out, chunk, predictor, result, evaluate, options)
                chunk, count = [], 0
            chunk.append(item)
            if isinstance(item, Sentence):
                if evaluate and item.labels is not None:
                    for tag, line in zip(item.labels, item.line_numbers):
                        problem = tag_problem(tag)
                        if problem:
                            raise UserError(f"--evaluate needs gold tags in the last column: {problem}", path, line)
                count += 1
                if count >= chunk_sentences and predictor.context == 0:
                    _write_chunk(out, chunk, predictor, result, evaluate, options)
                    chunk, count = [], 0
        _write_chunk(out, chunk, predictor, result, evaluate, options)

    if not distributed.current().main:
        run(open(os.devnull, "w", encoding="utf-8"))  # takes part in every chunk, writes nothing
    elif output is None:
        run(sys.stdout)
    else:
        with atomic_write(output) as fh:
            run(fh)
    return result


def output_paths(inputs: Sequence[str], output: Optional[str], create: bool = True) -> list[tuple[Path, Optional[Path]]]:
    """Pair each input file with its output path; a directory input expands to its files.

    With several inputs ``output`` is a directory, created when ``create`` (otherwise only checked, so that
    a failure before any prediction leaves nothing behind).
    """
    files: list[Path] = []
    for name in inputs:
        p = Path(name)
        if name == STDIO:
            if len(inputs) > 1:
                raise UserError("- (standard input) must be the only input", name)
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not found:
                raise UserError("input directory holds no files", p)
            files.extend(found)
        elif p.is_file() or is_stream(p):
            files.append(p)
        else:
            raise UserError("input file not found; check the path", p)
    for f in files:
        check_text_file(f)  # an unreadable or binary file fails before any output is written
    several = len(files) > 1 or any(Path(n).is_dir() for n in inputs)
    if not several:
        target = Path(output) if output and output != STDIO else None
        return [(files[0], target)]
    if not output:
        raise UserError("several inputs need --output DIR (one output file per input)", inputs[0])
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("with several inputs --output must be a directory", out_dir)
    if create:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output directory ({exc.strerror}); choose another --output", out_dir) from None
    else:
        ancestor = out_dir
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"cannot create the output directory: {ancestor} is not a directory; choose another --output",
                            out_dir)
    pairs, seen = [], set()
    for f in files:
        target = out_dir / f.name
        if target in seen:
            raise UserError(f"two inputs are named {f.name}; their outputs would collide in {out_dir}", f)
        seen.add(target)
        pairs.append((f, target))
    return pairs


def warn_unseen(gold: list[list[str]], labels: LabelInfo, scheme: str, path: Any) -> None:
    """Warn (never fail) about gold entity types the model cannot predict: they count as misses.

    Gold tags that do not belong to ``scheme`` are a UserError naming ``path``.
    """
    try:
        found = {t for tags in gold for t, _, _ in to_spans(tags, scheme)}
    except SchemeError as exc:
        raise UserError(str(exc), path) from None
    missing = sorted(found - labels.types)
    if missing:
        warn(f"gold entity types never seen in training: {', '.join(missing)}; their spans count as misses", path)
