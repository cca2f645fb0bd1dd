"""The field's fusion baselines on MMoLRE's own footing: the same standardised encoder features, the same task
heads and multi-task loss (model.TaskHeads), the same training, so that only the fusion differs (`model.arch`).

Each baseline reads every modality as one pooled vector: its input projection (as MMoLRE's), the mean over
its real positions, then Linear(d_model -> fusion_dim) + ReLU [ours: the papers' LSTM / DNN subnetworks
are replaced by the same pooling for all]. Its fusion module (one per paper, in this package) maps the
pooled vectors to a d_model vector; ReLU and dropout follow; both heads read it (one shared path: the
baselines have no task-specific branches).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from mmolre.hub import PretrainedMixin
from mmolre.model import InputProjection, MMoLREOutput, TaskHeads, masked_mean
from mmolre.model_config import MMoLREConfig

MODULES = {"late_fusion": "mmolre.baselines.late_fusion", "tfn": "mmolre.baselines.tfn",
           "lmf": "mmolre.baselines.lmf"}


def baseline_class(arch: str) -> type:
    return importlib.import_module(MODULES[arch]).Model


class FusionBaseline(nn.Module, PretrainedMixin, TaskHeads):
    """Pooled unimodal vectors -> `fusion` (a subclass's `make_fusion`) -> ReLU, dropout -> the task heads."""

    config_class = MMoLREConfig

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.config = cfg
        dims = {"text": cfg.text_dim, "audio": cfg.audio_dim}
        self.inputs = nn.ModuleDict({m: InputProjection(dims[m], cfg.d_model) for m in cfg.modalities})
        self.unimodal = nn.ModuleDict({m: nn.Linear(cfg.d_model, cfg.fusion_dim) for m in cfg.modalities})
        self.fusion = self.make_fusion(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.add_heads(cfg)

    @classmethod
    def build(cls, config: MMoLREConfig) -> nn.Module:
        return baseline_class(config.arch)(config)

    def make_fusion(self, cfg: MMoLREConfig) -> nn.Module:
        raise NotImplementedError

    def pooled(self, inputs: dict) -> dict[str, torch.Tensor]:
        """modality -> (B, fusion_dim): projected, mean over the real positions, Linear + ReLU."""
        out = {}
        for m in self.config.modalities:
            x, mask = inputs[m]
            if x is None:
                raise ValueError(f"this model reads {m}: pass {m} and {m}_mask")
            out[m] = torch.relu(self.unimodal[m](masked_mean(self.inputs[m](x), mask)))
        return out

    def forward(self, text=None, text_mask=None, audio=None, audio_mask=None, sentiment=None, emotions=None,
                return_routing: bool = False, dialogue=None, turn=None) -> MMoLREOutput:
        """As MMoLRE.forward (no routing: `return_routing` gives an empty dict; no dialogue context)."""
        pooled = self.pooled({"text": (text, text_mask), "audio": (audio, audio_mask)})
        fused = self.dropout(torch.relu(self.fusion(pooled)))
        return self.head_outputs({task: fused for task in self.config.tasks}, {}, sentiment, emotions)
