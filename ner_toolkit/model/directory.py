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
from ..data.schemes import allowed_transitions
from ..data.vocab import CharVocab, Vocab
from ..errors import UserError
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


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Load a model directory: safetensors weights only, no network, no pickle."""
    import yaml
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_model_dir(path)
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise UserError(f"missing {name}; the model directory is incomplete, copy it whole or re-train", directory / name)
    try:
        raw = yaml.safe_load((directory / CONFIG).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"corrupted config: {exc}", directory / CONFIG) from None
    if not isinstance(raw, dict):
        raise UserError("corrupted config: not a mapping", directory / CONFIG)
    config = from_dict(raw, str(directory / CONFIG))
    try:
        labels = LabelInfo(**json.loads((directory / LABELS).read_text(encoding="utf-8")))
        constraints = labels.constraints()
    except (ValueError, TypeError) as exc:
        raise UserError(f"corrupted labels file: {exc}", directory / LABELS) from None
    try:
        from transformers import AutoTokenizer

        hf_encoder = encoder_from_config_dir(str(directory), config.model.encoder.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=config.model.encoder.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot rebuild the encoder or tokenizer: {str(exc).splitlines()[0]}", directory) from None
    vocab = Vocab.load(directory / VOCAB, config.model.words.lowercase) if config.model.fusion != "none" else None
    chars = CharVocab.load(directory / CHARS) if uses_chars(config) else None
    tagger = Tagger(config.model, hf_encoder, len(labels.labels), len(vocab) if vocab else 2, constraints,
                    num_chars=len(chars) if chars else 0)
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"corrupted weights file: {exc}", directory / WEIGHTS) from None
    expected = tagger.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                           if keys)
        raise UserError(f"weights do not match config.yaml/labels.json ({detail}); the directory is corrupted or mixed",
                        directory / WEIGHTS)
    tagger.load_state_dict(state, strict=True)
    tagger.to(device).eval()
    return LoadedModel(tagger, config, labels, tokenizer, vocab, directory, chars)


def uses_chars(config: Config) -> bool:
    """Character CNN features are part of the model (they join the concat/add fusion)."""
    return config.model.chars.enabled and config.model.fusion != "none"

