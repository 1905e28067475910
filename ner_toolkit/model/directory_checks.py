"""Checks of each file of a model directory before it is used.

A model directory may come from someone else, so nothing in it is trusted: every file is parsed and its
fields checked here, and each problem is a ``UserError`` naming the file. Nothing here decides to run
code: custom code (``auto_map``) is refused unless the caller passes the user's own decision.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..data.schemes import Scheme, SchemeError, get_scheme, scheme_names, to_spans
from ..errors import UserError

# Integer size fields of an encoder config.json: each must be an int >= 1 (absent ones take HF defaults).
SIZE_FIELDS = ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "num_hidden_groups", "inner_group_num",
               "type_vocab_size")
# Bounds checked before any tensor is allocated: a received file must not be able to ask for terabytes.
MAX_DIMENSION = 10**6
MAX_PARAMETER_BYTES = 16 * 2**30  # fp32; the largest public encoders (~3.5B parameters) fit
# Vocabulary files a tokenizer may be saved with when tokenizer_config.json names no known class.
_VOCAB_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "vocab.txt",
                "vocab.json")
_OPTIONAL_TOKENIZER_JSON = ("special_tokens_map.json", "added_tokens.json")
_REMOTE_CODE_FIX = ("refusing: pass --trust-remote-code (Predictor.load(..., trust_remote_code=True)) only if you "
                    "trust who sent this directory")
_FIX = "restore the model directory from its source or train again"


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; anything else is a UserError naming it."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError("missing; the model directory is incomplete, copy it whole or re-train", path) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"damaged JSON ({exc}); {_FIX}", path) from None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", path) from None
    if not isinstance(raw, dict):
        raise UserError(f"damaged: expected a JSON object, found {type(raw).__name__}; {_FIX}", path)
    return raw


def refuse_remote_code(raw: Mapping[str, Any], path: Path, trust_remote_code: bool) -> None:
    """``auto_map`` names Python modules shipped in the directory; only the user may let them run."""
    if "auto_map" in raw and not trust_remote_code:
        names = raw["auto_map"]
        shown = ", ".join(map(str, names)) if isinstance(names, dict) else repr(names)
        raise UserError(f"{path.name} asks to run custom code (auto_map {shown}); {_REMOTE_CODE_FIX}", path)


def check_links(directory: Path, root: Path, subdirectories: Sequence[str] = ()) -> None:
    """No entry of ``directory`` (or of its ``subdirectories``) leads outside ``root`` through a symlink.

    ``root`` is the model directory itself, or for a snapshot in the HF cache its ``models--org--name``
    folder (whose ``snapshots/`` hold symlinks into ``blobs/``). A link elsewhere would make a received
    directory read any file of the machine (``/dev/zero`` as labels.json, another user's data): refused.
    """
    top = Path(os.path.realpath(root))
    for folder in (directory, *(directory / name for name in subdirectories)):
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError as exc:
            raise UserError(f"cannot read the model directory: {exc.strerror or exc}", folder) from None
        for entry in entries:
            target = Path(os.path.realpath(entry))
            if target != top and top not in target.parents:
                shown = os.readlink(entry) if entry.is_symlink() else str(target)
                raise UserError(f"is a symlink to {shown}, outside the model directory; refusing to follow it "
                                f"(copy the file in, e.g. `cp -L`, if you trust it)", entry)


def is_marker(raw: Mapping[str, Any]) -> bool:
    """Whether a top-level config.json is the ner_toolkit marker (not an encoder config)."""
    model_type = raw.get("model_type")
    return isinstance(model_type, str) and model_type.startswith("ner_toolkit")


def check_labels(raw: Mapping[str, Any], path: Path) -> tuple[list[str], Scheme, Scheme]:
    """``(labels, tag_scheme, output_scheme)`` of a labels.json object, each field checked: the CRF is trained
    in an internal scheme (``Scheme.internal``); any scheme may be written on output."""
    expected = {"labels", "tag_scheme", "output_scheme"}
    if set(raw) != expected:
        missing, extra = sorted(expected - set(raw)), sorted(set(raw) - expected)
        parts = [f"{what} {', '.join(keys)}" for what, keys in (("missing", missing), ("unknown", extra)) if keys]
        raise UserError(f"labels file must hold exactly labels, tag_scheme, output_scheme ({'; '.join(parts)}); {_FIX}",
                        path)
    schemes = []
    for key, internal_only in (("tag_scheme", True), ("output_scheme", False)):
        value = raw[key]
        if not isinstance(value, str):
            raise UserError(f"`{key}` must be a string, found {type(value).__name__}; {_FIX}", path)
        try:
            scheme = get_scheme(value)
        except SchemeError as exc:
            raise UserError(f"`{key}`: {exc}", path) from None
        if internal_only and not scheme.internal:
            raise UserError(f"`{key}` {value!r} is not one of {', '.join(scheme_names(internal_only=True))}; {_FIX}",
                            path)
        schemes.append(scheme)
    tag_scheme, output_scheme = schemes
    labels = raw["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise UserError(f"`labels` must be a list of strings; {_FIX}", path)
    seen: set[str] = set()
    for label in labels:
        try:
            to_spans([label], tag_scheme)  # parses the label for the scheme: "O" or one of its PREFIX-TYPE
        except SchemeError as exc:
            raise UserError(f"`labels`: {exc}", path) from None
        if label in seen:
            raise UserError(f'`labels`: "{label}" appears twice; {_FIX}', path)
        seen.add(label)
    if "O" not in seen:
        raise UserError(f'`labels` lacks "O"; {_FIX}', path)
    return list(labels), tag_scheme, output_scheme


def check_sizes(values: Mapping[str, Any], where: Union[str, Path], what: str) -> None:
    """Refuse size fields of the wrong type, below 1, or an encoder too large to allocate.

    ``values``: an encoder config as a mapping (absent fields are not checked); ``what`` names it in messages.
    """
    for key in SIZE_FIELDS:
        if key not in values or values[key] is None:
            continue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{what}: `{key}` must be an integer, found {value!r}", where)
        if value < 1:
            raise UserError(f"{what}: `{key}` must be at least 1, found {value}", where)
        if value > MAX_DIMENSION:
            raise UserError(f"{what}: `{key}` = {value} is above {MAX_DIMENSION:,}; refusing to allocate it", where)
    hidden, heads = values.get("hidden_size"), values.get("num_attention_heads")
    if hidden and heads and hidden % heads:
        raise UserError(f"{what}: hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})", where)
    count = parameter_estimate(values)
    if count * 4 > MAX_PARAMETER_BYTES:
        raise UserError(f"{what}: about {count:.3g} parameters ({count * 4 / 2**30:,.0f} GiB in fp32), above the "
                        f"{MAX_PARAMETER_BYTES // 2**30} GiB limit; refusing to allocate it", where)


def parameter_estimate(values: Mapping[str, Any]) -> float:
    """A transformer's parameter count from its sizes (biases and norms ignored; a bound, not an audit)."""
    def size(key: str, default: int) -> int:
        value = values.get(key)
        return value if isinstance(value, int) and value >= 1 else default

    hidden = size("hidden_size", 768)
    embedding = size("embedding_size", hidden)
    inner = size("intermediate_size", 4 * hidden)
    rows = size("vocab_size", 30000) + size("max_position_embeddings", 512) + size("type_vocab_size", 2)
    embeddings = rows * embedding
    if values.get("model_type") == "albert":  # ALBERT shares weights: groups x inner layers, not num_hidden_layers
        layers = size("num_hidden_groups", 1) * size("inner_group_num", 1)
    else:
        layers = size("num_hidden_layers", 12)
    return float(embeddings + embedding * hidden + layers * (4 * hidden * hidden + 2 * hidden * inner))


def check_encoder_config(raw: Mapping[str, Any], path: Path, trust_remote_code: bool) -> None:
    """A config.json the encoder may be built from: known architecture, sane sizes, no unasked-for code."""
    from transformers import CONFIG_MAPPING

    refuse_remote_code(raw, path, trust_remote_code)
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UserError(f"`model_type` must be a non-empty string, found {model_type!r}; {_FIX}", path)
    if model_type not in CONFIG_MAPPING and not trust_remote_code:
        raise UserError(f"`model_type` {model_type!r} is not an architecture transformers knows; {_FIX}", path)
    check_sizes(raw, path, "encoder config")


def check_tokenizer_files(directory: Path, trust_remote_code: bool) -> None:
    """The files ``tokenizer.save_pretrained`` wrote are present and parse (never a fallback tokenizer)."""
    config_path = directory / "tokenizer_config.json"
    config = read_json_object(config_path)
    refuse_remote_code(config, config_path, trust_remote_code)
    for name in _OPTIONAL_TOKENIZER_JSON:
        if (directory / name).exists():
            read_json_object(directory / name)
    needed = _vocab_files_of(config.get("tokenizer_class"), config_path, trust_remote_code)
    if not needed:
        return  # a trusted custom tokenizer: its own code knows its files
    present = [name for name in needed if (directory / name).is_file()]
    if not present:
        raise UserError(f"missing the tokenizer's vocabulary (one of {', '.join(needed)}); copy the model directory "
                        f"whole or re-train", directory / needed[0])
    for name in present:
        _parse_vocab_file(directory / name)


def _vocab_files_of(tokenizer_class: Any, config_path: Path, trust_remote_code: bool) -> tuple[str, ...]:
    """The vocabulary file names of ``tokenizer_class`` (any of them suffices), fast tokenizer file first;
    none for a class transformers does not know when the user trusts the directory's code."""
    if tokenizer_class is None:
        return _VOCAB_FILES
    if not isinstance(tokenizer_class, str):
        raise UserError(f"`tokenizer_class` must be a string, found {tokenizer_class!r}; {_FIX}", config_path)
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    cls = tokenizer_class_from_name(tokenizer_class)
    if cls is None:
        cls = tokenizer_class_from_name(tokenizer_class.removesuffix("Fast"))
    if cls is None and trust_remote_code:
        return ()
    names = getattr(cls, "vocab_files_names", None)
    if not names:
        return _VOCAB_FILES
    files = [str(names["tokenizer_file"])] if "tokenizer_file" in names else []
    return tuple(files + [str(v) for k, v in names.items() if k != "tokenizer_file"])


def _parse_vocab_file(path: Path) -> None:
    """Parse one vocabulary file the way the tokenizer will, so damage names the file."""
    name = path.name
    try:
        if name == "tokenizer.json":
            from tokenizers import Tokenizer

            Tokenizer.from_str(path.read_bytes().decode("utf-8"))
        elif name.endswith(".model"):
            import sentencepiece

            processor = sentencepiece.SentencePieceProcessor()
            processor.LoadFromSerializedProto(path.read_bytes())
            if processor.GetPieceSize() < 1:
                raise ValueError("no pieces")
        elif name.endswith(".json"):
            read_json_object(path)
        elif not path.read_bytes().decode("utf-8").strip():
            raise ValueError("empty file")
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", path) from None
    except Exception as exc:  # noqa: BLE001 - tokenizers and sentencepiece raise plain Exception/RuntimeError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"damaged tokenizer file ({reason}); {_FIX}", path) from None


def check_tokenizer(tokenizer: Any, vocab_size: Optional[int], directory: Path) -> None:
    """The loaded tokenizer fits the encoder: no id past its embedding table, every special token known."""
    where = directory / "tokenizer_config.json"
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the encoder config's vocab_size is "
                        f"{vocab_size}; "
                        f"the tokenizer and encoder come from different models", where)
    unk = tokenizer.unk_token_id
    for token, token_id in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids):
        if token_id is None or (token_id == unk and token != tokenizer.unk_token):
            raise UserError(f"special token {token!r} is not in the tokenizer's vocabulary; {_FIX}", where)
        if vocab_size is not None and not 0 <= token_id < vocab_size:
            raise UserError(f"special token {token!r} has id {token_id}, outside the encoder config's vocab_size "
                            f"{vocab_size}; {_FIX}", where)


def check_char_vocab(raw: Mapping[str, Any], path: Path) -> tuple[list[str], int]:
    """``(chars, max_length)`` of a char_vocab.json object."""
    chars, max_length = raw.get("chars"), raw.get("max_length")
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise UserError(f"`chars` must be a list of single characters; {_FIX}", path)
    if len(set(chars)) != len(chars):
        raise UserError(f"`chars` holds a character twice; {_FIX}", path)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise UserError(f"`max_length` must be an integer >= 1, found {max_length!r}; {_FIX}", path)
    return chars, max_length


def weight_header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor names and shapes, and the string metadata, from a safetensors header, without reading the
    tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}, dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"corrupted weights file: {exc}", path) from None


# Digests ``save_model`` writes into the weights' safetensors header: what gives the weights' rows their
# meaning travels with them. The shapes cannot tell a labels.json that lists the same labels in another
# order (every tag renamed, the scheme's constraints scrambled) from the right one; the ONNX runtime knows
# this too and checks its labels against what the export recorded (export.json's num_labels: the count).
LABELS_DIGEST = "ner_toolkit.labels_sha256"
CONFIG_DIGEST = "ner_toolkit.model_config_sha256"


def _sha256_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def labels_digest(labels: Sequence[str], tag_scheme: Union[Scheme, str]) -> str:
    """The labels in CRF order with their scheme (not output_scheme: how tags are written, not what a row is)."""
    return _sha256_json({"labels": list(labels), "tag_scheme": get_scheme(tag_scheme).name})


def model_config_digest(raw_config: Mapping[str, Any]) -> str:
    """config.yaml's ``model`` mapping as written (not with this version's defaults filled in, so a later
    version with new options still matches), less ``encoder.trust_remote_code``, which loading never reads."""
    model = copy.deepcopy(raw_config.get("model")) if isinstance(raw_config.get("model"), dict) else {}
    if isinstance(model.get("encoder"), dict):
        model["encoder"].pop("trust_remote_code", None)
    return _sha256_json(model)


def check_digests(metadata: Mapping[str, str], labels: Sequence[str], tag_scheme: Scheme,
                  raw_config: Mapping[str, Any], directory: Path, weights: str = "model.safetensors") -> None:
    """labels.json and config.yaml are the ones the weights were saved with. A digest the header lacks (a
    directory saved before digests existed) is not checked."""
    saved = metadata.get(LABELS_DIGEST)
    if saved is not None and saved != labels_digest(labels, tag_scheme):
        raise UserError(f"does not match {weights}, which was saved with other labels or the same labels in "
                        f"another order (each label is a row of the weights); {_FIX}", directory / "labels.json")
    saved = metadata.get(CONFIG_DIGEST)
    if saved is not None and saved != model_config_digest(raw_config):
        raise UserError(f"its `model` section is not the one {weights} was saved with (the network would read "
                        f"the weights differently); {_FIX}", directory / "config.yaml")


def _source_of(key: str, encoder_config: str = "encoder/config.json") -> str:
    """The file whose contents decide the shape of weight ``key``."""
    for prefix, name in (("fusion.words.", "word_vocab.txt"), ("fusion.pretrained", "word_vocab_pretrained.txt"),
                         ("fusion.chars.", "char_vocab.json"),
                         ("emissions.", "labels.json"), ("crf.", "labels.json"), ("encoder.model.", encoder_config)):
        if key.startswith(prefix):
            return name
    return "config.yaml"


def compare_weights(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]], path: Path,
                    encoder_config: str = "encoder/config.json") -> None:
    """The weights file holds exactly the expected tensors; a mismatch names the file that disagrees
    (``encoder_config``: where this directory keeps the encoder's config.json)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if list(found[k]) != list(expected[k]))
    if not (missing or unexpected or wrong):
        return

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")

    parts = [f"{what}: {listed(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    parts += [f"{key} is {list(found[key])} but {_source_of(key, encoder_config)} needs {list(expected[key])}"
              for key in wrong[:3]]
    # A pretrained-rows tensor is there or not as word_vocab_pretrained.txt is (other presences: the config).
    sources = sorted({_source_of(k, encoder_config) for k in wrong}
                     | {_source_of(k) for k in missing + unexpected if k.startswith("fusion.pretrained")}
                     or {"config.yaml", "labels.json"})
    raise UserError(f"weights do not match {'/'.join(sources)} ({'; '.join(parts)}); the directory is corrupted "
                    f"or mixed", path)
