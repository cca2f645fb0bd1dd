"""MISA (Hazarika et al., ACM MM 2020): each modality's utterance vector u_m projected into a modality-invariant
subspace by one shared encoder, h_m^c = E_c(u_m), and into its own modality-specific subspace, h_m^p = E_p^m(u_m)
(each Linear + sigmoid); the 2M vectors as a sequence through a Transformer encoder layer (multi-head
self-attention), concatenated, then a linear layer to d_model. Three losses of its own shape the subspaces:

  L_sim   = mean over modality pairs of CMD_K(H_m1^c, H_m2^c): the invariant vectors share their distribution
            (central moment discrepancy, K = 5 moments; sigmoid outputs lie in [0, 1], so its 1/|b - a|^k are 1);
  L_diff  = sum_m D(H_m^c, H_m^p) + sum_{m1 < m2} D(H_m1^p, H_m2^p): soft orthogonality, D(A, B) the mean squared
            entry of Â^T B̂ with Â the batch matrix centred per column and each row scaled to unit L2 norm (as
            MISA's released code, which keeps the scale independent of batch and width; the paper writes the
            squared Frobenius norm, which is this times the width squared);
  L_recon = mean over modalities of the mean squared error of u_m against D(h_m^c + h_m^p), one shared decoder.

The model adds sim_weight L_sim + diff_weight L_diff + recon_weight L_recon to the task loss (model.misa_*).
u_m is the pooled vector every pooled baseline reads (mmolre/baselines/__init__.py), fusion_dim wide.
"""

from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from mmolre.baselines.base import PooledBaseline

MOMENTS = 5  # K of CMD [paper]


def central_moment_discrepancy(x: torch.Tensor, y: torch.Tensor, moments: int = MOMENTS) -> torch.Tensor:
    """CMD_K of two batches (B, w) on [0, 1]: ||E x - E y|| + sum_{k=2..K} ||c_k(x) - c_k(y)||, c_k the k-th
    central moment per dimension."""
    mx, my = x.mean(0), y.mean(0)
    total = torch.linalg.vector_norm(mx - my)
    for k in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(((x - mx) ** k).mean(0) - ((y - my) ** k).mean(0))
    return total


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D(A, B): the mean squared entry of Â^T B̂ (B, w batches centred per column, rows scaled to unit norm)."""
    def normalised(h):
        h = h - h.mean(0, keepdim=True)
        return h / (torch.linalg.vector_norm(h, dim=1, keepdim=True) + 1e-6)

    return ((normalised(a).T @ normalised(b)) ** 2).mean()


def misa_losses(u: dict, invariant: dict, specific: dict, reconstructed: dict) -> dict[str, torch.Tensor]:
    """L_sim, L_diff, L_recon (above) from modality -> (B, w) vectors."""
    modalities = list(u)
    pairs = list(combinations(modalities, 2))
    sim = (sum(central_moment_discrepancy(invariant[a], invariant[b]) for a, b in pairs) / len(pairs) if pairs
           else u[modalities[0]].new_zeros(()))
    diff = sum(orthogonality(invariant[m], specific[m]) for m in modalities)
    diff = diff + sum((orthogonality(specific[a], specific[b]) for a, b in pairs), u[modalities[0]].new_zeros(()))
    recon = sum(((u[m] - reconstructed[m]) ** 2).mean() for m in modalities) / len(modalities)
    return {"sim": sim, "diff": diff, "recon": recon}


class Model(PooledBaseline):
    def __init__(self, cfg):
        super().__init__(cfg)
        f = cfg.fusion_dim
        self.invariant = nn.Sequential(nn.Linear(f, f), nn.Sigmoid())  # E_c, shared by the modalities
        self.specific = nn.ModuleDict({x: nn.Sequential(nn.Linear(f, f), nn.Sigmoid()) for x in cfg.modalities})
        self.decoder = nn.Linear(f, f)
        self.transformer = nn.TransformerEncoderLayer(f, cfg.n_heads, 4 * f, cfg.dropout, batch_first=True)
        self.loss_weights = {"sim": cfg.misa_sim_weight, "diff": cfg.misa_diff_weight, "recon": cfg.misa_recon_weight}

    def make_fusion(self, cfg):
        """The linear layer from the 2M attended subspace vectors to d_model."""
        return nn.Linear(2 * len(cfg.modalities) * cfg.fusion_dim, cfg.d_model)

    def fuse(self, xs, masks, with_losses):
        u = self.pooled(xs, masks)
        invariant = {m: self.invariant(u[m]) for m in u}
        specific = {m: self.specific[m](u[m]) for m in u}
        tokens = torch.stack([*invariant.values(), *specific.values()], 1)  # (B, 2M, f)
        fused = self.fusion(self.transformer(tokens).flatten(1))
        if not with_losses:
            return fused, None
        reconstructed = {m: self.decoder(invariant[m] + specific[m]) for m in u}
        losses = misa_losses(u, invariant, specific, reconstructed)
        return fused, sum(self.loss_weights[k] * losses[k] for k in losses)
