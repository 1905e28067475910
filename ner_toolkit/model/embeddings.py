"""Word and character-CNN embeddings and their fusion with the encoder's word vectors (concat | add | none)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import ModelConfig
from ..data.vectors import PretrainedVectors
from ..data.vocab import UNK_ID


class CharCNN(nn.Module):
    """Character CNN word vectors: (B, T, L) character ids -> (B, T, filters), max-pooled over characters."""

    def __init__(self, num_chars: int, dim: int, filters: int, kernel_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, kernel_size, padding=kernel_size // 2)
        self.output_dim = filters

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        B, T, L = char_ids.shape
        x = self.embedding(char_ids.view(B * T, L)).transpose(1, 2)  # (B*T, dim, L)
        h = self.conv(x)[:, :, :L]  # (B*T, filters, L); an even kernel adds one position
        h = h.masked_fill((char_ids.view(B * T, 1, L) == 0), float("-inf")).amax(2)
        return h.masked_fill(torch.isinf(h), 0.0).view(B, T, -1)  # words of padding: zeros


class WordFusion(nn.Module):
    """Fuses encoder word vectors (B,T,H) with word embeddings looked up from word ids (B,T).

    concat: [encoder ; words] -> (B,T,H+dim); add: proj(encoder) + proj(words) -> (B,T,fusion_dim);
    none: the encoder vectors alone -> (B,T,H) (no word embedding is created).
    """

    def __init__(self, encoder_dim: int, vocab_size: int, cfg: ModelConfig, vectors: Optional[PretrainedVectors] = None,
                 num_chars: int = 0, pretrained_rows: int = 0) -> None:
        """``vocab_size``: the training vocabulary (trainable rows); ``pretrained_rows``: words only the vectors
        file had (ids from ``vocab_size`` on), a float16 buffer that never trains (no gradient could reach
        them: training never reads those words) and is saved with the weights."""
        super().__init__()
        self.mode = cfg.fusion
        self.words: Optional[nn.Embedding] = None
        self.chars: Optional[CharCNN] = None
        self.pretrained: Optional[torch.Tensor]
        self.register_buffer("pretrained", None)
        if self.mode == "none":
            self.output_dim = encoder_dim
            return
        if cfg.chars.enabled:
            c = cfg.chars
            self.chars = CharCNN(num_chars, c.dim, c.filters, c.kernel_size)
        char_dim = self.chars.output_dim if self.chars is not None else 0
        dim = cfg.words.dim
        self.words = nn.Embedding(vocab_size, dim, padding_idx=0)
        if vectors is not None:
            pretrained_rows = len(vectors.words)
        if pretrained_rows:
            self.pretrained = torch.zeros(pretrained_rows, dim, dtype=torch.float16)
        with torch.no_grad():
            if vectors is not None:
                self.words.weight.copy_(vectors.matrix)
                if pretrained_rows:
                    self.pretrained.copy_(vectors.extra)
            else:
                # GloVe-like scale: comparable to the LayerNorm'd encoder outputs after dropout.
                bound = math.sqrt(3.0 / dim)
                self.words.weight.uniform_(-bound, bound)
                self.words.weight[0].zero_()
        self.words.weight.requires_grad_(not cfg.words.freeze)
        self.unk_dropout = cfg.words.unk_dropout
        if self.mode == "concat":
            self.output_dim = encoder_dim + dim + char_dim
        else:
            self.project_encoder = nn.Linear(encoder_dim, cfg.fusion_dim)
            self.project_words = nn.Linear(dim + char_dim, cfg.fusion_dim, bias=False)
            self.output_dim = cfg.fusion_dim

    def forward(self, encoded: torch.Tensor, word_ids: torch.Tensor, char_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B,T,H) encoder vectors, (B,T) word ids, (B,T,L) char ids -> (B,T,output_dim)."""
        if self.words is None:
            return encoded
        if self.training and self.unk_dropout > 0:
            # Word-level dropout to <unk> (padding stays padding): draws from torch's RNG, which
            # checkpoints save, so a resumed run replaces the same tokens.
            drop = (torch.rand(word_ids.shape, device=word_ids.device) < self.unk_dropout) & (word_ids != 0)
            word_ids = word_ids.masked_fill(drop, UNK_ID)
        words = self.lookup(word_ids).to(encoded.dtype)
        if self.chars is not None:
            assert char_ids is not None, "a model with chars needs batches with char_ids"
            words = torch.cat([words, self.chars(char_ids).to(encoded.dtype)], dim=-1)
        if self.mode == "concat":
            return torch.cat([encoded, words], dim=-1)
        return self.project_encoder(encoded) + self.project_words(words)

    def lookup(self, word_ids: torch.Tensor) -> torch.Tensor:
        """(B,T) word ids -> (B,T,dim) vectors: trainable rows below ``words.num_embeddings``, the float16
        pretrained-only rows above."""
        assert self.words is not None
        if self.pretrained is None:
            return self.words(word_ids)
        n = self.words.num_embeddings
        trained = word_ids < n
        own = self.words(word_ids.masked_fill(~trained, 0))
        other = self.pretrained[(word_ids - n).clamp(min=0)].to(own.dtype)
        return torch.where(trained.unsqueeze(-1), own, other)
