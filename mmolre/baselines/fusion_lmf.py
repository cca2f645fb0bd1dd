"""Low-rank Multimodal Fusion (Liu et al., ACL 2018): TFN's linear map of the outer product with its weight
tensor in rank-R form, W = sum_r lambda_r ⊗_m w_m^(r), computed without forming the product:
h = sum_r lambda_r ∏_m (z^m W_m^(r)) + b, z^m = [h^m; 1] and W_m^(r) a (dim_m + 1) x d factor. A second
"low-rank" idea beside MMoLRE's low-rank experts: here the fusion is low-rank, there the experts are."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.baselines.base import PooledBaseline
from mmolre.baselines.fusion_tfn import with_one


class LowRankFusion(nn.Module):
    def __init__(self, modalities: tuple[str, ...], dim: int, d: int, rank: int):
        super().__init__()
        self.modalities, self.rank, self.d = modalities, rank, d
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.randn(dim + 1, rank * d) * (dim + 1) ** -0.5)
                                         for m in modalities})  # W_m^(r) side by side: (dim + 1, R * d)
        self.weights = nn.Parameter(torch.full((rank,), 1.0 / rank))  # lambda_r
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        product = 1.0
        for m in self.modalities:
            product = product * (with_one(pooled[m]) @ self.factors[m]).view(-1, self.rank, self.d)  # (B, R, d)
        return (product * self.weights[:, None]).sum(1) + self.bias


class Model(PooledBaseline):
    def make_fusion(self, cfg):
        return LowRankFusion(cfg.modalities, cfg.fusion_dim, cfg.d_model, cfg.fusion_rank)
