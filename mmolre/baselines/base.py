"""What every fusion-only variant shares (mmolre/baselines/__init__.py says what they are): MMoLRE's input
projections, one fused vector, MMoLRE's heads and loss. The variants import this module, never the package's
registry, so that no import leads back to where they are loaded by name."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.hub import PretrainedMixin
from mmolre.model import InputProjection, MMoLREOutput, TaskHeads, masked_mean, model_input
from mmolre.model_config import MMoLREConfig


class FusionBaseline(nn.Module, PretrainedMixin, TaskHeads):
    """Projected sequences -> `fuse` (a subclass's) -> ReLU, dropout -> the task heads."""

    config_class = MMoLREConfig

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.config = cfg
        self.inputs = nn.ModuleDict({m: InputProjection(cfg.dims[m], cfg.d_model) for m in cfg.modalities})
        self.dropout = nn.Dropout(cfg.dropout)
        self.add_heads(cfg)

    def fuse(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], with_losses: bool):
        """modality -> (B, T_m, d) and (B, T_m) -> the fused (B, d) vector and the baseline's own weighted loss
        (None: it has none; computed only `with_losses`)."""
        raise NotImplementedError

    def forward(self, sentiment=None, emotions=None, return_routing: bool = False, dialogue=None, turn=None,
                **inputs) -> MMoLREOutput:
        """As MMoLRE.forward (no routing: `return_routing` gives an empty dict; no dialogue context)."""
        xs, masks = {}, {}
        for m in self.config.modalities:
            x, masks[m] = model_input(inputs, m)
            xs[m] = self.inputs[m](x)
        labelled = sentiment is not None and emotions is not None
        fused, own_loss = self.fuse(xs, masks, with_losses=labelled)
        fused = self.dropout(torch.relu(fused))
        out = self.head_outputs({task: fused for task in self.config.tasks}, {}, sentiment, emotions)
        if out.loss is not None and own_loss is not None:
            out.loss_aux = own_loss
            out.loss = out.loss + own_loss
        return out


class PooledBaseline(FusionBaseline):
    """A baseline that reads each modality as one pooled vector and fuses them with `make_fusion`'s module."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__(cfg)
        self.unimodal = nn.ModuleDict({m: nn.Linear(cfg.d_model, cfg.fusion_dim) for m in cfg.modalities})
        self.fusion = self.make_fusion(cfg)

    def make_fusion(self, cfg: MMoLREConfig) -> nn.Module:
        raise NotImplementedError

    def pooled(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> (B, fusion_dim): the mean over the real positions, Linear + ReLU."""
        return {m: torch.relu(self.unimodal[m](masked_mean(xs[m], masks[m]))) for m in self.config.modalities}

    def fuse(self, xs, masks, with_losses):
        return self.fusion(self.pooled(xs, masks)), None
