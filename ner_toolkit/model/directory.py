"""The model directory: everything needed to predict, loadable with no network and no unpickling.

    config.yaml          the resolved experiment config
    labels.json          internal labels (CRF order), the internal scheme and the scheme written on output
    model.safetensors    all weights, encoder included; its header records sha256 digests of the labels (in
                         CRF order) and of config.yaml's model section, checked on load (directories saved
                         before the digests load unchecked)
    encoder/config.json  the encoder's HF config (architecture only)
    config.json          a marker, not an encoder config: its ``model_type`` names ner_toolkit, so that
                         ``transformers.pipeline(model=DIR)`` / ``AutoModel.from_pretrained(DIR)`` fail with a
                         message that says so instead of building a transformers model with random weights
    tokenizer.json, tokenizer_config.json, ...   the tokenizer, as saved by transformers
    word_vocab.txt       the word vocabulary, one word per line (id = line number - 1)
    word_vocab_pretrained.txt   words only the vectors file had (ids continue word_vocab.txt's; their
                         float16 vectors are ``fusion.pretrained`` in the weights); only with such words
    char_vocab.json      the character vocabulary (only with model.chars)
    metrics.json         dev/test scores of the saved weights
    README.md            the model card (card.py), rewritten with metrics.json

Directories saved before ``encoder/`` existed keep the encoder's config in the top-level config.json; they
load as they are. ``resolve_model_dir`` also takes a Hugging Face Hub repo id (``org/name[@revision]``),
resolved through the local HF cache (hub.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..atomic import atomic_directory, atomic_write
from ..config import Config, from_dict, save_config, to_dict
from ..schema import parse_yaml
from ..data.labels import LabelInfo
from ..data.vocab import CharVocab, Vocab
from ..errors import UserError
from . import directory_checks as checks
from . import hub
from .card import CARD, build_card
from .encoder import encoder_from_config_dir
from .tagger import Tagger

CONFIG, LABELS, WEIGHTS, ENCODER_CONFIG, VOCAB, METRICS, CHARS = (
    "config.yaml", "labels.json", "model.safetensors", "encoder/config.json", "word_vocab.txt", "metrics.json",
    "char_vocab.json")
PRETRAINED_VOCAB = "word_vocab_pretrained.txt"
ENCODER_DIR = "encoder"
MARKER = "config.json"  # the top level: the marker now, the encoder's config in directories saved before encoder/
LEGACY_ENCODER_CONFIG = MARKER
REQUIRED = (CONFIG, LABELS, WEIGHTS, VOCAB)
# The marker's model_type is all transformers shows when it refuses the directory, so it says what to do.
MARKER_MODEL_TYPE = ("ner_toolkit: not a transformers model (a BiLSTM-CRF tagger); load it with ner_toolkit: "
                     "Predictor.load(DIR) or predict.py --model DIR")
MARKER_CONTENT = {"model_type": MARKER_MODEL_TYPE, "library_name": "ner_toolkit",
                  "ner_toolkit": {"encoder_config": ENCODER_CONFIG, "model_card": CARD,
                                  "load": "from ner_toolkit.predict import Predictor; Predictor.load(DIR)"}}


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
               tokenizer: Any, vocab: Optional[Vocab], metrics: dict, chars: Optional[CharVocab] = None,
               training: Optional[dict] = None) -> None:
    """Write the whole directory next to ``directory`` and swap it in (never a half-written model).

    ``training``: the run's provenance for the model card (``card.training_info``: command line, data files).
    """
    with atomic_directory(directory) as tmp:
        save_config(config, tmp / CONFIG)
        (tmp / LABELS).write_text(json.dumps(labels.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()}
        # The config as load_model will read it back: the digest is of the file, not of this object.
        raw, _ = parse_yaml((tmp / CONFIG).read_text(encoding="utf-8"), str(tmp / CONFIG))
        digests = {checks.LABELS_DIGEST: checks.labels_digest(labels.labels, labels.tag_scheme),
                   checks.CONFIG_DIGEST: checks.model_config_digest(raw)}
        save_weights(state, tmp / WEIGHTS, {"format": "pt", **digests})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp / WEIGHTS, 0o666 & ~umask)  # safetensors writes 0600; the rest of the directory is shared
        tagger.encoder.model.config.save_pretrained(str(tmp / ENCODER_DIR))
        tokenizer.save_pretrained(str(tmp))
        # After the tokenizer: save_pretrained must not leave an encoder config at the top level.
        (tmp / MARKER).write_text(json.dumps(MARKER_CONTENT, indent=2) + "\n", encoding="utf-8")
        (vocab or Vocab(["<pad>", "<unk>"])).save(tmp / VOCAB, tmp / PRETRAINED_VOCAB)
        (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if chars is not None:
            chars.save(tmp / CHARS)
        (tmp / CARD).write_text(build_card(to_dict(config), labels.to_json(), metrics, training, str(directory)),
                                encoding="utf-8")


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file whose header lists ``metadata`` in sorted order: safetensors writes it from a hash
    map, in an order that changes from process to process, and a model directory's bytes must not (a resumed
    run's weights equal the uninterrupted run's bit for bit)."""
    from safetensors.torch import save

    data = save(state, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])  # the tensors' entries keep the writer's (sorted) order
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(text) <= size, "a reordered header cannot be longer"
    with open(path, "wb") as fh:
        fh.write(data[:8])
        fh.write(text.ljust(size))  # safetensors pads its header with spaces too
        fh.write(memoryview(data)[8 + size:])


def write_metrics(directory: Union[str, os.PathLike], metrics: dict, training: Optional[dict] = None) -> None:
    """Replace metrics.json, then the model card from it (each file written atomically).

    ``training``: the provenance the card shows (as given to ``save_model``); None leaves it out.
    """
    directory = Path(directory)
    with atomic_write(directory / METRICS) as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    write_card(directory, metrics, training)


def write_card(directory: Union[str, os.PathLike], metrics: Optional[dict] = None,
               training: Optional[dict] = None) -> None:
    """(Re)write README.md from the directory's own config.yaml and labels.json and ``metrics``
    (default: its metrics.json)."""
    directory = Path(directory)
    raw, _ = parse_yaml((directory / CONFIG).read_text(encoding="utf-8"), str(directory / CONFIG))
    labels = checks.read_json_object(directory / LABELS)
    if metrics is None:
        metrics = checks.read_json_object(directory / METRICS) if (directory / METRICS).exists() else {}
    text = build_card(raw if isinstance(raw, dict) else {}, labels, metrics, training, str(directory))
    with atomic_write(directory / CARD) as fh:
        fh.write(text)


def resolve_model_dir(path: Union[str, os.PathLike]) -> Path:
    """A model directory, a training output directory holding one in ``model/``, or a Hugging Face Hub repo id
    (``org/name`` or ``org/name@revision``, a path that does not exist) resolved through the local HF cache."""
    p = Path(path)
    if not p.is_dir():
        name = os.fspath(path)
        if p.exists() or not hub.looks_like_repo_id(name):
            raise UserError("model directory not found; pass the directory written by train.py (or a Hub repo "
                            "id org/name in the local HF cache)", p)
        p = hub.resolve(name)
    if not (p / LABELS).exists() and (p / "model" / LABELS).exists():
        return p / "model"
    return p


def encoder_config_path(directory: Path) -> Path:
    """Where ``directory`` keeps the encoder's config.json: ``encoder/config.json``, or in a directory saved
    before ``encoder/`` existed, the top-level config.json. A top-level config.json next to ``encoder/`` must
    be the marker (a damaged or foreign one is named, never ignored)."""
    new, top = directory / ENCODER_CONFIG, directory / MARKER
    if new.is_file():
        if top.exists() and not checks.is_marker(checks.read_json_object(top)):
            raise UserError("holds an encoder config, but this directory keeps it in encoder/config.json; the "
                            "directory is mixed: restore it from its source or train again", top)
        return new
    if top.is_file() and not checks.is_marker(checks.read_json_object(top)):
        return top  # the layout before encoder/: the encoder's config at the top level
    raise UserError("missing; the model directory is incomplete, copy it whole or re-train", new)


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a model directory: every file checked before use, safetensors weights only, no network, no pickle.

    ``trust_remote_code`` is the caller's decision (the user's); the directory's own config.yaml value is
    never used here, so a received directory cannot switch custom code on for itself.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_model_dir(path)
    # Before any file is read: nothing may lead outside the directory (or its HF cache repo: blobs/).
    checks.check_links(directory, hub.cache_repo_root(directory) or directory, (ENCODER_DIR,))
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
    encoder_path = encoder_config_path(directory)
    encoder_config = checks.read_json_object(encoder_path)
    checks.check_encoder_config(encoder_config, encoder_path, trust_remote_code)
    checks.check_tokenizer_files(directory, trust_remote_code)
    try:
        from transformers import AutoTokenizer

        hf_encoder = encoder_from_config_dir(str(encoder_path.parent), trust_remote_code)
        # The encoder's config given: transformers never reads the top-level marker as a model config.
        tokenizer = AutoTokenizer.from_pretrained(str(directory), config=hf_encoder.config,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a received config.json the checks let through
        raise UserError(f"cannot rebuild the encoder or tokenizer: {str(exc).splitlines()[0]}", directory) from None
    checks.check_tokenizer(tokenizer, getattr(hf_encoder.config, "vocab_size", None), directory)
    vocab = (Vocab.load(directory / VOCAB, config.model.words.lowercase, directory / PRETRAINED_VOCAB)
             if config.model.fusion != "none" else None)
    chars = None
    if uses_chars(config):
        chars = CharVocab(*checks.check_char_vocab(checks.read_json_object(directory / CHARS), directory / CHARS))
    tagger = Tagger(config.model, hf_encoder, len(labels.labels), vocab.trained if vocab else 2, constraints,
                    num_chars=len(chars) if chars else 0, pretrained_rows=len(vocab) - vocab.trained if vocab else 0)
    expected = tagger.state_dict()
    # The header first: a mismatch is reported before any tensor is read.
    shapes, metadata = checks.weight_header(directory / WEIGHTS)
    checks.compare_weights(shapes, {k: list(v.shape) for k, v in expected.items()}, directory / WEIGHTS,
                           encoder_path.relative_to(directory).as_posix())
    # The shapes fit; the digests tell whether labels.json and config.yaml are the ones saved with the weights.
    checks.check_digests(metadata, labels.labels, labels.tag_scheme, raw, directory, WEIGHTS)
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

