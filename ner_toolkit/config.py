"""The experiment config: a typed schema, YAML loading with line numbers, dotted overrides.

One YAML file is the whole experiment. Every key has a default and a one-line help text
(``help`` metadata); ``reference_yaml()`` renders them as the commented reference config.
Validation errors name the key path, the file line and, for typos, the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .config_checks import (MAX_COUNT, MAX_LAYERS, MAX_SEED, MAX_SIZE, MAX_THREADS, NON_NEGATIVE, POSITIVE, RATE, Range,
                            parse_yaml, size)
from .errors import UserError


def _f(default: Any, help: str, range: Optional[Range] = None) -> Any:
    """A schema field with a default, a one-line description and, for a number, its allowed range."""
    metadata = {"help": help, "range": range}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    train: Optional[str] = _f(None, "training file (CoNLL columns); required by train.py")
    dev: Optional[str] = _f(None, "dev file scored after each epoch for early stopping and model selection")
    test: Optional[str] = _f(None, "test file scored once with the best model at the end of training")
    token_column: int = _f(0, "index of the token column (negative counts from the end)")
    label_column: int = _f(-1, "index of the gold label column (negative counts from the end)")
    input_scheme: str = _f("auto", "tag scheme of the files: auto | IOB1 | BIO | BIOES | BMES (predictions are written in it)")
    unknown_tag: str = _f("?", "a training label that means \"not annotated here\" (partial annotation; an empty label column reads the same): the CRF's loss sums over every legal tag there; not allowed in dev/test")
    tag_scheme: str = _f("BIOES", "scheme used inside the model and its CRF constraints: BIO | BIOES")
    format: Literal["auto", "conll", "jsonl"] = _f("auto", "format of train/dev/test: conll (token columns) | jsonl (texts with character-offset entities: this toolkit's, Doccano, Label Studio, Prodigy; or HF-datasets rows of tokens + ner_tags) | auto (jsonl for .jsonl/.json/.ndjson files, else conll)")
    word_tokenizer: Literal["auto", "whitespace", "conll", "chars"] = _f("auto", "how raw text is split into words, for jsonl texts and for prediction from raw text (saved with the model): whitespace | conll (Penn Treebank rules, as CoNLL-2003 is tokenised) | chars (every character; Chinese and other text without spaces) | auto (chars when most letters of the training data are CJK/Thai/kana, else conll)")
    misaligned: Literal["expand", "skip", "error"] = _f("expand", "a jsonl entity whose offsets fall inside a word: expand (widen it to whole words) | skip (leave it out) | error; every case is counted and reported with its line")
    tag_names: Optional[list[str]] = _f(None, "names of integer ner_tags ids in HF-datasets rows (id i means tag_names[i]), e.g. [O, B-PER, I-PER, ...]")


@dataclass
class EncoderConfig:
    name_or_path: Optional[str] = _f(None, "HuggingFace model id or local directory (AutoModel + AutoTokenizer)")
    scratch: Optional[dict] = _f(None, "inline ALBERT config (AlbertConfig keys) for a randomly initialised encoder; needs `tokenizer`")
    tokenizer: Optional[str] = _f(None, "tokenizer directory or file (spiece.model, tokenizer.json, vocab.txt) for a scratch encoder")
    freeze: bool = _f(False, "keep the encoder weights fixed (no gradients)")
    pooling: Literal["first", "last", "mean", "first_last"] = _f("first", "subword-to-word pooling: first | last | mean | first_last")
    layers: Optional[list[int]] = _f(None, "encoder layers to mix with learned softmax weights, e.g. [-1, -2, -3, -4] (0 = embeddings); null = last layer")
    max_length: Optional[int] = _f(None, "subwords per encoder window incl. specials; null = the encoder's max_position_embeddings", size(MAX_SIZE, 4))
    stride: int = _f(64, "subwords of context shared by consecutive windows of a sentence longer than max_length", size(MAX_SIZE, 0))
    max_subwords_per_word: int = _f(24, "subwords kept per word (a longer word keeps its first ones; it is never dropped)", size())
    dropout: float = _f(0.0, "dropout on the pooled word vectors", RATE)
    token_dropout: float = _f(0.0, "training only: chance that a subword is replaced by the tokenizer's mask (or unk) token before the encoder reads it, so that the encoder learns to tag from context and pieces rather than memorised surface forms", RATE)
    context: int = _f(0, "document context: up to this many subwords of the neighbouring sentences of the same document (-DOCSTART- bounded; a file without it is one document) on each side of a sentence, read by the encoder, never labelled; 0 = off", size(MAX_SIZE, 0))
    trust_remote_code: bool = _f(False, "training only: allow the custom code of the encoder that name_or_path names (off: never executes downloaded code); loading a saved model never reads this, the user decides with predict.py --trust-remote-code")


@dataclass
class WordsConfig:
    dim: int = _f(100, "word embedding size (must match `vectors` when given)", size())
    min_freq: int = _f(1, "minimum training frequency for a word to get its own embedding", size(MAX_COUNT))
    lowercase: bool = _f(False, "look words up lower-cased (cased features are lost)")
    vectors: Optional[str] = _f(None, "pretrained vectors file, GloVe or word2vec/fastText text, optionally .gz")
    vectors_words: Literal["all", "train"] = _f("all", "which words of the vectors file get a row: all (the training vocabulary, then the file's other words, up to max_vectors, whose rows keep their pretrained vector in float16 and are saved with the model: a word training never saw reads its vector, not <unk>; a cased vocabulary looks an unknown word up lower-cased too) | train (training words only)")
    max_vectors: Optional[int] = _f(None, "with vectors_words all: the file's first N words at most (GloVe, word2vec and fastText list words by frequency); null = every word", size(MAX_COUNT))
    freeze: bool = _f(False, "keep every word embedding at its initial (pretrained) vector; otherwise the rows of training words fine-tune")
    unk_dropout: float = _f(0.0, "training only: chance that a token's word id is replaced by <unk>, so <unk> gets a trained vector and unseen words lean on characters and subwords", RATE)


@dataclass
class CharsConfig:
    enabled: bool = _f(False, "add a character CNN word representation to the fusion (cased, sees prefixes/suffixes)")
    dim: int = _f(30, "character embedding size", size())
    filters: int = _f(50, "CNN filters = size of the character word vector", size())
    kernel_size: int = _f(3, "CNN window in characters", size(MAX_SIZE))
    max_length: int = _f(30, "characters per word kept (the first ones)", size())
    min_freq: int = _f(1, "minimum training frequency for a character to get its own embedding", size(MAX_COUNT))


@dataclass
class LstmConfig:
    enabled: bool = _f(True, "put a BiLSTM between the fused word vectors and the emissions")
    hidden_size: int = _f(256, "LSTM hidden size per direction", size())
    num_layers: int = _f(1, "stacked BiLSTM layers", size(MAX_LAYERS))
    dropout: float = _f(0.0, "dropout between stacked LSTM layers", RATE)


@dataclass
class ModelConfig:
    encoder: EncoderConfig = _f(EncoderConfig(), "the ALBERT (or other HF) encoder")
    words: WordsConfig = _f(WordsConfig(), "word embeddings fused with the encoder's word vectors")
    chars: CharsConfig = _f(CharsConfig(), "character CNN word vectors fused with the encoder's (concat or add fusion)")
    fusion: Literal["concat", "add", "none"] = _f("concat", "concat | add (both projected to fusion_dim) | none (encoder alone)")
    fusion_dim: int = _f(256, "common size of the `add` fusion", size())
    dropout: float = _f(0.5, "dropout on the fused word representation and on the LSTM output", RATE)
    lstm: LstmConfig = _f(LstmConfig(), "the BiLSTM")
    decoder: Literal["crf", "softmax"] = _f("crf", "crf (learned transitions) | softmax (per-token cross-entropy; decoding still keeps the scheme's constraints)")


@dataclass
class LearningRates:
    encoder: float = _f(5e-5, "learning rate of the encoder", POSITIVE)
    words: float = _f(1e-3, "learning rate of the word embeddings", POSITIVE)
    lstm: float = _f(1e-3, "learning rate of the fusion, BiLSTM and emission layer", POSITIVE)
    crf: float = _f(1e-2, "learning rate of the CRF transitions (100-1000x the encoder's for encoder+CRF models)", POSITIVE)


@dataclass
class TrainingConfig:
    epochs: int = _f(10, "maximum number of passes over the training data", size(MAX_COUNT))
    batch_size: int = _f(32, "sentences per batch (ignored when batch_tokens is set)", size(MAX_COUNT))
    batch_tokens: Optional[int] = _f(None, "subwords per batch (padding included), length-bucketed; null = use batch_size", size(MAX_COUNT))
    accumulate: int = _f(1, "batches whose gradients are summed into one optimizer step", size(MAX_COUNT))
    micro_batch_subwords: Optional[int] = _f(None, "a training batch with more padded subwords than this runs as micro-batches one after another, their gradients summed into the same step (the same update up to float rounding): the largest forward pass, and so peak memory, stays bounded by this whatever the longest sentence of the corpus; dev/test scoring and calibration batches are split the same way; null = never split", size(MAX_COUNT, 16))
    pad_to_multiple: Optional[int] = _f(None, "training batches padded to a multiple of this many words and subwords: few distinct shapes keep the memory allocator from fragmenting; null = 16 for a training set of more than 1000 sentences in bf16/fp16, else 1 (pad to the longest: fp32 does not fragment that way, and a small set keeps its earlier results bit for bit)", size(512))
    precision: Literal["fp32", "bf16", "fp16"] = _f("fp32", "fp32 | bf16 (CPU or GPU autocast) | fp16 (CUDA, loss scaling); the CRF stays fp32")
    eval_batch_size: int = _f(64, "sentences per batch when scoring dev/test", size(MAX_COUNT))
    compile: bool = _f(False, "torch.compile (inductor, dynamic shapes) the encoder, fusion and BiLSTM for training and dev/test scoring: faster steps after a one-off compile of about a minute (README Numbers); needs a C++ compiler, else runs eager after a warning")
    seed: int = _f(42, "seed for initialisation, shuffling and dropout (CPU runs are reproducible)", size(MAX_SEED, 0))
    lr: LearningRates = _f(LearningRates(), "learning rate per parameter group")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases, LayerNorm and the CRF)", NON_NEGATIVE)
    warmup: float = _f(0.1, "fraction of all steps with a linear learning-rate warmup; then linear decay to 0", RATE)
    max_grad_norm: float = _f(5.0, "gradient clipping norm (0 = off)", NON_NEGATIVE)
    ema: float = _f(0.0, "decay of an exponential moving average of the weights per optimizer step (e.g. 0.999); dev/test scores and the saved model use the average; 0 = off", RATE)
    patience: int = _f(3, "stop after this many epochs without a better dev F1 (0 = never stop early)", size(MAX_COUNT, 0))
    calibrate: bool = _f(True, "at the end, fit a temperature for the CRF's confidences on dev (span cross-entropy), kept in MODEL_DIR/calibration.json and applied to marginals and span probabilities, never to tags; needs data.dev and the CRF decoder")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    checkpoint_every: int = _f(1000, "optimizer steps between checkpoints in OUTPUT_DIR/checkpoints (also at every epoch end; 0 = epoch ends only)", size(MAX_COUNT, 0))
    keep_checkpoints: int = _f(2, "newest checkpoints kept", size(MAX_COUNT))
    num_threads: Optional[int] = _f(None, "torch CPU threads (null = torch's default)", size(MAX_THREADS))
    progress: bool = _f(True, "show tqdm progress bars (on a terminal)")
    tensorboard: bool = _f(False, "also log per-epoch scalars to OUTPUT_DIR/tensorboard (needs the tensorboard package)")


@dataclass
class Config:
    output_dir: str = _f("runs/model", "directory that receives the model directory and metrics.jsonl")
    data: DataConfig = _f(DataConfig(), "input files and their format")
    model: ModelConfig = _f(ModelConfig(), "the network")
    training: TrainingConfig = _f(TrainingConfig(), "the optimisation")


# --------------------------------------------------------------------------- schema walking

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return "a list of " + {int: "integers", str: "names"}[typing.get_args(tp)[0]]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
        list: "a list"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key path of the schema (leaves and sections)."""
    keys = []
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        keys.append(path)
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, path + "."))
    return keys


class _Where:
    """Maps key paths to the source and line that set them, for error messages."""

    def __init__(self) -> None:
        self.lines: dict[str, tuple[str, Optional[int]]] = {}
        self.overrides: dict[int, str] = {}  # --set number -> its text, quoted in value errors

    def origin(self, path: str) -> str:
        """`` (from --set KEY=VALUE)`` when an override set ``path`` (or its section), else empty."""
        src, line = self.get(path, "")
        text = self.overrides.get(line) if src == "--set" and line is not None else None
        if text is None:
            return ""
        return f" (from --set {text if len(text) <= 80 else text[:77] + '...'})"

    def get(self, path: str, default_source: str) -> tuple[str, Optional[int]]:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return default_source, None


# YAML 1.2 floats that PyYAML (YAML 1.1) leaves as strings: `1e-4`, `2E5` (no dot, or an unsigned exponent).
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _coerce(value: Any, tp: Any, path: str, where: _Where, source: str, allowed: Optional[Range] = None) -> Any:
    origin = typing.get_origin(tp)
    src, line = where.get(path, source)
    if origin is Union:
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, path, where, source, allowed)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"`{path}` must be one of {', '.join(map(str, choices))}, got {value!r}", src, line)
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:  # `training:` with every key commented out: the section's defaults
            value = {}
        if not isinstance(value, dict):
            raise UserError(f"`{path}` must be a mapping of keys, got {type(value).__name__} {value!r}", src, line)
        return _build(tp, value, path + ".", where, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is int:
            fits, what = (lambda v: isinstance(v, int) and not isinstance(v, bool)), "integers"
        else:  # str: a tag name is one CoNLL column, never empty and never with spaces
            fits, what = (lambda v: isinstance(v, str) and v.strip() == v and v and not any(c.isspace() for c in v)), \
                "names without spaces"
        if not isinstance(value, list) or not all(fits(v) for v in value):
            raise UserError(f"`{path}` must be a list of {what}, got {value!r}", src, line)
        return value
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        dict: lambda v: isinstance(v, dict),
    }[tp]
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)
    if not ok(value):
        raise UserError(f"`{path}` must be {_type_name(tp)}, got {type(value).__name__} {value!r}{where.origin(path)}",
                        src, line)
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float: report it as the infinity it would be
            value = math.inf
        if allowed is None:
            allowed = Range()  # every float is at least finite
    if allowed is not None:
        problem = allowed.problem(value)
        if problem:
            shown = value if abs(value) < 10**30 else f"{value:.3g}"
            raise UserError(f"`{path}` {problem}, got {shown}{where.origin(path)}", src, line)
    return value


def _build(cls: type, raw: dict, prefix: str, where: _Where, source: str) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    for key in raw:
        if key not in names:
            path = prefix + str(key)
            src, line = where.get(path, source)
            close = difflib.get_close_matches(path, all_keys(), n=1, cutoff=0.5)
            hint = f"; did you mean `{close[0]}`?" if close else "; see configs/reference.yaml for valid keys"
            raise UserError(f"unknown config key `{path}`{hint}", src, line)
    kwargs = {k: _coerce(v, hints[k], prefix + k, where, source, fields[k].metadata.get("range"))
              for k, v in raw.items()}
    return cls(**kwargs)


def _record_lines(node: yaml.Node, prefix: str, source: str, where: _Where) -> None:
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            path = prefix + str(key_node.value)
            line = key_node.start_mark.line + 1
            if path in first_lines:
                # PyYAML keeps the last of equal keys: the first one (a whole section, maybe) would vanish.
                raise UserError(f"duplicate key `{path}` (first on line {first_lines[path]}); merge the two", source, line)
            first_lines[path] = line
            where.lines[path] = (source, line)
            _record_lines(value_node, path + ".", source, where)


def _set_dotted(tree: dict, path: str, value: Any, where: _Where) -> None:
    parts = path.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            src, line = where.get(prefix, "--set")
            raise UserError(f"cannot set `{path}`: `{prefix}` is not a section", src, line)
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.epochs=3"`` -> ``("training.epochs", 3)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects KEY=VALUE (e.g. training.epochs=3), got {text!r}", "--set")
    try:
        parsed = parse_yaml(value, "--set")[0] if value.strip() else None
    except UserError as exc:
        raise UserError(f"the value of --set {key.strip()} is not valid YAML: {exc.message}", "--set") from None
    return key.strip(), parsed


def read_raw(path: Optional[Union[str, os.PathLike]], overrides: tuple[str, ...],
             example: str = "training: {epochs: 3}") -> tuple[dict, "_Where", str]:
    """``path`` (YAML, safe_load) with the ``--set`` overrides applied: ``(raw mapping, where each key came
    from, source)``; the schema is not applied yet. ``example``: shown when the file is not a mapping."""
    where = _Where()
    raw: dict = {}
    source = "--set"
    if path is not None:
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("config file not found; check the --config path", source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read config: {exc}", source) from None
        raw, node = parse_yaml(text, source)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UserError(f"a config must be a mapping of keys (e.g. `{example}`)", source, 1)
        if node is not None:
            _record_lines(node, "", source, where)
    for i, text in enumerate(overrides, 1):
        key, value = parse_override(text)
        where.lines[key] = ("--set", i)
        where.overrides[i] = text
        _set_dotted(raw, key, value, where)
    return raw, where, source


def load_config(path: Optional[Union[str, os.PathLike]] = None, overrides: tuple[str, ...] = ()) -> Config:
    """Read ``path`` (YAML, safe_load), apply ``--set`` overrides, validate into a ``Config``."""
    raw, where, source = read_raw(path, overrides)
    return _build(Config, raw, "", where, source)


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def from_dict(raw: dict, source: str = "config") -> Config:
    return _build(Config, raw, "", _Where(), source)


def save_config(config: Config, path: Union[str, os.PathLike]) -> None:
    from .atomic import atomic_write

    with atomic_write(path) as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False, allow_unicode=True)


def reference_yaml() -> str:
    """The commented reference config: every key, its default and its one-line description."""
    lines = ["# ner_toolkit reference config: every key with its default. Generated by", "#   python -m ner_toolkit.config > configs/reference.yaml", ""]

    def walk(cls: type, indent: str) -> None:
        defaults = cls()
        for f in dataclasses.fields(cls):
            tp = _hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                lines.append(f"{indent}{f.name}:  # {f.metadata['help']}")
                walk(tp, indent + "  ")
            else:
                value = yaml.safe_dump(getattr(defaults, f.name), default_flow_style=True).strip()
                value = value.removesuffix("\n...").removesuffix("...").strip()
                allowed = f.metadata.get("range")
                bounds = f"; allowed: {allowed.describe()}" if allowed is not None else ""
                lines.append(f"{indent}{f.name}: {value}  # {f.metadata['help']}{bounds}")

    walk(Config, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_yaml(), end="")
