"""LMF (Liu et al., ACL 2018; MMSA's models/singleTask/LMF.py): per modality r factors W_m (h_m + 1, 1);
M = sum_r w_r prod_m [1; h_m] W_m,r + b. The text LSTM gives hidden_dims[0] // 2. As in MMSA, the post-fusion
dropout is never applied, and `fusion_weights` and `fusion_bias` are parameters that its recipe never trains."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.field.base import FieldOutput
from mmolre.field.lf_dnn import SubNets
from mmolre.field.presets import LMFConfig
from mmolre.field.subnets import with_one


def factor(rank: int, dim: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, dim + 1, 1)))


class LMF(SubNets):
    def __init__(self, cfg: LMFConfig, dims: tuple[int, int, int]):
        ht, ha, hv = cfg.hidden_dims
        super().__init__(dims, cfg.hidden_dims, ht // 2, cfg.dropouts)
        self.audio_factor, self.video_factor, self.text_factor = factor(cfg.rank, ha), factor(cfg.rank, hv), \
            factor(cfg.rank, ht // 2)
        self.fusion_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, cfg.rank)))
        self.fusion_bias = nn.Parameter(torch.zeros(1, 1))
        self.features_dim = cfg.rank

    def factors(self) -> list[nn.Parameter]:
        return [self.audio_factor, self.video_factor, self.text_factor]

    def forward(self, text, audio, vision, lengths=None) -> FieldOutput:
        a, v, t = self.encode(text, audio, vision, lengths)
        products = (with_one(a) @ self.audio_factor) * (with_one(v) @ self.video_factor) * \
            (with_one(t) @ self.text_factor)  # (r, B, 1)
        features = products[..., 0].T  # (B, r)
        return FieldOutput(features @ self.fusion_weights.T + self.fusion_bias, features)
