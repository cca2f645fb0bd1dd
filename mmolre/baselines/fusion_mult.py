"""Multimodal Transformer (Tsai et al., ACL 2019), on the unaligned sequences: for each target modality β and
each other modality α a crossmodal transformer CM_{α→β} (L layers whose queries come from β and whose keys and
values come from α, so β's positions gather α's without any word alignment); the targets' streams from all
sources concatenated, then a self-attention transformer of L layers; the last real position of each target's
sequence; all targets concatenated, then a linear layer to d_model.

Layers are pre-norm, as the paper's: Z <- Z + MHA(LN(Z), LN(X_α)); Z <- Z + FFN(LN(Z)), FFN of width 4x, a
LayerNorm after each transformer. Sinusoidal positions are added to the projected inputs [ours: MMoLRE's input
projection replaces MulT's temporal convolution]. Masks: no position attends to padding, a modality absent in a
sample (mask all False) contributes zero, and its own last element is zero. With one modality there is no
crossmodal part: its sequence goes to the self-attention transformer directly [ours].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmolre.baselines.base import FusionBaseline
from mmolre.model import attend_present


def sinusoid(length: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """(length, d) sinusoidal position encodings (Vaswani et al.), sin on the even and cos on the odd widths."""
    position = torch.arange(length, dtype=like.dtype, device=like.device)[:, None]
    frequency = torch.exp(torch.arange(0, d, 2, dtype=like.dtype, device=like.device) * (-math.log(10000.0) / d))
    table = torch.zeros(length, d, dtype=like.dtype, device=like.device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d // 2]
    return table


class AttentionLayer(nn.Module):
    """One pre-norm transformer layer; crossmodal (keys from another sequence, with their own LayerNorm) or
    self-attention (keys = the layer's own input)."""

    def __init__(self, d: int, heads: int, dropout: float, cross: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.norm_keys = nn.LayerNorm(d) if cross else None
        self.attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor, keys: torch.Tensor | None, key_mask: torch.Tensor) -> torch.Tensor:
        """z (B, T_q, d); keys (B, T_k, d) and their mask (B, T_k), or None and z's own mask."""
        query = self.norm(z)
        keys = query if keys is None else self.norm_keys(keys)
        z = z + self.dropout(attend_present(self.attention, query, keys, key_mask))
        return z + self.dropout(self.ff(self.norm_ff(z)))


class Transformer(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, layers: int, cross: bool):
        super().__init__()
        self.layers = nn.ModuleList(AttentionLayer(d, heads, dropout, cross) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, z, keys, key_mask):
        for layer in self.layers:
            z = layer(z, keys, key_mask)
        return self.norm(z)


def last_real(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, w), (B, T) -> (B, w): the vector at each sample's last real position (zero when it has none)."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, steps, -1).max(1).values  # (B,)
    picked = z[torch.arange(z.shape[0], device=z.device), last.clamp(min=0)]
    return torch.where((last >= 0)[:, None], picked, torch.zeros_like(picked))


def sources_of(modalities: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """target -> the modalities its crossmodal transformers read (none with one modality)."""
    return {target: tuple(m for m in modalities if m != target) for target in modalities}


class Model(FusionBaseline):
    def __init__(self, cfg):
        super().__init__(cfg)
        d, h, p, n = cfg.d_model, cfg.n_heads, cfg.dropout, cfg.mult_layers
        self.sources = sources_of(cfg.modalities)
        self.crossmodal = nn.ModuleDict({f"{s}_to_{t}": Transformer(d, h, p, n, cross=True)
                                         for t, sources in self.sources.items() for s in sources})
        width = {t: d * max(len(sources), 1) for t, sources in self.sources.items()}
        self.self_attention = nn.ModuleDict({t: Transformer(width[t], h, p, n, cross=False) for t in width})
        self.out = nn.Linear(sum(width.values()), d)

    def fuse(self, xs, masks, with_losses):
        xs = {m: x + sinusoid(x.shape[1], x.shape[2], x) for m, x in xs.items()}
        last = []
        for target, sources in self.sources.items():
            streams = [self.crossmodal[f"{s}_to_{target}"](xs[target], xs[s], masks[s]) for s in sources]
            z = torch.cat(streams, -1) if streams else xs[target]
            last.append(last_real(self.self_attention[target](z, None, masks[target]), masks[target]))
        return self.out(torch.cat(last, -1)), None
