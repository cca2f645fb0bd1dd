"""How MMSA 2.2.1 trains each of its five models (its trains/singleTask/*.py; docs/field-models.md section 4):
the loss, the optimizer and the parameters it updates, gradient accumulation and value clipping, the learning-rate
schedule. Selection is common to all: the valid loss (a mean of per-batch means, rounded to DECIMALS) must fall by
at least IMPROVEMENT, and training stops after `early_stop` epochs without that. train.py runs these: `optimise`
per mini-batch (accumulation, clipping), `EarlyStopping` per epoch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmolre.field.base import FieldOutput
from mmolre.field.presets import FieldConfig, MISAConfig, MulTConfig

IMPROVEMENT = 1e-6  # the least fall of the valid loss that counts as better
DECIMALS = 4  # the valid loss is rounded to these before it is compared


def optimizer(arch: str, model: nn.Module, cfg: FieldConfig) -> torch.optim.Optimizer:
    """MMSA's optimizer: Adam over what each recipe updates. LF-DNN has weight decay, TFN none; LMF trains its
    factors at factor_lr and the subnets at learning_rate, never fusion_weights and fusion_bias; MulT and MISA
    update everything at one rate (MISA's BERT included), without the weight decay their configs name."""
    if arch == "lf_dnn":
        return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if arch == "lmf":
        subnets = [p for name, p in model.named_parameters() if name.split(".")[0].endswith("_subnet")]
        return torch.optim.Adam([{"params": model.factors(), "lr": cfg.factor_lr},
                                 {"params": subnets, "lr": cfg.learning_rate}], weight_decay=cfg.weight_decay)
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)


def scheduler(cfg: FieldConfig, opt: torch.optim.Optimizer):
    """MulT's ReduceLROnPlateau (x0.1 after `patience` epochs without a lower valid loss); None for the others."""
    if isinstance(cfg, MulTConfig):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=cfg.patience)
    return None


def accumulation(cfg: FieldConfig) -> int:
    """Mini-batches whose summed losses make one step (MulT, MISA); the n mod k left at an epoch's end are never
    applied, as in MMSA."""
    return getattr(cfg, "update_epochs", 1)


def grad_clip(cfg: FieldConfig) -> float | None:
    """clip_grad_value_ after every mini-batch's backward (on the running sum), or None."""
    return getattr(cfg, "grad_clip", None)


def diff_loss(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality: each centred over the batch, rows divided by their (detached) L2 norm + 1e-6, the mean of
    the squared entries of x1^T x2."""
    x1, x2 = x1 - x1.mean(0, keepdim=True), x2 - x2.mean(0, keepdim=True)
    x1 = x1 / (x1.norm(dim=1, keepdim=True).detach() + 1e-6)
    x2 = x2 / (x2.norm(dim=1, keepdim=True).detach() + 1e-6)
    return (x1.T @ x2).pow(2).mean()


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy: ||mean1 - mean2|| + sum_{k=2..moments} ||E(x1 - mean1)^k - E(x2 - mean2)^k||."""
    m1, m2 = x1.mean(0), x2.mean(0)
    total = (m1 - m2).pow(2).sum().sqrt()
    for k in range(2, moments + 1):
        total = total + ((x1 - m1).pow(k).mean(0) - (x2 - m2).pow(k).mean(0)).pow(2).sum().sqrt()
    return total


def misa_terms(states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MISA's three auxiliary losses from the states of its forward."""
    s = states
    pairs = [("private_t", "shared_t"), ("private_v", "shared_v"), ("private_a", "shared_a"),
             ("private_a", "private_t"), ("private_a", "private_v"), ("private_t", "private_v")]
    return {"diff": sum(diff_loss(s[a], s[b]) for a, b in pairs),
            "sim": (cmd(s["shared_t"], s["shared_v"]) + cmd(s["shared_t"], s["shared_a"]) +
                    cmd(s["shared_a"], s["shared_v"])) / 3,
            "recon": sum(F.mse_loss(s[f"recon_{m}"], s[f"orig_{m}"]) for m in "tva") / 3}


def loss(cfg: FieldConfig, out: FieldOutput, target: torch.Tensor) -> torch.Tensor:
    """The training loss of a batch: L1 (MISA: MSE plus its weighted auxiliary terms). target (B, 1)."""
    if not isinstance(cfg, MISAConfig):
        return F.l1_loss(out.prediction, target)
    terms = misa_terms(out.states)
    return (F.mse_loss(out.prediction, target) + cfg.diff_weight * terms["diff"] + cfg.sim_weight * terms["sim"] +
            cfg.recon_weight * terms["recon"])


def eval_loss(cfg: FieldConfig, out: FieldOutput, target: torch.Tensor) -> torch.Tensor:
    """What selection averages per batch: L1, MISA's MSE."""
    return F.mse_loss(out.prediction, target) if isinstance(cfg, MISAConfig) else F.l1_loss(out.prediction, target)
