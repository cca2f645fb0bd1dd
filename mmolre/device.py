"""The torch device a stage runs on."""

from __future__ import annotations

import torch

from mmolre import MmolreError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MmolreError("device=cuda but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)
