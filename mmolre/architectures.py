"""Every model mmolre trains, by its config's `arch`: MMoLRE (mmolre/model.py), a fusion baseline on the same
inputs, heads and loss (mmolre/baselines/, which build on the model's pieces), or a field model as MMSA trains it
(mmolre/field/). Building a model of any arch and
loading a saved one go through here, so that the model and the baselines never import each other."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mmolre.baselines import baseline_class
from mmolre.hub import CONFIG_NAME, origin, resolve
from mmolre.model import MMoLRE
from mmolre.field.model import FieldModel
from mmolre.model_config import FIELD_ARCHS, MMoLREConfig


def model_class(arch: str) -> type:
    if arch in FIELD_ARCHS:
        return FieldModel
    return MMoLRE if arch == "mmolre" else baseline_class(arch)


def build_model(cfg: MMoLREConfig) -> nn.Module:
    """The model of `cfg.arch`: MMoLRE, or a baseline with the same heads and loss."""
    return model_class(cfg.arch)(cfg)


def saved_arch(folder: Path) -> str:
    """The arch a model folder was saved with (mmolre when it cannot tell: loading then says what is wrong)."""
    try:
        return json.loads((folder / CONFIG_NAME).read_text())["model"].get("arch", "mmolre")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return "mmolre"


def from_pretrained(name_or_path: str | Path, device: torch.device | str = "cpu", revision: str | None = None):
    """The model (eval mode) of a folder written by save_pretrained, or of a hub repository id, whatever its arch."""
    folder = resolve(name_or_path, revision)
    model = model_class(saved_arch(folder)).from_pretrained(folder, device)
    model.provenance |= origin(name_or_path, folder)
    return model
