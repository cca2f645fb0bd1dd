"""Late fusion (the LF-DNN baseline of the MMSA toolkit; Yu et al., ACL 2020 list it as the simplest fusion):
the modalities' pooled vectors concatenated, then one linear layer to d_model."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.baselines.base import PooledBaseline


class Concatenation(nn.Module):
    def __init__(self, modalities: tuple[str, ...], dim: int, d: int):
        super().__init__()
        self.modalities = modalities
        self.linear = nn.Linear(len(modalities) * dim, d)

    def forward(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat([pooled[m] for m in self.modalities], -1))


class Model(PooledBaseline):
    def make_fusion(self, cfg):
        return Concatenation(cfg.modalities, cfg.fusion_dim, cfg.d_model)
