"""The pretraining config (``ner-pretrain train --config FILE``): a typed schema on the public machinery of
``ner_toolkit.schema`` (fields with help texts, ranges and choices, YAML with line numbers, ``--set``).

Every range, choice and cross-field check of a pretraining key lives here, so the trainer never re-validates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Union

from .. import schema
from ..model.modes import PRECISIONS
from ..schema import MAX_COUNT, MAX_SEED, MAX_SIZE, MAX_THREADS, NON_NEGATIVE, POSITIVE, RATE, Here, Range, field, size

OPEN_RATE = Range(0.0, 1.0, low_open=True, high_open=True)
UNIT = Range(0.0, 1.0)
TEXT_FORMATS = ("auto", "text", "conll")
_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")  # the pretraining loop has no fp16 loss scaling
REFERENCE = "configs/pretrain_sample.yaml"


def _paths(value: Any) -> list[str]:
    """``data.files``: one path or a list of paths (any characters: a path may hold spaces, a tag name not)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a path or a non-empty list of paths")
    return list(value)


@dataclass
class PretrainData:
    files: Optional[list[str]] = field(None, "raw text files (one sentence per line, a blank line between documents) or CoNLL files (their token column); required", convert=_paths)
    format: str = field("auto", "text | conll | auto (conll when a file starts with -DOCSTART-, or its first 200 non-blank lines, at least 3, all have the same number of columns, at least 2, and their last column holds tags (O, B-PER, ?); uniform lines whose last words are not tags are refused: give the format; each file's format is reported)", choices=TEXT_FORMATS)
    token_column: int = field(0, "CoNLL files: index of the token column (negative counts from the end)")
    heldout: float = field(0.05, "fraction of the documents held out for the MLM/SOP metrics (at least one document when > 0; 0 = no held-out metrics)", RATE)
    max_seq_length: int = field(128, "subwords per pair, [CLS] and two [SEP] included", size(MAX_SIZE, 8))
    short_seq_prob: float = field(0.1, "chance that a pair aims at a random shorter length (as BERT/ALBERT, so short inputs are seen too)", UNIT)


@dataclass
class MaskingConfig:
    probability: float = field(0.15, "fraction of each pair's subwords chosen for prediction", OPEN_RATE)
    mask: float = field(0.8, "of the chosen subwords: fraction replaced by [MASK]", UNIT)
    random: float = field(0.1, "of the chosen subwords: fraction replaced by a random regular subword (the rest is kept); mask + random <= 1", UNIT)
    max_ngram: int = field(3, "chosen spans are n-grams of 1..max_ngram words, p(n) proportional to 1/n (ALBERT)", size(16))
    whole_words: bool = field(True, "choose whole words (subwords after the tokenizer's word-start marker belong to the word before); false = every subword is a word")
    max_predictions: Optional[int] = field(None, "at most this many chosen subwords per pair (null = no cap beyond probability)", size(MAX_SIZE))

    def check(self, here: Here) -> None:
        if self.mask + self.random > 1.0 + 1e-9:
            raise here.error(f"{here.key('mask')} + {here.key('random')} must be at most 1 (the rest is kept), got "
                             f"{self.mask} + {self.random}", "random", "mask")


@dataclass
class PretrainEncoder:
    name_or_path: Optional[str] = field(None, "an ALBERT checkpoint directory (or hub id) to continue pretraining from (domain-adaptive pretraining)")
    scratch: Optional[dict] = field(None, "inline ALBERT config (AlbertConfig keys) for a randomly initialised model; needs `tokenizer`")
    tokenizer: Optional[str] = field(None, "tokenizer directory or spiece.model (e.g. the output of `ner-pretrain tokenizer`, or builtin:albert-base-v2); default: the checkpoint's own")

    def check(self, here: Here) -> None:
        if (self.name_or_path is None) == (self.scratch is None):
            raise here.error(f"set exactly one of {here.key('name_or_path')} (continue from a checkpoint) and "
                             f"{here.key('scratch')} (an inline ALBERT config, with {here.key('tokenizer')})",
                             "name_or_path", "scratch")
        if self.scratch is not None and not self.tokenizer:
            raise here.error(f"{here.key('scratch')} needs {here.key('tokenizer')} (a `ner-pretrain tokenizer` "
                             "directory or builtin:albert-base-v2)", "scratch", "tokenizer")


@dataclass
class PretrainModel:
    encoder: PretrainEncoder = field(PretrainEncoder(), "the ALBERT model (AlbertForPreTraining: MLM and SOP heads)")


@dataclass
class PretrainTraining:
    steps: Optional[int] = field(None, "optimizer steps of the run (null = `epochs` passes over the pairs)", size(MAX_COUNT))
    epochs: int = field(1, "passes over the training pairs when `steps` is null", size(MAX_COUNT))
    batch_size: int = field(32, "pairs per batch (ignored when batch_tokens is set)", size(MAX_COUNT))
    batch_tokens: Optional[int] = field(None, "subwords per batch (padding included), length-bucketed; null = use batch_size", size(MAX_COUNT))
    accumulate: int = field(1, "batches whose gradients are summed into one optimizer step", size(MAX_COUNT))
    lr: float = field(5e-4, "peak AdamW learning rate", POSITIVE)
    warmup: float = field(0.1, "fraction of all steps with a linear warmup; then linear decay to 0", RATE)
    weight_decay: float = field(0.01, "AdamW weight decay (not on biases and LayerNorm)", NON_NEGATIVE)
    max_grad_norm: float = field(1.0, "gradient clipping norm (0 = off)", NON_NEGATIVE)
    precision: str = field("fp32", "fp32 | bf16 (CPU or GPU autocast)", choices=_PRECISIONS)
    seed: int = field(42, "seed of the pairs, the held-out split, the masking, the data order and the initialisation", size(MAX_SEED, 0))
    eval_every: int = field(100, "optimizer steps between held-out evaluations (a metrics.jsonl line each; also at the end; 0 = at the end only)", size(MAX_COUNT, 0))
    eval_batch_size: int = field(64, "pairs per held-out batch", size(MAX_COUNT))
    checkpoint_every: int = field(500, "optimizer steps between checkpoints in OUTPUT_DIR/checkpoints (also at the end; 0 = at the end only)", size(MAX_COUNT, 0))
    keep_checkpoints: int = field(2, "newest checkpoints kept", size(MAX_COUNT))
    device: str = field("auto", "auto | cpu | cuda | cuda:N")
    num_threads: Optional[int] = field(None, "CPU threads (null = the cores not busy with other processes at the start, at least 1; docs/threads.md)", size(MAX_THREADS))
    progress: bool = field(True, "show a tqdm progress bar (on a terminal)")


@dataclass
class PretrainConfig:
    output_dir: str = field("runs/pretrain", "directory that receives encoder/ (the HF model + tokenizer), metrics.jsonl, the curves and checkpoints")
    data: PretrainData = field(PretrainData(), "the raw text")
    masking: MaskingConfig = field(MaskingConfig(), "masked language modelling (ALBERT's n-gram masking)")
    model: PretrainModel = field(PretrainModel(), "the model")
    training: PretrainTraining = field(PretrainTraining(), "the optimisation")


def load_pretrain_config(path: Optional[Union[str, os.PathLike]] = None, overrides: tuple[str, ...] = ()) -> PretrainConfig:
    """Read ``path`` (YAML), apply ``--set`` overrides, validate into a ``PretrainConfig``."""
    return schema.load(PretrainConfig, path, overrides, reference=REFERENCE, example="training: {steps: 100}")


def to_dict(config: PretrainConfig) -> dict:
    return schema.to_dict(config)


def save_pretrain_config(config: PretrainConfig, path: Union[str, os.PathLike]) -> None:
    schema.save(config, path)


def reference_yaml() -> str:
    """Every pretraining key with its default, help text and allowed range (configs/pretrain_reference.yaml)."""
    return schema.reference_yaml(PretrainConfig, [
        "# ner-pretrain train reference config: every key with its default. Generated by",
        "#   python -m ner_toolkit.pretraining.config > configs/pretrain_reference.yaml"])


if __name__ == "__main__":
    print(reference_yaml(), end="")
