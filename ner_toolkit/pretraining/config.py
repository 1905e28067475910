"""The pretraining config (``ner-pretrain train --config FILE``): a typed schema on the machinery of
``ner_toolkit/config.py`` (``_f`` fields with help texts and ranges, YAML with line numbers, ``--set``).

Every range and choice check of a pretraining key lives here, so the trainer never re-validates.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import yaml

from ..config import _build, _f, _hints, _Where, all_keys, read_raw
from ..config_checks import MAX_COUNT, MAX_SEED, MAX_SIZE, MAX_THREADS, NON_NEGATIVE, POSITIVE, RATE, Range, size
from ..errors import UserError

OPEN_RATE = Range(0.0, 1.0, low_open=True, high_open=True)
UNIT = Range(0.0, 1.0)


@dataclass
class PretrainData:
    files: Optional[list[str]] = _f(None, "raw text files (one sentence per line, a blank line between documents) or CoNLL files (their token column); required")
    format: Literal["auto", "text", "conll"] = _f("auto", "text | conll | auto (conll when a file starts with -DOCSTART-, or its first 200 non-blank lines, at least 3, all have the same number of columns, at least 2, and their last column holds tags (O, B-PER, ?); uniform lines whose last words are not tags are refused: give the format; each file's format is reported)")
    token_column: int = _f(0, "CoNLL files: index of the token column (negative counts from the end)")
    heldout: float = _f(0.05, "fraction of the documents held out for the MLM/SOP metrics (at least one document when > 0; 0 = no held-out metrics)", RATE)
    max_seq_length: int = _f(128, "subwords per pair, [CLS] and two [SEP] included", size(MAX_SIZE, 8))
    short_seq_prob: float = _f(0.1, "chance that a pair aims at a random shorter length (as BERT/ALBERT, so short inputs are seen too)", UNIT)


@dataclass
class MaskingConfig:
    probability: float = _f(0.15, "fraction of each pair's subwords chosen for prediction", OPEN_RATE)
    mask: float = _f(0.8, "of the chosen subwords: fraction replaced by [MASK]", UNIT)
    random: float = _f(0.1, "of the chosen subwords: fraction replaced by a random regular subword (the rest is kept); mask + random <= 1", UNIT)
    max_ngram: int = _f(3, "chosen spans are n-grams of 1..max_ngram words, p(n) proportional to 1/n (ALBERT)", size(16))
    whole_words: bool = _f(True, "choose whole words (subwords after the tokenizer's word-start marker belong to the word before); false = every subword is a word")
    max_predictions: Optional[int] = _f(None, "at most this many chosen subwords per pair (null = no cap beyond probability)", size(MAX_SIZE))


@dataclass
class PretrainEncoder:
    name_or_path: Optional[str] = _f(None, "an ALBERT checkpoint directory (or hub id) to continue pretraining from (domain-adaptive pretraining)")
    scratch: Optional[dict] = _f(None, "inline ALBERT config (AlbertConfig keys) for a randomly initialised model; needs `tokenizer`")
    tokenizer: Optional[str] = _f(None, "tokenizer directory or spiece.model (e.g. the output of `ner-pretrain tokenizer`, or builtin:albert-base-v2); default: the checkpoint's own")


@dataclass
class PretrainModel:
    encoder: PretrainEncoder = _f(PretrainEncoder(), "the ALBERT model (AlbertForPreTraining: MLM and SOP heads)")


@dataclass
class PretrainTraining:
    steps: Optional[int] = _f(None, "optimizer steps of the run (null = `epochs` passes over the pairs)", size(MAX_COUNT))
    epochs: int = _f(1, "passes over the training pairs when `steps` is null", size(MAX_COUNT))
    batch_size: int = _f(32, "pairs per batch (ignored when batch_tokens is set)", size(MAX_COUNT))
    batch_tokens: Optional[int] = _f(None, "subwords per batch (padding included), length-bucketed; null = use batch_size", size(MAX_COUNT))
    accumulate: int = _f(1, "batches whose gradients are summed into one optimizer step", size(MAX_COUNT))
    lr: float = _f(5e-4, "peak AdamW learning rate", POSITIVE)
    warmup: float = _f(0.1, "fraction of all steps with a linear warmup; then linear decay to 0", RATE)
    weight_decay: float = _f(0.01, "AdamW weight decay (not on biases and LayerNorm)", NON_NEGATIVE)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)", NON_NEGATIVE)
    precision: Literal["fp32", "bf16"] = _f("fp32", "fp32 | bf16 (CPU or GPU autocast)")
    seed: int = _f(42, "seed of the pairs, the held-out split, the masking, the data order and the initialisation", size(MAX_SEED, 0))
    eval_every: int = _f(100, "optimizer steps between held-out evaluations (a metrics.jsonl line each; also at the end; 0 = at the end only)", size(MAX_COUNT, 0))
    eval_batch_size: int = _f(64, "pairs per held-out batch", size(MAX_COUNT))
    checkpoint_every: int = _f(500, "optimizer steps between checkpoints in OUTPUT_DIR/checkpoints (also at the end; 0 = at the end only)", size(MAX_COUNT, 0))
    keep_checkpoints: int = _f(2, "newest checkpoints kept", size(MAX_COUNT))
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    num_threads: Optional[int] = _f(None, "torch CPU threads (null = torch's default)", size(MAX_THREADS))
    progress: bool = _f(True, "show a tqdm progress bar (on a terminal)")


@dataclass
class PretrainConfig:
    output_dir: str = _f("runs/pretrain", "directory that receives encoder/ (the HF model + tokenizer), metrics.jsonl, the curves and checkpoints")
    data: PretrainData = _f(PretrainData(), "the raw text")
    masking: MaskingConfig = _f(MaskingConfig(), "masked language modelling (ALBERT's n-gram masking)")
    model: PretrainModel = _f(PretrainModel(), "the model")
    training: PretrainTraining = _f(PretrainTraining(), "the optimisation")


def _check_keys(cls: type, raw: Any, prefix: str, where: _Where, source: str) -> None:
    """Unknown keys, with the closest key of *this* schema as the hint (``config._build`` suggests train.py's)."""
    if not isinstance(raw, dict):
        return  # a type error, reported by _build with its line
    names = {f.name for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for key, value in raw.items():
        path = prefix + str(key)
        if key not in names:
            src, line = where.get(path, source)
            close = difflib.get_close_matches(path, all_keys(PretrainConfig), n=1, cutoff=0.5)
            hint = f"; did you mean `{close[0]}`?" if close else "; see configs/pretrain_sample.yaml for the keys"
            raise UserError(f"unknown config key `{path}`{hint}", src, line)
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(hints[key], value, path + ".", where, source)


def _files(value: Any, where: _Where, source: str) -> Optional[list[str]]:
    """``data.files``: one path or a list of paths (any characters; config._coerce's name lists refuse spaces)."""
    src, line = where.get("data.files", source)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"`data.files` must be a path or a non-empty list of paths, got {value!r}{where.origin('data.files')}",
                        src, line)
    return list(value)


def _check_combined(config: PretrainConfig, where: _Where, source: str) -> None:
    m = config.masking
    if m.mask + m.random > 1.0 + 1e-9:
        src, line = where.get("masking.random", source)
        raise UserError(f"`masking.mask` + `masking.random` must be at most 1 (the rest is kept), got "
                        f"{m.mask} + {m.random}", src, line)
    enc = config.model.encoder
    if (enc.name_or_path is None) == (enc.scratch is None):
        src, line = where.get("model.encoder", source)
        raise UserError("set exactly one of `model.encoder.name_or_path` (continue from a checkpoint) and "
                        "`model.encoder.scratch` (an inline ALBERT config, with `model.encoder.tokenizer`)", src, line)


def load_pretrain_config(path: Optional[Union[str, os.PathLike]] = None, overrides: tuple[str, ...] = ()) -> PretrainConfig:
    """Read ``path`` (YAML), apply ``--set`` overrides, validate into a ``PretrainConfig``."""
    raw, where, source = read_raw(path, overrides, "training: {steps: 100}")
    _check_keys(PretrainConfig, raw, "", where, source)
    data = raw.get("data")
    files = None
    if isinstance(data, dict) and "files" in data:
        data = dict(data)
        files = _files(data.pop("files"), where, source)
        raw = {**raw, "data": data}
    config = _build(PretrainConfig, raw, "", where, source)
    config.data.files = files
    _check_combined(config, where, source)
    return config


def to_dict(config: PretrainConfig) -> dict:
    return dataclasses.asdict(config)


def save_pretrain_config(config: PretrainConfig, path: Union[str, os.PathLike]) -> None:
    from ..atomic import atomic_write

    with atomic_write(path) as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False, allow_unicode=True)


def reference_yaml() -> str:
    """Every pretraining key with its default, help text and allowed range (configs/pretrain_reference.yaml)."""
    lines = ["# ner-pretrain train reference config: every key with its default. Generated by",
             "#   python -m ner_toolkit.pretraining.config > configs/pretrain_reference.yaml", ""]

    def walk(cls: type, indent: str) -> None:
        defaults = cls()
        for f in dataclasses.fields(cls):
            tp = _hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                lines.append(f"{indent}{f.name}:  # {f.metadata['help']}")
                walk(tp, indent + "  ")
                continue
            value = yaml.safe_dump(getattr(defaults, f.name), default_flow_style=True).strip()
            value = value.removesuffix("...").strip()
            allowed = f.metadata.get("range")
            bounds = f"; allowed: {allowed.describe()}" if allowed is not None else ""
            lines.append(f"{indent}{f.name}: {value}  # {f.metadata['help']}{bounds}")

    walk(PretrainConfig, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_yaml(), end="")
