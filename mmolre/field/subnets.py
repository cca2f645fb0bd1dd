"""The pre-fusion networks LF-DNN, TFN and LMF share (MMSA's subNets/FeatureNets.py, from TFN's authors)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class SubNet(nn.Module):
    """A time-averaged audio or vision vector: BatchNorm -> Dropout -> three Linear + ReLU."""

    def __init__(self, in_size: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.Sequential(nn.Linear(in_size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, hidden)
        return self.layers(self.drop(self.norm(x)))


class TextSubNet(nn.Module):
    """The text sequence -> a one-layer LSTM's final hidden state -> Linear. MMSA's LSTM runs over every step,
    padding included; with `lengths` it stops at each utterance's last token. (MMSA's dropout here is forced to
    0 for one layer, so there is none.)"""

    def __init__(self, in_size: int, hidden: int, out: int):
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, batch_first=True)
        self.linear = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, in)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(x)
        return self.linear(h[0])


def with_one(h: torch.Tensor) -> torch.Tensor:
    """[1; h] (B, dim + 1): the constant first, as TFN's and LMF's authors put it."""
    return torch.cat([h.new_ones(h.shape[0], 1), h], -1)


def time_average(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(B, T, d) -> (B, d): MMSA's loader averages over all T steps, padding included; with `lengths`, over each
    utterance's own frames. A (B, d) input is taken as already averaged."""
    if x.dim() == 2:
        return x
    if lengths is None:
        return x.mean(1)
    keep = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)
    return (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)
