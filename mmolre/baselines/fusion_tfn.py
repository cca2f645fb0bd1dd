"""Tensor Fusion Network (Zadeh et al., EMNLP 2017): each modality's vector extended by a constant 1,
z^m = [h^m; 1], their outer product z^t ⊗ z^a (so the fusion holds every unimodal vector, every bimodal product
and the constant), flattened to (d_t + 1)(d_a + 1) entries, then a linear layer to d_model."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.baselines.base import PooledBaseline


def with_one(h: torch.Tensor) -> torch.Tensor:
    """[h; 1] (B, dim + 1)."""
    return torch.cat([h, h.new_ones(h.shape[0], 1)], -1)


def tensor_fusion(vectors: list[torch.Tensor]) -> torch.Tensor:
    """(B, prod_m (dim_m + 1)): the flattened outer product of the [h^m; 1] (elementwise, in modality order)."""
    fused = with_one(vectors[0])
    for h in vectors[1:]:
        fused = (fused[:, :, None] * with_one(h)[:, None, :]).flatten(1)
    return fused


class TensorFusion(nn.Module):
    def __init__(self, modalities: tuple[str, ...], dim: int, d: int):
        super().__init__()
        self.modalities = modalities
        self.linear = nn.Linear((dim + 1) ** len(modalities), d)

    def forward(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(tensor_fusion([pooled[m] for m in self.modalities]))


class Model(PooledBaseline):
    def make_fusion(self, cfg):
        return TensorFusion(cfg.modalities, cfg.fusion_dim, cfg.d_model)
