"""TFN (Zadeh et al., EMNLP 2017; MMSA's models/singleTask/TFN.py): the outer product of [1; audio], [1; vision]
and [1; text], flattened, -> LF-DNN's post-fusion layers -> sigmoid scaled to (-3, 3) (on every corpus, SIMS
too, as MMSA does)."""

from __future__ import annotations

import torch

from mmolre.field.base import FieldOutput
from mmolre.field.lf_dnn import PostFusion, SubNets
from mmolre.field.presets import SubNetConfig
from mmolre.field.subnets import with_one


def tensor_fusion(a: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, (ha+1)(hv+1)(ht+1)): [1; a] ⊗ [1; v] ⊗ [1; t], flattened with the audio index outermost."""
    av = (with_one(a)[:, :, None] * with_one(v)[:, None, :]).flatten(1)
    return (av[:, :, None] * with_one(t)[:, None, :]).flatten(1)


class TFN(SubNets):
    def __init__(self, cfg: SubNetConfig, dims: tuple[int, int, int]):
        super().__init__(dims, cfg.hidden_dims, cfg.text_out, cfg.dropouts)
        _, ha, hv = cfg.hidden_dims
        self.post_fusion = PostFusion((cfg.text_out + 1) * (ha + 1) * (hv + 1), cfg.post_fusion_dim,
                                      cfg.dropouts[3])
        self.features_dim = cfg.post_fusion_dim

    def forward(self, text, audio, vision, lengths=None) -> FieldOutput:
        prediction, features = self.post_fusion(tensor_fusion(*self.encode(text, audio, vision, lengths)))
        return FieldOutput(torch.sigmoid(prediction) * 6 - 3, features)
