"""The pretraining network: HF's ``AlbertForPreTraining`` (factorised embeddings, cross-layer sharing,
MLM head tied to the word embeddings, SOP head), built from scratch or from a checkpoint, its losses
and metrics, and the final HF directory that ``model.encoder.name_or_path`` loads unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_directory
from ..config import EncoderConfig
from ..errors import UserError
from ..model.encoder import fast_activation, load_pretrained, load_tokenizer, looks_local, resolve_path, scratch_config
from .config import PretrainEncoder
from .data import IGNORE, Batch


def build_model(cfg: PretrainEncoder) -> tuple[nn.Module, Any, str]:
    """``(AlbertForPreTraining, tokenizer, the config's own hidden_act)``. A checkpoint without MLM/SOP
    heads (an ``AlbertModel``) gets new, randomly initialised heads; its encoder weights are kept."""
    from transformers import AlbertForPreTraining, AutoConfig

    if cfg.scratch is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        hf_config = scratch_config(EncoderConfig(scratch=cfg.scratch), len(tokenizer))
        activation = hf_config.hidden_act
        model = AlbertForPreTraining(fast_activation(hf_config))
        _check_vocabulary(tokenizer, model, cfg.tokenizer)
        return model, tokenizer, activation
    name = resolve_path(cfg.name_or_path or "")
    if looks_local(cfg.name_or_path or "") and not Path(name).is_dir():
        raise UserError("checkpoint directory not found; check `model.encoder.name_or_path`", cfg.name_or_path)
    try:
        hf_config = AutoConfig.from_pretrained(name)
        if hf_config.model_type != "albert":
            raise UserError(f"ner-pretrain continues ALBERT checkpoints; this one is {hf_config.model_type!r}",
                            cfg.name_or_path)
        tokenizer = load_tokenizer(cfg.tokenizer or name, "albert")
        activation = hf_config.hidden_act
        model = load_pretrained(AlbertForPreTraining, name, config=fast_activation(hf_config))
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load checkpoint: {str(exc).splitlines()[0]}", cfg.name_or_path) from None
    _check_vocabulary(tokenizer, model, cfg.tokenizer or name)
    return model, tokenizer, activation


def _check_vocabulary(tokenizer: Any, model: nn.Module, source: str) -> None:
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} pieces, the model's embeddings only "
                        f"{model.config.vocab_size}; drop `vocab_size` from the scratch config or use the "
                        "checkpoint's own tokenizer", source)


@dataclass
class Outputs:
    """One batch's losses (scalars, float32) and counts (0-d long tensors, on the device: no host sync)."""

    mlm_loss: torch.Tensor      # mean cross-entropy over the predicted subwords
    sop_loss: torch.Tensor      # mean cross-entropy over the pairs
    masked: torch.Tensor        # predicted subwords
    mlm_correct: torch.Tensor
    sop_correct: torch.Tensor
    pairs: int

    @property
    def loss(self) -> torch.Tensor:
        return self.mlm_loss + self.sop_loss  # ALBERT's total loss: MLM + SOP, unweighted


def forward(model: nn.Module, batch: Batch) -> Outputs:
    """The pretraining heads of ``model`` (an AlbertForPreTraining) on ``batch``.

    The MLM head runs on the predicted positions only, (M, H) -> (M, V), rather than on every position
    as ``AlbertForPreTraining.forward`` does ((B, S, V) logits): the same loss, the vocabulary projection
    paid for ~15% of the positions only.
    """
    out = model.albert(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       token_type_ids=batch.token_type_ids)
    chosen = batch.mlm_labels != IGNORE                          # (B, S)
    targets = batch.mlm_labels[chosen]                           # (M,)
    logits = model.predictions(out.last_hidden_state[chosen])    # (M, V)
    sop_logits = model.sop_classifier(out.pooler_output)         # (B, 2)
    mlm_loss = nn.functional.cross_entropy(logits.float(), targets) if targets.numel() else logits.float().sum() * 0
    sop_loss = nn.functional.cross_entropy(sop_logits.float(), batch.sop_labels)
    return Outputs(mlm_loss, sop_loss, chosen.sum(), (logits.argmax(-1) == targets).sum(),
                   (sop_logits.argmax(-1) == batch.sop_labels).sum(), int(batch.sop_labels.numel()))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights (BERT/ALBERT practice). The MLM decoder's
    weight is the word embedding matrix itself (tied), listed once."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def save_encoder(model: nn.Module, tokenizer: Any, activation: str, encoder_dir: Path, full_dir: Path) -> None:
    """Two HF directories, each replaced atomically, each with the tokenizer and the config's own activation:

    ``encoder_dir``: the ``AlbertModel`` alone, without its pooler (the SOP head's input), which is exactly
    what ``model.encoder.name_or_path`` builds (``AutoModel``, ``add_pooling_layer=False``): it loads with
    no missing or unexpected weight. ``full_dir``: the whole ``AlbertForPreTraining``, MLM and SOP heads
    included, to continue pretraining from (``name_or_path`` of a later ``ner-pretrain train``).
    """
    from transformers.utils import logging as hf_logging

    fast = model.config.hidden_act
    model.config.hidden_act = activation  # the modules already hold the fused kernel; only the files change
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one shard each: their bars are noise in the run's output
    try:
        encoder = {k: v for k, v in model.albert.state_dict().items() if not k.startswith("pooler.")}
        for directory, network, weights in ((encoder_dir, model.albert, encoder), (full_dir, model, None)):
            with atomic_directory(directory) as tmp:
                network.save_pretrained(str(tmp), state_dict=weights)
                tokenizer.save_pretrained(str(tmp))
    finally:
        model.config.hidden_act = fast
        if was_enabled:
            hf_logging.enable_progress_bar()
