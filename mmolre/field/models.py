"""The field's model of an arch (lf_dnn, tfn, lmf, mult, misa) from its config and feature widths."""

from __future__ import annotations

from torch import nn

from mmolre.field.lf_dnn import LFDNN
from mmolre.field.lmf import LMF
from mmolre.field.misa import MISA
from mmolre.field.mult import MulT
from mmolre.field.presets import FieldConfig
from mmolre.field.tfn import TFN

MODELS = {"lf_dnn": LFDNN, "tfn": TFN, "lmf": LMF, "mult": MulT, "misa": MISA}


def build(arch: str, cfg: FieldConfig, dims: tuple[int, int, int], bert: nn.Module | None = None) -> nn.Module:
    """The model; MISA's BERT is `bert`, else cfg.pretrained loaded with transformers (a local folder or a hub id:
    offline, only a folder or the cache)."""
    if arch != "misa":
        return MODELS[arch](cfg, dims)
    if bert is None:
        from transformers import BertModel

        bert = BertModel.from_pretrained(cfg.pretrained)
    return MISA(cfg, dims, bert)
