"""What the field's models share: their output, MMSA's parameter count, loading MMSA's saved weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FieldOutput:
    prediction: torch.Tensor                 # (B, 1): MMSA's `M`
    features: torch.Tensor                   # (B, k): what the output layer reads
    states: dict[str, torch.Tensor] = field(default_factory=dict)  # what the recipe's extra losses read (MISA)


# state-dict entries of MMSA's models that mmolre keeps as constants, not state: TFN's output range and shift,
# the `version` buffer of MulT's encoders
MMSA_ONLY = ("Model.output_range", "Model.output_shift", ".version")


def load_mmsa_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the state dict of MMSA's model (its AMIO wrapper's, as MMSA saves it) into `model`: entries pair in
    order, every shape checked, MMSA's constants (MMSA_ONLY) left out."""
    theirs = [(k, v) for k, v in state.items() if not k.endswith(MMSA_ONLY)]
    ours = list(model.state_dict().items())
    if len(theirs) != len(ours):
        raise ValueError(f"MMSA's state has {len(theirs)} entries, {type(model).__name__} {len(ours)}: not the "
                         "same model or preset")
    loaded = {}
    for (name, mine), (their_name, value) in zip(ours, theirs):
        if mine.shape != value.shape:
            raise ValueError(f"{their_name} {tuple(value.shape)} does not fit {name} {tuple(mine.shape)}: not the "
                             "same model or preset")
        loaded[name] = value
    model.load_state_dict(loaded)


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, counted as MMSA logs them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
