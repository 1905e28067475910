"""The subword encoder (ALBERT first; any HF AutoModel encoder) and subword-to-word pooling.

Loading never touches the network unless the user names a hub id: a scratch encoder is built
from an inline config (random init) and a local tokenizer; a saved model directory is rebuilt
from its own ``config.json`` and weights.
"""
from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import EncoderConfig
from ..data.batching import Batch
from ..data.pooling import get_pooling
from ..errors import UserError
from ..schema import here
from .directory_checks import check_sizes

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
# BPE tokenizers that need a leading space to tokenize a word as inside a sentence.
_PREFIX_SPACE_TYPES = {"roberta", "gpt2", "bart", "longformer", "deberta", "mpnet"}


def resolve_path(path: str) -> str:
    """``builtin:NAME`` names a tokenizer shipped with the package (ner_toolkit/resources/NAME)."""
    if path.startswith("builtin:"):
        return str(RESOURCES / path[len("builtin:"):])
    return path


def looks_local(path: str) -> bool:
    """A path the user meant as local (so a miss is "not found", not a hub lookup)."""
    return path.startswith(("builtin:", ".", "/", "~")) or os.path.exists(path)


def load_tokenizer(path: str, model_type: Optional[str] = None, trust_remote_code: bool = False) -> Any:
    """A tokenizer from a directory, a hub id, or a single vocabulary file (spiece.model / vocab.txt)."""
    from transformers import AutoTokenizer, AlbertTokenizer, BertTokenizer

    resolved = resolve_path(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if model_type in _PREFIX_SPACE_TYPES:
        kwargs["add_prefix_space"] = True
    try:
        if os.path.isfile(resolved):
            name = os.path.basename(resolved)
            if name.endswith(".model"):
                return AlbertTokenizer.from_pretrained(resolved)
            if name.endswith(".txt"):
                return BertTokenizer.from_pretrained(resolved)
            raise UserError("a tokenizer file must be a SentencePiece .model or a WordPiece vocab.txt; "
                            "for tokenizer.json give its directory", path)
        if not os.path.isdir(resolved) and looks_local(path):
            raise UserError("tokenizer directory not found; check the path", path)
        return AutoTokenizer.from_pretrained(resolved, **kwargs)
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer: {str(exc).splitlines()[0]}", path) from None


def scratch_config(cfg: EncoderConfig, vocab_size: int) -> Any:
    """An ``AlbertConfig`` from the inline ``model.encoder.scratch`` mapping."""
    from transformers import AlbertConfig

    values = dict(cfg.scratch or {})
    values.setdefault("vocab_size", vocab_size)
    # AlbertConfig accepts any keyword: a typo would silently train the default (huge) architecture.
    defaults = AlbertConfig().to_dict()
    valid = set(defaults)
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise here(cfg).error(f"unknown ALBERT config key `model.encoder.scratch.{key}`{hint}", "scratch")
    # The same bounds as a received config.json, before anything is built: a training config may ask for an
    # absurd encoder too.
    try:
        check_sizes({**defaults, **values}, "config", "`model.encoder.scratch`")
    except UserError as exc:  # named at the config's line of `scratch`
        raise here(cfg).error(exc.message, "scratch") from None
    try:
        config = AlbertConfig(**values)
    except (TypeError, ValueError) as exc:
        raise here(cfg).error(f"`model.encoder.scratch` is not a valid ALBERT config: {exc}", "scratch") from None
    return config


def build_hf_encoder(cfg: EncoderConfig) -> tuple[nn.Module, Any]:
    """(HF encoder, tokenizer) for training: scratch (random init, offline) or pretrained."""
    from transformers import AutoConfig, AutoModel

    if cfg.scratch is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        return _from_config(scratch_config(cfg, len(tokenizer)), False), tokenizer
    if not cfg.name_or_path:
        raise here(cfg).error("set `model.encoder.name_or_path` (hub id or directory) or `model.encoder.scratch`",
                              "name_or_path", "scratch")
    name = resolve_path(cfg.name_or_path)
    if looks_local(cfg.name_or_path) and not os.path.isdir(name):
        raise UserError("encoder directory not found; check `model.encoder.name_or_path`", cfg.name_or_path)
    try:
        hf_config = fast_activation(AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code))
        tokenizer = load_tokenizer(cfg.tokenizer or name, hf_config.model_type, cfg.trust_remote_code)
        try:
            model = load_pretrained(AutoModel, name, config=hf_config, add_pooling_layer=False,
                                    trust_remote_code=cfg.trust_remote_code)
        except TypeError:  # encoders without a pooler argument
            model = load_pretrained(AutoModel, name, config=hf_config, trust_remote_code=cfg.trust_remote_code)
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise here(cfg).error(f"cannot load encoder {cfg.name_or_path!r}: {str(exc).splitlines()[0]}",
                              "name_or_path") from None
    return model, tokenizer


def load_pretrained(cls: Any, name: str, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained(name, **kwargs)`` without transformers' progress bar and load-report table;
    instead one line of ours says which checkpoint weights were left out (heads the tagger does not use:
    a pooler, an MLM or NSP head), and a warning names weights the checkpoint lacks (they start random)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(name, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    unused, missing = sorted(info.get("unexpected_keys") or ()), sorted(info.get("missing_keys") or ())
    if unused:
        log.info(f"encoder: {len(unused)} weights of {name} that the tagger does not use are left out "
                 f"({_key_groups(unused)})")
    if missing:
        log.warning(f"encoder: {len(missing)} weights are not in {name} and start random "
                    f"({_key_groups(missing)}); is it the checkpoint of another architecture?")
    return model


def _key_groups(keys: Sequence[str], shown: int = 4) -> str:
    """``pooler.*, cls.*``: weight names grouped by their top-level module, the first few groups."""
    groups = list(dict.fromkeys(k.split(".", 1)[0] + ".*" if "." in k else k for k in keys))
    return ", ".join(groups[:shown]) + (f" and {len(groups) - shown} more" if len(groups) > shown else "")


def encoder_from_config_dir(directory: str, trust_remote_code: bool = False) -> nn.Module:
    """The encoder's architecture from a saved model directory (weights are loaded separately)."""
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    return _from_config(hf_config, trust_remote_code)


def fast_activation(hf_config: Any) -> Any:
    """Swap ``gelu_new`` (ALBERT's activation, written as ~6 tensor ops that each keep a saved copy of the
    FFN activations for backward) for ``gelu_pytorch_tanh``: the same tanh-approximated GELU as one fused
    kernel. Same function up to float rounding; a training step on the reference model needs ~40% less
    peak memory."""
    if getattr(hf_config, "hidden_act", None) == "gelu_new":
        hf_config.hidden_act = "gelu_pytorch_tanh"
    return hf_config


def _from_config(hf_config: Any, trust_remote_code: bool) -> nn.Module:
    """A randomly initialised encoder, without the pooler that token labelling never uses."""
    from transformers import AutoModel

    fast_activation(hf_config)
    try:
        return AutoModel.from_config(hf_config, add_pooling_layer=False, trust_remote_code=trust_remote_code)
    except TypeError:
        return AutoModel.from_config(hf_config, trust_remote_code=trust_remote_code)


def max_positions(hf_model: nn.Module) -> int:
    n = getattr(hf_model.config, "max_position_embeddings", 512)
    # RoBERTa-style models reserve padding_idx + 1 positions.
    if getattr(hf_model.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "longformer"}:
        n -= 2
    return int(n)


class ScalarMix(nn.Module):
    """gamma * sum_i softmax(w)_i * h_i over chosen encoder layers (Peters et al., 2018)."""

    def __init__(self, layers: Sequence[int], num_hidden_layers: int) -> None:
        super().__init__()
        available = num_hidden_layers + 1  # hidden_states: the embeddings, then every layer
        for layer in layers:
            if not -available <= layer < available:
                raise UserError(f"`model.encoder.layers`: layer {layer} does not exist (the encoder has "
                                f"{num_hidden_layers} layers; use 0..{num_hidden_layers} or -1..-{available})", "config")
        self.layers = [layer % available for layer in layers]
        self.weights = nn.Parameter(torch.zeros(len(layers)))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``hidden_states``: the HF tuple of (W, S, H) tensors -> their mix (W, S, H)."""
        weights = torch.softmax(self.weights, dim=0).to(hidden_states[0].dtype)
        mixed = sum(w * hidden_states[i] for w, i in zip(weights, self.layers))
        return self.gamma.to(mixed.dtype) * mixed


class Encoder(nn.Module):
    """HF encoder + pooling: windows of subwords (W,S) -> one vector per word (B,T,H*width), ``width`` the
    number of parts of ``pooling`` (a name in ``data.pooling.POOLINGS``)."""

    def __init__(self, hf_model: nn.Module, pooling: str, freeze: bool, dropout: float,
                 layers: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.model = hf_model
        self.mix = ScalarMix(layers, int(hf_model.config.num_hidden_layers)) if layers else None
        self.pooling = pooling
        self.weighted = get_pooling(pooling).weighted  # per map: whether its weights are applied
        self.freeze = freeze
        if freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        hidden = int(hf_model.config.hidden_size)
        self.output_dim = hidden * len(self.weighted)
        self.token_dropout, self.replacement_id = 0.0, 0
        self.register_buffer("special_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def enable_token_dropout(self, rate: float, tokenizer: Any) -> None:
        """Training only: replace each regular subword with the tokenizer's mask token (its unk token if
        it has none) with probability ``rate``; specials and padding are never replaced."""
        replacement = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
        if rate > 0 and replacement is None:
            raise UserError("model.encoder.token_dropout needs a tokenizer with a mask or unk token", "config")
        self.token_dropout, self.replacement_id = rate, int(replacement or 0)
        self.special_ids = torch.tensor(sorted(tokenizer.all_special_ids), dtype=torch.long,
                                        device=self.special_ids.device)

    def _drop_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(W, S) ids with regular subwords replaced at ``token_dropout``; draws from torch's RNG (saved
        in checkpoints), so a resumed run replaces the same subwords."""
        regular = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        drop = (torch.rand(input_ids.shape, device=input_ids.device) < self.token_dropout) & regular
        return input_ids.masked_fill(drop, self.replacement_id)

    def forward(self, batch: Batch[torch.Tensor]) -> torch.Tensor:
        """Returns word vectors (B, T, output_dim); padded positions are zeros."""
        B, T = batch.mask.shape
        input_ids = batch.input_ids
        if self.training and self.token_dropout > 0:
            input_ids = self._drop_tokens(input_ids, batch.attention_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.model(input_ids=input_ids, attention_mask=batch.attention_mask,
                             output_hidden_states=self.mix is not None)
        hidden = out.last_hidden_state if self.mix is None else self.mix(out.hidden_states)
        flat = hidden.reshape(-1, hidden.shape[-1])  # (W*S, H)
        parts = []
        for (src, dst, weight), weighted in zip(batch.pools, self.weighted):
            picked = flat.index_select(0, src)
            if weighted:
                picked = picked * weight.to(picked.dtype)[:, None]
            out = flat.new_zeros(B * T, flat.shape[-1])
            parts.append(out.index_add(0, dst, picked))
        words = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        return self.dropout(words.view(B, T, -1))
