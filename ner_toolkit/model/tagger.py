"""The network: encoder -> pooled word vectors (+) word embeddings -> BiLSTM -> emissions -> CRF."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import LearningRates, ModelConfig
from ..data.batching import Batch
from ..data.vectors import PretrainedVectors
from .bilstm import BiLSTM
from .crf import CRF
from .crf.partial import with_unknown_row
from .embeddings import WordFusion
from .encoder import Encoder

Constraints = tuple[list[bool], list[bool], list[list[bool]]]


class Tagger(nn.Module):
    """Sequence labeller over batches from ``Collator``; K = number of internal labels."""

    def __init__(self, cfg: ModelConfig, hf_encoder: nn.Module, num_labels: int, vocab_size: int,
                 constraints: Optional[Constraints], vectors: Optional[PretrainedVectors] = None, num_chars: int = 0,
                 pretrained_rows: int = 0) -> None:
        """``vocab_size``: the training vocabulary's rows; ``pretrained_rows``: the vectors file's other words
        (``WordFusion``), taken from ``vectors`` when it is given."""
        super().__init__()
        self.encoder = Encoder(hf_encoder, cfg.encoder.pooling, cfg.encoder.freeze, cfg.encoder.dropout,
                               cfg.encoder.layers)
        self.fusion = WordFusion(self.encoder.output_dim, vocab_size, cfg, vectors, num_chars, pretrained_rows)
        self.dropout = nn.Dropout(cfg.dropout)
        features = self.fusion.output_dim
        self.lstm: Optional[BiLSTM] = None
        if cfg.lstm.enabled:
            self.lstm = BiLSTM(features, cfg.lstm.hidden_size, cfg.lstm.num_layers, cfg.lstm.dropout)
            features = 2 * cfg.lstm.hidden_size
        self.emissions = nn.Linear(features, num_labels)
        self.crf = CRF(num_labels, constraints)
        self.softmax = cfg.decoder == "softmax"
        if self.softmax:
            # No learned transitions: a CRF whose transition scores stay 0 over log-softmax emissions scores a
            # sequence by the product of its token probabilities, restricted to the scheme's legal sequences.
            # Decoding, n-best and confidences then reuse the CRF's exact constrained algorithms.
            for param in self.crf.parameters():
                nn.init.zeros_(param)
                param.requires_grad_(False)

    def enable_partial_labels(self, first: list[list[bool]], pair: list[list[list[bool]]]) -> None:
        """Train from partial labels: ``data.schemes.reading_tables``' ``(U, K)`` and ``(U, K, K)`` tables;
        batches then carry ``known`` tag ids and the loss is the CRF's partial-label NLL."""
        device = self.crf.transitions.device
        self.known_first = with_unknown_row(torch.tensor(first, dtype=torch.bool, device=device))
        self.known_pair = with_unknown_row(torch.tensor(pair, dtype=torch.bool, device=device))

    def compute_emissions(self, batch: Batch) -> torch.Tensor:
        """Emission scores (B, T, K)."""
        x = self.dropout(self.fusion(self.encoder(batch), batch.word_ids, batch.char_ids))
        if self.lstm is not None:
            x = self.dropout(self.lstm(x, batch.lengths))
        return self.emissions(x)

    def crf_scores(self, batch: Batch) -> torch.Tensor:
        """Per-token scores (B, T, K) that ``self.crf`` decodes: the emissions, or their float32
        log-softmax for the softmax decoder."""
        emissions = self.compute_emissions(batch)
        return emissions.float().log_softmax(-1) if self.softmax else emissions

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean negative log-likelihood per sentence (scalar): the CRF's, or the summed token cross-entropy."""
        assert batch.tags is not None, "training batches carry tags"
        if self.softmax:
            log_p = self.crf_scores(batch).gather(2, batch.tags.unsqueeze(2)).squeeze(2)  # (B, T)
            return -(log_p * batch.mask).sum() / batch.mask.shape[0]
        if batch.known is not None:
            return self.crf.partial_nll(self.compute_emissions(batch), batch.known, batch.mask, self.known_first,
                                        self.known_pair, reduction="mean")
        return self.crf(self.compute_emissions(batch), batch.tags, batch.mask, reduction="mean")

    @torch.no_grad()
    def decode(self, batch: Batch) -> torch.Tensor:
        """Best legal label ids (B, T) on the model's device, 0 beyond each length."""
        paths, _ = self.crf.decode(self.crf_scores(batch), batch.mask)
        return paths

    def param_groups(self, lr: LearningRates, weight_decay: float) -> list[dict]:
        """AdamW groups, each with its own learning rate; no decay on biases, norms, embeddings tables of words, CRF."""
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("encoder.mix."):
                part = "lstm"  # the layer mix is task-specific: it learns at the task's rate
            elif name.startswith("encoder."):
                part = "encoder"
            elif name.startswith(("fusion.words.", "fusion.chars.embedding.")):
                part = "words"
            elif name.startswith("crf."):
                part = "crf"
            else:
                part = "lstm"
            no_decay = part in ("crf", "words") or param.ndim < 2 or "norm" in name.lower()
            groups.setdefault((part, no_decay), []).append(param)
        return [{"name": part + ("" if not nd else "_no_decay"), "params": params, "lr": getattr(lr, part),
                 "weight_decay": 0.0 if nd else weight_decay}
                for (part, nd), params in sorted(groups.items())]
