"""Fusion-only variants after the field's fusion models, on MMoLRE's own footing: the same standardised encoder
features, the same task heads and multi-task loss (model.TaskHeads), the same training, so that only the fusion
differs (`model.arch`). They are not the field's models as their authors trained them, and their names say so.

Every variant starts from MMoLRE's input projection of each modality's sequence (base.py). fusion_mult reads the
sequences; the others read each modality as one pooled vector: the mean over its real positions, then
Linear(d_model -> fusion_dim) + ReLU [ours: the papers' LSTM / DNN subnetworks are replaced by the same pooling
for all]. A variant's `fuse` maps these to a d_model vector; ReLU and dropout follow; both heads read it (one
shared path: the variants have no task-specific branches). A variant with losses of its own (fusion_misa) returns
them weighted from `fuse`; they join the task loss when labels are given.
"""

from __future__ import annotations

import importlib

from mmolre.model_config import VARIANT_ARCHS

MODULES = {arch: f"mmolre.baselines.{arch}" for arch in VARIANT_ARCHS}


def baseline_class(arch: str) -> type:
    return importlib.import_module(MODULES[arch]).Model
