"""LF-DNN (late fusion DNN; MMSA's models/singleTask/LF_DNN.py): the audio, vision and text vectors of the
subnets concatenated -> Dropout -> two Linear + ReLU -> Linear to the sentiment."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.field.base import FieldOutput
from mmolre.field.presets import LFDNNConfig
from mmolre.field.subnets import SubNet, TextSubNet, time_average


class PostFusion(nn.Module):
    """Dropout -> Linear + ReLU -> Linear + ReLU (the features) -> Linear (the prediction)."""

    def __init__(self, in_size: int, dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(nn.Linear(in_size, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.out = nn.Linear(dim, 1)

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.layers(self.dropout(fused))
        return self.out(features), features


class SubNets(nn.Module):
    """What LF-DNN, TFN and LMF share: audio and vision SubNets over time averages, the text LSTM."""

    def __init__(self, dims: tuple[int, int, int], hidden_dims: tuple[int, int, int], text_out: int,
                 dropouts: tuple[float, ...]):
        super().__init__()
        (dt, da, dv), (ht, ha, hv) = dims, hidden_dims
        self.audio_subnet = SubNet(da, ha, dropouts[0])
        self.video_subnet = SubNet(dv, hv, dropouts[1])
        self.text_subnet = TextSubNet(dt, ht, text_out)

    def encode(self, text, audio, vision, lengths=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio, vision, text) vectors, in MMSA's order."""
        lt, la, lv = lengths if lengths is not None else (None,) * 3
        return (self.audio_subnet(time_average(audio, la)), self.video_subnet(time_average(vision, lv)),
                self.text_subnet(text, lt))


class LFDNN(SubNets):
    def __init__(self, cfg: LFDNNConfig, dims: tuple[int, int, int]):
        super().__init__(dims, cfg.hidden_dims, cfg.text_out, cfg.dropouts)
        _, ha, hv = cfg.hidden_dims
        self.post_fusion = PostFusion(cfg.text_out + ha + hv, cfg.post_fusion_dim, cfg.dropouts[3])
        self.features_dim = cfg.post_fusion_dim

    def forward(self, text, audio, vision, lengths=None) -> FieldOutput:
        prediction, features = self.post_fusion(torch.cat(self.encode(text, audio, vision, lengths), -1))
        return FieldOutput(prediction, features)
