"""A bidirectional LSTM over padded batches that is exact per sentence without packing.

``pack_padded_sequence`` makes the CPU LSTM fall back to a per-step path about 2x slower than the
fused kernel on padded input. Padding only ever disturbs the backward direction (it would read the
pads first), so the backward direction runs forward over each sentence reversed *within its own
length*: valid tokens first, pads last, then the outputs are reversed back. Outputs at valid
positions equal those of a packed ``nn.LSTM``; outputs at padded positions are meaningless.
"""
from __future__ import annotations

import torch
from torch import nn


def reverse_index(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, T) gather index that reverses each row's first ``lengths[b]`` positions and keeps the rest."""
    steps = torch.arange(total, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(steps < lengths, lengths - 1 - steps, steps)


class BiLSTM(nn.Module):
    """Stacked BiLSTM: (B, T, input_size) -> (B, T, 2 * hidden_size); dropout between layers."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(num_layers):
            size = input_size if layer == 0 else 2 * hidden_size
            self.forward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
            self.backward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, D), ``lengths`` (B,) -> (B, T, 2H)."""
        index = reverse_index(lengths, x.shape[1]).unsqueeze(2)  # (B, T, 1)
        for layer, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if layer > 0:
                x = self.dropout(x)
            ahead, _ = fwd(x)
            reversed_x = x.gather(1, index.expand(-1, -1, x.shape[2]))
            behind, _ = bwd(reversed_x)
            behind = behind.gather(1, index.expand(-1, -1, behind.shape[2]))
            x = torch.cat([ahead, behind], dim=-1)
        return x
