"""The experiment config: the NER schema on the public machinery of ``ner_toolkit.schema``.

One YAML file is the whole experiment. Every key has a default and a one-line help text;
``reference_yaml()`` renders them as the commented reference config. Choice keys read their names from
the module that owns each concept (schemes, poolings, word tokenisers, precisions), and the cross-field
rules are each section's ``check`` method, so every config value is validated here, with its YAML line.
What only a training run needs (``data.train``, an encoder) and what needs the data or the encoder is
checked where it is used, still naming the key's line through ``schema.here(section)``.
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from typing import Optional, Union

from . import schema
from .data.pooling import POOLINGS
from .data.schemes import SCHEMES, scheme_names
from .data.text import TOKENIZERS, MisalignedPolicy
from .model.modes import PRECISIONS
from .schema import (MAX_COUNT, MAX_LAYERS, MAX_SEED, MAX_SIZE, MAX_THREADS, NON_NEGATIVE, POSITIVE, RATE, Here,
                     field, parse_override, size)

# Choices this schema owns: no other module lists them.
FILE_FORMATS = ("auto", "conll", "jsonl")
VECTORS_WORDS = ("all", "train")
FUSIONS = ("concat", "add", "none")
DECODERS = ("crf", "softmax")
_INTERNAL = [name for name in SCHEMES if name in scheme_names(internal_only=True)]  # canonical names only
REFERENCE = "configs/reference.yaml"
__all__ = ["Config", "DataConfig", "EncoderConfig", "WordsConfig", "CharsConfig", "LstmConfig", "ModelConfig",
           "LearningRates", "TrainingConfig", "load_config", "from_dict", "to_dict", "save_config", "reference_yaml",
           "all_keys", "parse_override"]


@dataclass
class DataConfig:
    train: Optional[str] = field(None, "training file (CoNLL columns); required by train.py")
    dev: Optional[str] = field(None, "dev file scored after each epoch for early stopping and model selection")
    test: Optional[str] = field(None, "test file scored once with the best model at the end of training")
    token_column: int = field(0, "index of the token column (negative counts from the end)")
    label_column: int = field(-1, "index of the gold label column (negative counts from the end)")
    input_scheme: str = field("auto", f"tag scheme of the files: {' | '.join(('auto', *SCHEMES))} (predictions are written in it)", choices=("auto", *scheme_names()), any_case=True)
    unknown_tag: str = field("?", "a training label that means \"not annotated here\" (partial annotation; an empty label column reads the same): the CRF's loss sums over every legal tag there; not allowed in dev/test")
    tag_scheme: str = field("BIOES", f"scheme used inside the model and its CRF constraints: {' | '.join(_INTERNAL)}", choices=scheme_names(internal_only=True), any_case=True)
    format: str = field("auto", "format of train/dev/test: conll (token columns) | jsonl (texts with character-offset entities: this toolkit's, Doccano, Label Studio, Prodigy; or HF-datasets rows of tokens + ner_tags) | auto (jsonl for .jsonl/.json/.ndjson files, else conll)", choices=FILE_FORMATS)
    word_tokenizer: str = field("auto", "how raw text is split into words, for jsonl texts and for prediction from raw text (saved with the model): whitespace | conll (Penn Treebank rules, as CoNLL-2003 is tokenised) | chars (every character; Chinese and other text without spaces) | auto (chars when most letters of the training data are CJK/Thai/kana, else conll)", choices=("auto", *TOKENIZERS))
    misaligned: str = field("expand", "a jsonl entity whose offsets fall inside a word: expand (widen it to whole words) | skip (leave it out) | error; every case is counted and reported with its line", choices=typing.get_args(MisalignedPolicy))
    tag_names: Optional[list[str]] = field(None, "names of integer ner_tags ids in HF-datasets rows (id i means tag_names[i]), e.g. [O, B-PER, I-PER, ...]")


@dataclass
class EncoderConfig:
    name_or_path: Optional[str] = field(None, "HuggingFace model id or local directory (AutoModel + AutoTokenizer)")
    scratch: Optional[dict] = field(None, "inline ALBERT config (AlbertConfig keys) for a randomly initialised encoder; needs `tokenizer`")
    tokenizer: Optional[str] = field(None, "tokenizer directory or file (spiece.model, tokenizer.json, vocab.txt) for a scratch encoder")
    freeze: bool = field(False, "keep the encoder weights fixed (no gradients)")
    pooling: str = field("first", f"subword-to-word pooling: {' | '.join(POOLINGS)}", choices=tuple(POOLINGS))
    layers: Optional[list[int]] = field(None, "encoder layers to mix with learned softmax weights, e.g. [-1, -2, -3, -4] (0 = embeddings); null = last layer")
    max_length: Optional[int] = field(None, "subwords per encoder window incl. specials; null = the encoder's max_position_embeddings", size(MAX_SIZE, 4))
    stride: int = field(64, "subwords of context shared by consecutive windows of a sentence longer than max_length", size(MAX_SIZE, 0))
    max_subwords_per_word: int = field(24, "subwords kept per word (a longer word keeps its first ones; it is never dropped)", size())
    dropout: float = field(0.0, "dropout on the pooled word vectors", RATE)
    token_dropout: float = field(0.0, "training only: chance that a subword is replaced by the tokenizer's mask (or unk) token before the encoder reads it, so that the encoder learns to tag from context and pieces rather than memorised surface forms", RATE)
    context: int = field(0, "document context: up to this many subwords of the neighbouring sentences of the same document (-DOCSTART- bounded; a file without it is one document) on each side of a sentence, read by the encoder, never labelled; 0 = off", size(MAX_SIZE, 0))
    trust_remote_code: bool = field(False, "training only: allow the custom code of the encoder that name_or_path names (off: never executes downloaded code); loading a saved model never reads this, the user decides with predict.py --trust-remote-code")

    def check(self, here: Here) -> None:
        if self.scratch is not None and not self.tokenizer:
            raise here.error(f"{here.key('scratch')} needs {here.key('tokenizer')} (e.g. builtin:albert-base-v2)",
                             "scratch", "tokenizer")


@dataclass
class WordsConfig:
    dim: int = field(100, "word embedding size (must match `vectors` when given)", size())
    min_freq: int = field(1, "minimum training frequency for a word to get its own embedding", size(MAX_COUNT))
    lowercase: bool = field(False, "look words up lower-cased (cased features are lost)")
    vectors: Optional[str] = field(None, "pretrained vectors file, GloVe or word2vec/fastText text, optionally .gz")
    vectors_words: str = field("all", "which words of the vectors file get a row: all (the training vocabulary, then the file's other words, up to max_vectors, whose rows keep their pretrained vector in float16 and are saved with the model: a word training never saw reads its vector, not <unk>; a cased vocabulary looks an unknown word up lower-cased too) | train (training words only)", choices=VECTORS_WORDS)
    max_vectors: Optional[int] = field(None, "with vectors_words all: the file's first N words at most (GloVe, word2vec and fastText list words by frequency); null = every word", size(MAX_COUNT))
    freeze: bool = field(False, "keep every word embedding at its initial (pretrained) vector; otherwise the rows of training words fine-tune")
    unk_dropout: float = field(0.0, "training only: chance that a token's word id is replaced by <unk>, so <unk> gets a trained vector and unseen words lean on characters and subwords", RATE)


@dataclass
class CharsConfig:
    enabled: bool = field(False, "add a character CNN word representation to the fusion (cased, sees prefixes/suffixes)")
    dim: int = field(30, "character embedding size", size())
    filters: int = field(50, "CNN filters = size of the character word vector", size())
    kernel_size: int = field(3, "CNN window in characters", size(MAX_SIZE))
    max_length: int = field(30, "characters per word kept (the first ones)", size())
    min_freq: int = field(1, "minimum training frequency for a character to get its own embedding", size(MAX_COUNT))


@dataclass
class LstmConfig:
    enabled: bool = field(True, "put a BiLSTM between the fused word vectors and the emissions")
    hidden_size: int = field(256, "LSTM hidden size per direction", size())
    num_layers: int = field(1, "stacked BiLSTM layers", size(MAX_LAYERS))
    dropout: float = field(0.0, "dropout between stacked LSTM layers", RATE)


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(EncoderConfig(), "the ALBERT (or other HF) encoder")
    words: WordsConfig = field(WordsConfig(), "word embeddings fused with the encoder's word vectors")
    chars: CharsConfig = field(CharsConfig(), "character CNN word vectors fused with the encoder's (concat or add fusion)")
    fusion: str = field("concat", "concat | add (both projected to fusion_dim) | none (encoder alone)", choices=FUSIONS)
    fusion_dim: int = field(256, "common size of the `add` fusion", size())
    dropout: float = field(0.5, "dropout on the fused word representation and on the LSTM output", RATE)
    lstm: LstmConfig = field(LstmConfig(), "the BiLSTM")
    decoder: str = field("crf", "crf (learned transitions) | softmax (per-token cross-entropy; decoding still keeps the scheme's constraints)", choices=DECODERS)

    def check(self, here: Here) -> None:
        if self.chars.enabled and self.fusion == "none":
            raise here.error("model.chars needs model.fusion concat or add (none is the encoder alone)",
                             "chars.enabled", "fusion")


@dataclass
class LearningRates:
    encoder: float = field(5e-5, "learning rate of the encoder", POSITIVE)
    words: float = field(1e-3, "learning rate of the word embeddings", POSITIVE)
    lstm: float = field(1e-3, "learning rate of the fusion, BiLSTM and emission layer", POSITIVE)
    crf: float = field(1e-2, "learning rate of the CRF transitions (100-1000x the encoder's for encoder+CRF models)", POSITIVE)


@dataclass
class TrainingConfig:
    epochs: int = field(10, "maximum number of passes over the training data", size(MAX_COUNT))
    batch_size: int = field(32, "sentences per batch (ignored when batch_tokens is set)", size(MAX_COUNT))
    batch_tokens: Optional[int] = field(None, "subwords per batch (padding included), length-bucketed; null = use batch_size", size(MAX_COUNT))
    accumulate: int = field(1, "batches whose gradients are summed into one optimizer step", size(MAX_COUNT))
    micro_batch_subwords: Optional[int] = field(None, "a training batch with more padded subwords than this runs as micro-batches one after another, their gradients summed into the same step (the same update up to float rounding): the largest forward pass, and so peak memory, stays bounded by this whatever the longest sentence of the corpus; dev/test scoring and calibration batches are split the same way; null = never split", size(MAX_COUNT, 16))
    pad_to_multiple: Optional[int] = field(None, "training batches padded to a multiple of this many words and subwords: few distinct shapes keep the memory allocator from fragmenting; null = 16 for a training set of more than 1000 sentences in bf16/fp16, else 1 (pad to the longest: fp32 does not fragment that way, and a small set keeps its earlier results bit for bit)", size(512))
    precision: str = field("fp32", "fp32 | bf16 (CPU or GPU autocast) | fp16 (CUDA, loss scaling); the CRF stays fp32", choices=PRECISIONS)
    eval_batch_size: int = field(64, "sentences per batch when scoring dev/test", size(MAX_COUNT))
    compile: bool = field(False, "torch.compile (inductor, dynamic shapes) the encoder, fusion and BiLSTM for training and dev/test scoring: faster steps after a one-off compile of about a minute (docs/benchmarks/speed-memory.md); needs a C++ compiler, else runs eager after a warning")
    seed: int = field(42, "seed for initialisation, shuffling and dropout (CPU runs are reproducible)", size(MAX_SEED, 0))
    lr: LearningRates = field(LearningRates(), "learning rate per parameter group")
    weight_decay: float = field(0.01, "AdamW weight decay (not applied to biases, LayerNorm and the CRF)", NON_NEGATIVE)
    warmup: float = field(0.1, "fraction of all steps with a linear learning-rate warmup; then linear decay to 0", RATE)
    max_grad_norm: float = field(5.0, "gradient clipping norm (0 = off)", NON_NEGATIVE)
    ema: float = field(0.0, "decay of an exponential moving average of the weights per optimizer step (e.g. 0.999); dev/test scores and the saved model use the average; 0 = off", RATE)
    patience: int = field(3, "stop after this many epochs without a better dev F1 (0 = never stop early)", size(MAX_COUNT, 0))
    calibrate: bool = field(True, "at the end, fit a temperature for the CRF's confidences on dev (span cross-entropy), kept in MODEL_DIR/calibration.json and applied to marginals and span probabilities, never to tags; needs data.dev and the CRF decoder")
    device: str = field("auto", "auto | cpu | cuda | cuda:N")
    checkpoint_every: int = field(1000, "optimizer steps between checkpoints in OUTPUT_DIR/checkpoints (also at every epoch end; 0 = epoch ends only)", size(MAX_COUNT, 0))
    keep_checkpoints: int = field(2, "newest checkpoints kept", size(MAX_COUNT))
    num_threads: Optional[int] = field(None, "CPU threads (null = the cores not busy with other processes at the start, at least 1; docs/threads.md)", size(MAX_THREADS))
    progress: bool = field(True, "show tqdm progress bars (on a terminal)")
    tensorboard: bool = field(False, "also log per-epoch scalars to OUTPUT_DIR/tensorboard (needs the tensorboard package)")


@dataclass
class Config:
    output_dir: str = field("runs/model", "directory that receives the model directory and metrics.jsonl")
    data: DataConfig = field(DataConfig(), "input files and their format")
    model: ModelConfig = field(ModelConfig(), "the network")
    training: TrainingConfig = field(TrainingConfig(), "the optimisation")


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key path of the schema (leaves and sections)."""
    return schema.all_keys(cls, prefix)


def load_config(path: Optional[Union[str, os.PathLike]] = None, overrides: tuple[str, ...] = ()) -> Config:
    """Read ``path`` (YAML), apply ``--set`` overrides, validate into a ``Config``."""
    return schema.load(Config, path, overrides, reference=REFERENCE)


def to_dict(config: Config) -> dict:
    return schema.to_dict(config)


def from_dict(raw: dict, source: str = "config", overrides: tuple[str, ...] = ()) -> Config:
    return schema.from_dict(Config, raw, source, reference=REFERENCE, overrides=overrides)


def save_config(config: Config, path: Union[str, os.PathLike]) -> None:
    schema.save(config, path)


def reference_yaml() -> str:
    """The commented reference config: every key, its default and its one-line description."""
    return schema.reference_yaml(Config, ["# ner_toolkit reference config: every key with its default. Generated by",
                                          "#   python -m ner_toolkit.config > configs/reference.yaml"])


if __name__ == "__main__":
    print(reference_yaml(), end="")
