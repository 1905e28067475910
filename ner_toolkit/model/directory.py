"""The model directory: everything needed to predict, loadable with no network and no unpickling.

    config.yaml         the resolved experiment config
    labels.json         internal labels (CRF order), the internal scheme and the scheme written on output
    model.safetensors   all weights, encoder included
    config.json         the encoder's HF config (architecture only)
    tokenizer.json, tokenizer_config.json, ...   the tokenizer, as saved by transformers
    word_vocab.txt      the word vocabulary, one word per line (id = line number - 1)
    char_vocab.json     the character vocabulary (only with model.chars)
    metrics.json        dev/test scores of the saved weights
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..atomic import atomic_directory, atomic_write
from ..config import Config, from_dict, save_config
from ..config_checks import parse_yaml
from ..data.schemes import allowed_transitions
from ..data.vocab import CharVocab, Vocab
from ..errors import UserError
from . import directory_checks as checks
from .encoder import encoder_from_config_dir
from .tagger import Tagger

CONFIG, LABELS, WEIGHTS, ENCODER_CONFIG, VOCAB, METRICS, CHARS = (
    "config.yaml", "labels.json", "model.safetensors", "config.json", "word_vocab.txt", "metrics.json", "char_vocab.json")
REQUIRED = (CONFIG, LABELS, WEIGHTS, ENCODER_CONFIG, VOCAB)


@dataclass
class LabelInfo:
    labels: list[str]      # internal labels, index = CRF tag id
    tag_scheme: str        # the scheme of `labels` (BIO or BIOES)
    output_scheme: str     # the scheme of the training files, used for predictions

    @property
    def types(self) -> set[str]:
        return {label.split("-", 1)[1] for label in self.labels if label != "O"}

    def constraints(self) -> tuple[list[bool], list[bool], list[list[bool]]]:
        return allowed_transitions(self.labels, self.tag_scheme)


@dataclass
class LoadedModel:
    tagger: Tagger
    config: Config
    labels: LabelInfo
    tokenizer: Any
    vocab: Optional[Vocab]
    directory: Path
    chars: Optional[CharVocab] = None


def save_model(directory: Union[str, os.PathLike], tagger: Tagger, config: Config, labels: LabelInfo,
               tokenizer: Any, vocab: Optional[Vocab], metrics: dict, chars: Optional[CharVocab] = None) -> None:
    """Write the whole directory next to ``directory`` and swap it in (never a half-written model)."""
    from safetensors.torch import save_file

    with atomic_directory(directory) as tmp:
        save_config(config, tmp / CONFIG)
        (tmp / LABELS).write_text(json.dumps(asdict(labels), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp / WEIGHTS, 0o666 & ~umask)  # safetensors writes 0600; the rest of the directory is shared
        tagger.encoder.model.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (vocab or Vocab(["<pad>", "<unk>"])).save(tmp / VOCAB)
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if chars is not None:
            chars.save(tmp / CHARS)


def write_metrics(directory: Union[str, os.PathLike], metrics: dict) -> None:
    with atomic_write(Path(directory) / METRICS) as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")


def resolve_model_dir(path: Union[str, os.PathLike]) -> Path:
    """A model directory, or a training output directory holding one in ``model/``."""
    p = Path(path)
    if not p.is_dir():
        raise UserError("model directory not found; pass the directory written by train.py", p)
    if not (p / LABELS).exists() and (p / "model" / LABELS).exists():
        return p / "model"
    return p


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a model directory: every file checked before use, safetensors weights only, no network, no pickle.

    ``trust_remote_code`` is the caller's decision (the user's); the directory's own config.yaml value is
    never used here, so a received directory cannot switch custom code on for itself.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_model_dir(path)
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise UserError(f"missing {name}; the model directory is incomplete, copy it whole or re-train", directory / name)
    try:
        text = (directory / CONFIG).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupted config: {exc}", directory / CONFIG) from None
    raw, _ = parse_yaml(text, str(directory / CONFIG))  # bounded: a received file may hold an alias bomb
    if not isinstance(raw, dict):
        raise UserError("corrupted config: not a mapping", directory / CONFIG)
    config = from_dict(raw, str(directory / CONFIG))
    labels = LabelInfo(*checks.check_labels(checks.read_json_object(directory / LABELS), directory / LABELS))
    try:
        constraints = labels.constraints()
    except ValueError as exc:
        raise UserError(f"corrupted labels file: {exc}", directory / LABELS) from None
    encoder_config = checks.read_json_object(directory / ENCODER_CONFIG)
    checks.check_encoder_config(encoder_config, directory / ENCODER_CONFIG, trust_remote_code)
    checks.check_tokenizer_files(directory, trust_remote_code)
    try:
        from transformers import AutoTokenizer

        hf_encoder = encoder_from_config_dir(str(directory), trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a received config.json the checks let through
        raise UserError(f"cannot rebuild the encoder or tokenizer: {str(exc).splitlines()[0]}", directory) from None
    checks.check_tokenizer(tokenizer, getattr(hf_encoder.config, "vocab_size", None), directory)
    vocab = Vocab.load(directory / VOCAB, config.model.words.lowercase) if config.model.fusion != "none" else None
    chars = None
    if uses_chars(config):
        chars = CharVocab(*checks.check_char_vocab(checks.read_json_object(directory / CHARS), directory / CHARS))
    tagger = Tagger(config.model, hf_encoder, len(labels.labels), len(vocab) if vocab else 2, constraints,
                    num_chars=len(chars) if chars else 0)
    expected = tagger.state_dict()
    # The header first: a mismatch is reported before any tensor is read.
    checks.compare_weights(checks.weight_shapes(directory / WEIGHTS),
                           {k: list(v.shape) for k, v in expected.items()}, directory / WEIGHTS)
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"corrupted weights file: {exc}", directory / WEIGHTS) from None
    tagger.load_state_dict(state, strict=True)
    tagger.to(device).eval()
    return LoadedModel(tagger, config, labels, tokenizer, vocab, directory, chars)


def uses_chars(config: Config) -> bool:
    """Character CNN features are part of the model (they join the concat/add fusion)."""
    return config.model.chars.enabled and config.model.fusion != "none"

