"""Export a trained model directory to ONNX: the emission network as one graph, plus what decoding needs.

OUT holds::

    model.onnx          the emission network, fp32: encoder, pooling, fusion, BiLSTM, projection (and the
                        log-softmax for the softmax decoder); dynamic axes W windows, S subwords, P pool
                        entries, B sentences, T words (L characters with model.chars)
    model.int8.onnx     with --quantize int8: dynamic int8 quantisation of model.onnx (the runtime's default
                        when present; model.onnx stays, for fp32 use)
    crf.npz             CRF start/end/transition scores (float32) and the scheme's allowed masks (bool)
    export.json         format version, graph inputs, collation settings (window size, stride, pooling,
                        special ids, subwords per word), decoder, and which graph to load by default
    labels.json, config.yaml, config.json, word_vocab.txt, char_vocab.json, tokenizer files
                        copied from the model directory (everything but the weights)

Graph inputs (int64 unless said): ``input_ids``, ``attention_mask`` (W, S); per pooling map ``pool{i}_src``,
``pool{i}_dst`` (P), ``pool{i}_weight`` (P, float32; only for a weighted part, mean); ``word_ids`` (B, T);
``lengths`` (B,); ``char_ids`` (B, T, L) with model.chars. Output: ``emissions`` (B, T, K) float32 — exactly
``Tagger.crf_scores`` of the matching ``Batch``. Inputs the graph does not use are pruned by the exporter;
the runtime feeds what the session declares.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_directory
from ..data.batching import Batch, encode_sentences, make_collator
from ..data.pooling import MAX_PARTS, POOLINGS
from ..errors import UserError
from ..model.directory import WEIGHTS, load_model
from ..model.encoder import max_positions
from ..model.modes import QUANTIZATIONS
from . import CRF_FILE, FORMAT_VERSION, GRAPH, GRAPH_INT8, MANIFEST
from .graph import OUTPUT, batch_inputs, input_names

TOLERANCE = 1e-4
#: "auto" tries them in this order. The TorchScript exporter is ~20x faster, but a trace: on a model with
#: document context (and mean pooling, no LSTM) its graph differed from PyTorch by up to 0.5 in token
#: confidence on batches its checks had not covered, so it is only the fallback.
EXPORTERS = ("dynamo", "torchscript")
QUANTIZE = tuple(q for q in QUANTIZATIONS if q != "none")  # what an export can bake into its graph
_SKIP = {WEIGHTS, MANIFEST, GRAPH, GRAPH_INT8, CRF_FILE}


class EmissionNet(nn.Module):
    """``Tagger.crf_scores`` over plain tensors (the ``Batch`` fields), for tracing. The signature declares
    the most pooling maps any ``POOLINGS`` entry can have; a model uses the first ``num_pools``."""

    def __init__(self, tagger: nn.Module, num_pools: int, chars: bool) -> None:
        super().__init__()
        assert 1 <= num_pools <= MAX_PARTS, f"{num_pools} pooling maps; EmissionNet takes 1 to {MAX_PARTS}"
        self.tagger = tagger
        self.num_pools = num_pools
        self.chars = chars

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_ids: torch.Tensor,
                lengths: torch.Tensor, pool0_src: torch.Tensor, pool0_dst: torch.Tensor, pool0_weight: torch.Tensor,
                pool1_src: Optional[torch.Tensor] = None, pool1_dst: Optional[torch.Tensor] = None,
                pool1_weight: Optional[torch.Tensor] = None, pool2_src: Optional[torch.Tensor] = None,
                pool2_dst: Optional[torch.Tensor] = None, pool2_weight: Optional[torch.Tensor] = None,
                char_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        given = [(pool0_src, pool0_dst, pool0_weight), (pool1_src, pool1_dst, pool1_weight),
                 (pool2_src, pool2_dst, pool2_weight)]
        pools = given[:self.num_pools]
        mask = torch.arange(word_ids.shape[1], device=word_ids.device)[None, :] < lengths[:, None]
        batch = Batch(input_ids, attention_mask, pools, word_ids, mask, None, lengths, [],  # type: ignore[arg-type]
                      char_ids if self.chars else None)
        return self.tagger.crf_scores(batch).float()


def _dynamic_shapes(names: list[str]) -> dict:
    Dim = torch.export.Dim
    W, S, B, T = Dim("W"), Dim("S"), Dim("B"), Dim("T")
    shapes: dict[str, Any] = {"input_ids": {0: W, 1: S}, "attention_mask": {0: W, 1: S},
                              "word_ids": {0: B, 1: T}, "lengths": {0: B}}
    pool_dims: dict[str, Any] = {}
    for name in names:
        if name.startswith("pool"):
            shapes[name] = {0: pool_dims.setdefault(name[4], Dim(f"P{name[4]}"))}
    if "char_ids" in names:
        shapes["char_ids"] = {0: B, 1: T, 2: Dim("L")}
    return shapes


def example_sentences(words: list[str], content: int, seed: int = 0) -> list[list[str]]:
    """Sentences whose batch has distinct sizes > 1 on every axis (no size-1 specialisation): a
    sentence longer than a window (several windows), a middle one and a short one."""
    rng = np.random.default_rng(seed)
    pool = [w for w in words[2:200] if w.isalpha()] or ["the", "European", "Commission", "said", "Peter"]
    pick = lambda n: [pool[i] for i in rng.integers(0, len(pool), n)]  # noqa: E731
    return [pick(max(int(content * 1.3), 8)), pick(5), pick(3)]


def _fix_output_shape(path: Path) -> None:
    """Name the output's axes (B, T, K): the exporter may record sizes of the example batch."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 3:
        for dim, name in zip(dims[:2], ("B", "T")):
            dim.ClearField("dim_value")
            dim.dim_param = name
    del model.graph.value_info[:]  # re-inferred by onnxruntime; no stale example sizes
    onnx.save(model, str(path))


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Silence the exporter's and the quantiser's log lines (torchvision notes, pre-processing hints)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_graph(net: EmissionNet, example: Batch[torch.Tensor], names: list[str], path: Path, exporter: str) -> None:
    """``exporter``: "torchscript" (``torch.onnx.export(dynamo=False)``: a trace, about a second) or "dynamo"
    (``torch.export``-based: tens of seconds). A trace freezes Python-level branches on values, so its graph
    is only kept after it matches PyTorch on batches of other shapes (see :func:`export_model`)."""
    kwargs = batch_inputs(example)
    # redirect_stdout: the exporter prints progress lines.
    with warnings.catch_warnings(), _quiet_logs(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {n: {i: d.__name__ for i, d in spec.items()} for n, spec in _dynamic_shapes(names).items()}
            axes[OUTPUT] = {0: "B", 1: "T"}
            # char_ids by keyword (a trailing dict): by position it would land in pool1_src of a 1-pool model.
            args = tuple(kwargs[n] for n in names if n != "char_ids")
            args += ({"char_ids": kwargs["char_ids"]},) if "char_ids" in names else ()
            torch.onnx.export(net, args, str(path), dynamo=False, input_names=names,
                              output_names=[OUTPUT], dynamic_axes=axes, opset_version=17)
        else:
            torch.onnx.export(net, (), str(path), kwargs=kwargs, dynamo=True, output_names=[OUTPUT],
                              dynamic_shapes=_dynamic_shapes(names), optimize=True, verbose=False,
                              external_data=False)
    _fix_output_shape(path)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation (QInt8 weights) of MatMul, Gemm, LSTM and Attention nodes. onnxruntime's
    pre-processing folds the exporter's weight transposes and gate re-orderings into constants first:
    without it most MatMuls and every LSTM keep float weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folded = target.with_name(target.name + ".pre.onnx")
    try:
        with warnings.catch_warnings(), _quiet_logs():
            warnings.simplefilter("ignore")
            quant_pre_process(str(source), str(folded), skip_symbolic_shape=True)
            quantize_dynamic(str(folded), str(target), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "LSTM", "Attention"])
    finally:
        if folded.exists():
            folded.unlink()


def tokenizer_backend(directory: Path, tokenizer: Any, words: list[str]) -> str:
    """"tokenizers" when the exported tokenizer.json alone gives the model's subword ids (checked on the
    vocabulary and some tricky words), else "transformers" (the runtime then needs transformers)."""
    if not (directory / "tokenizer.json").is_file():
        return "transformers"
    from .runtime import FastTokenizer

    probe = [[w] for w in words[2:3000]] + [[w] for w in ("Müller", "naïve", "U.S.", "1,234", "--", "東京", "x" * 40)]
    call = dict(is_split_into_words=True, add_special_tokens=False)
    try:
        same = FastTokenizer(directory / "tokenizer.json")(probe, **call)["input_ids"] == tokenizer(probe, **call)["input_ids"]
    except Exception:  # noqa: BLE001 - any failure: keep the tokenizer the model was trained with
        same = False
    return "tokenizers" if same else "transformers"


def max_difference(graph: Path, net: EmissionNet, batch: Batch[torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| emission over the valid positions of ``batch``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {n: v.numpy() for n, v in batch_inputs(batch).items() if n in wanted}
    got = session.run(None, feed)[0]
    with torch.inference_mode():
        ref = net(**batch_inputs(batch)).numpy()
    mask = batch.mask.numpy()
    return float(np.abs(got - ref)[mask].max())


def check_replaceable(output: Path) -> None:
    """The export is written beside ``output`` and renamed onto it (``atomic_directory``): an existing
    directory that is a mount point cannot be renamed (EBUSY), which would fail after the whole export.
    Refused before the work instead."""
    if output.is_dir() and _is_mount_point(output):
        raise UserError("--output is a mount point, which cannot be replaced (the export is written beside it and "
                        "renamed into place); export into a new directory inside it, e.g. OUTPUT/export", output)


def _is_mount_point(path: Path) -> bool:
    if os.path.ismount(path):
        return True
    # A bind mount from the same filesystem shares its parent's device: only the mount table knows it.
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            table = fh.read()
    except OSError:
        return False
    real = os.path.realpath(path)
    unescape = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline and \ as octal escapes
    return any(len(fields) > 4 and unescape.sub(lambda m: chr(int(m.group(1), 8)), fields[4]) == real
               for fields in (line.split(" ") for line in table.splitlines()))


def export_model(model_dir: Union[str, os.PathLike], output: Union[str, os.PathLike], quantize: Optional[str] = None,
                 trust_remote_code: bool = False, exporter_choice: str = "auto") -> dict:
    """Write the export directory ``output`` atomically; returns a summary (sizes, check results).

    ``exporter_choice``: "auto" (the dynamo exporter, else the TorchScript one, whichever first gives a graph
    within :data:`TOLERANCE` of PyTorch on batches of other shapes), "dynamo" or "torchscript"."""
    if exporter_choice not in ("auto", *EXPORTERS):
        raise ValueError(f"exporter_choice must be auto, {' or '.join(EXPORTERS)}; got {exporter_choice!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}", "--quantize")
    check_replaceable(Path(output))
    model = load_model(model_dir, "cpu", trust_remote_code=trust_remote_code)
    tagger, cfg = model.tagger.eval(), model.config
    enc = cfg.model.encoder
    aligner, collator = make_collator(model.tokenizer, max_positions(tagger.encoder.model), enc)
    num_pools = POOLINGS[enc.pooling].width
    chars = model.chars is not None
    names = input_names(num_pools, chars)
    words = model.vocab.words if model.vocab is not None else []
    net = EmissionNet(tagger, num_pools, chars).eval()

    def make_batch(sentences: list[list[str]]) -> Batch[torch.Tensor]:
        # With document context the sentences are one document: windows carry their neighbours' subwords.
        items = encode_sentences(aligner, model.vocab, sentences, chars=model.chars, context=enc.context)
        return collator(items).to(torch.device("cpu"))

    example = make_batch(example_sentences(words, collator.content, seed=0))
    # A check batch of other sizes on every axis: the graph must really be dynamic.
    rng = np.random.default_rng(1)
    check_sentences = example_sentences(words, 2 * collator.content, seed=1) + [(words[2:] or ["x"])[:1]]
    check_sentences += [example_sentences(words, collator.content, seed=s)[1] for s in range(2, 6)]
    rng.shuffle(check_sentences)
    check = make_batch(check_sentences)
    # Other shapes on every axis, a batch without padding, and a wide one (W > 32 windows).
    wide = [example_sentences(words, collator.content, seed=s)[s % 3] for s in range(10, 50)]
    checks = [check, make_batch([(words[2:] or ["x"])[:2]]), make_batch(wide)]
    with atomic_directory(output) as tmp:
        diff, used, problems = float("inf"), None, []
        for exporter in EXPORTERS if exporter_choice == "auto" else (exporter_choice,):
            try:
                _export_graph(net, example, names, tmp / GRAPH, exporter)
            except Exception as exc:  # noqa: BLE001 - the exporters' many failure types: try the next one
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                problems.append(f"{exporter}: {type(exc).__name__}: {first[:300]}")
                continue
            try:
                diff = max(max_difference(tmp / GRAPH, net, b) for b in checks)
            except Exception as exc:  # noqa: BLE001 - e.g. a graph whose "dynamic" axes came out fixed
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                problems.append(f"{exporter}: the graph does not run on batches of other shapes: {first[:300]}")
                continue
            if diff <= TOLERANCE:
                used = exporter
                break
            problems.append(f"{exporter}: differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
        if used is None:
            raise UserError("cannot export this model faithfully to ONNX (" + "; ".join(problems) + ")", model.directory)
        crf = tagger.crf
        allowed = model.labels.constraints()
        np.savez(tmp / CRF_FILE, start=crf.start_transitions.detach().float().numpy(),
                 end=crf.end_transitions.detach().float().numpy(),
                 transitions=crf.transitions.detach().float().numpy(),
                 constrained=np.array(crf.constrained),
                 start_allowed=np.array(allowed[0], dtype=bool), end_allowed=np.array(allowed[1], dtype=bool),
                 transitions_allowed=np.array(allowed[2], dtype=bool))
        for item in sorted(model.directory.iterdir()):
            if item.is_file() and item.name not in _SKIP and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
            elif item.is_dir() and item.name == "encoder":  # the encoder's HF config (model/directory.py)
                shutil.copytree(item, tmp / item.name)
        backend = tokenizer_backend(tmp, model.tokenizer, words)
        diff_int8 = None
        if quantize == "int8":
            quantize_int8(tmp / GRAPH, tmp / GRAPH_INT8)
            diff_int8 = max(max_difference(tmp / GRAPH_INT8, net, b) for b in checks)
        manifest = {
            "format": "ner_toolkit-onnx",
            "version": FORMAT_VERSION,
            "graph": GRAPH_INT8 if quantize == "int8" else GRAPH,
            "graphs": {"fp32": GRAPH, **({"int8": GRAPH_INT8} if quantize == "int8" else {})},
            "inputs": names,
            "num_pools": num_pools,
            "chars": chars,
            "num_labels": len(model.labels.labels),
            "decoder": cfg.model.decoder,
            "collator": {"cls_id": collator.cls_id, "sep_id": collator.sep_id, "pad_id": collator.pad_id,
                         "max_length": collator.content + 2, "stride": collator.stride, "pooling": collator.pooling,
                         "max_pieces_per_word": aligner.max_pieces, "unk_id": aligner.unk},
            "context": enc.context,
            "tokenizer": backend,
            "exporter": used,
            "lowercase": cfg.model.words.lowercase,
            "fusion": cfg.model.fusion,
            "check": {"max_abs_diff_fp32": diff, "max_abs_diff_int8": diff_int8},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        sizes = {name: (tmp / name).stat().st_size for name in (GRAPH, GRAPH_INT8) if (tmp / name).exists()}
    return {"output": str(output), "labels": len(model.labels.labels), "sizes": sizes,
            "max_abs_diff_fp32": diff, "max_abs_diff_int8": diff_int8, "graph": manifest["graph"],
            "exporter": used}
