"""Word embeddings and their fusion with the encoder's word vectors (concat | add | none)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import ModelConfig


class WordFusion(nn.Module):
    """Fuses encoder word vectors (B,T,H) with word embeddings looked up from word ids (B,T).

    concat: [encoder ; words] -> (B,T,H+dim); add: proj(encoder) + proj(words) -> (B,T,fusion_dim);
    none: the encoder vectors alone -> (B,T,H) (no word embedding is created).
    """

    def __init__(self, encoder_dim: int, vocab_size: int, cfg: ModelConfig, vectors: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.mode = cfg.fusion
        self.words: Optional[nn.Embedding] = None
        if self.mode == "none":
            self.output_dim = encoder_dim
            return
        dim = cfg.words.dim
        self.words = nn.Embedding(vocab_size, dim, padding_idx=0)
        with torch.no_grad():
            if vectors is not None:
                self.words.weight.copy_(vectors)
            else:
                # GloVe-like scale: comparable to the LayerNorm'd encoder outputs after dropout.
                bound = math.sqrt(3.0 / dim)
                self.words.weight.uniform_(-bound, bound)
                self.words.weight[0].zero_()
        self.words.weight.requires_grad_(not cfg.words.freeze)
        if self.mode == "concat":
            self.output_dim = encoder_dim + dim
        else:
            self.project_encoder = nn.Linear(encoder_dim, cfg.fusion_dim)
            self.project_words = nn.Linear(dim, cfg.fusion_dim, bias=False)
            self.output_dim = cfg.fusion_dim

    def forward(self, encoded: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        if self.words is None:
            return encoded
        words = self.words(word_ids).to(encoded.dtype)
        if self.mode == "concat":
            return torch.cat([encoded, words], dim=-1)
        return self.project_encoder(encoded) + self.project_words(words)
