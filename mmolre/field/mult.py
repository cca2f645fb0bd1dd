"""MulT (Tsai et al., ACL 2019; MMSA's models/singleTask/MULT.py and subNets/transformers_encoder/):
1. each stream -> Conv1d(d_m -> d, k_m, no padding, no bias) (the text after Dropout(text_dropout));
2. six crossmodal encoders (l<-a, l<-v, a<-l, a<-v, v<-l, v<-a), whose attention dropout follows the source;
3. per target the two concatenated (2d) -> a self-attention "memory" encoder of max(nlevels, 3) layers;
4. the last step of each -> u (6d) -> u + Linear(Dropout(ReLU(Linear(u)))) -> Linear to the sentiment.
The encoder is pre-LN, scales its inputs by sqrt(width), has no positional embedding and a causal mask.
MMSA reads the last padded step and lets every query see the padding; with `lengths`, each utterance's last real
step is read and padded keys are masked."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmolre.field.base import FieldOutput
from mmolre.field.presets import MulTConfig

STREAMS = ("l", "a", "v")


def causal_mask(tq: int, tk: int, device) -> torch.Tensor:
    """(tq, tk), True = not seen: above the diagonal offset by 1 + |tk - tq| (MMSA's buffered_future_mask)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).triu(1 + abs(tk - tq))


class EncoderLayer(nn.Module):
    """Pre-LN: LN -> attention (keys and values through the query's LN) -> dropout -> add; LN -> Linear(w -> 4w)
    + ReLU -> dropout -> Linear -> dropout -> add."""

    def __init__(self, width: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=attn_dropout)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.norms = nn.ModuleList([nn.LayerNorm(width), nn.LayerNorm(width)])
        self.relu_dropout, self.res_dropout = nn.Dropout(relu_dropout), nn.Dropout(res_dropout)

    def forward(self, x, source=None, mask=None, key_padding=None):  # (T, B, w), time first
        q = self.norms[0](x)
        kv = q if source is None else self.norms[0](source)
        attended, _ = self.attention(q, kv, kv, attn_mask=mask, key_padding_mask=key_padding, need_weights=False)
        x = x + self.res_dropout(attended)
        ff = self.fc2(self.relu_dropout(F.relu(self.fc1(self.norms[1](x)))))
        return x + self.res_dropout(ff)


class Encoder(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, attn_dropout: float, cfg: MulTConfig):
        super().__init__()
        self.scale, self.attn_mask = math.sqrt(width), cfg.attn_mask
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, attn_dropout, cfg.relu_dropout, cfg.res_dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, x, source=None, key_padding=None):
        x = self.embed_dropout(self.scale * x)
        if source is not None:
            source = self.embed_dropout(self.scale * source)
        keys = x if source is None else source
        mask = causal_mask(len(x), len(keys), x.device) if self.attn_mask else None
        for layer in self.layers:
            x = layer(x, source, mask, key_padding)
        return self.norm(x)


def last_step(h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(T, B, w) -> (B, w): the last step, or each utterance's last real one."""
    if lengths is None:
        return h[-1]
    return h[(lengths - 1).clamp(min=0), torch.arange(h.shape[1], device=h.device)]


class MulT(nn.Module):
    def __init__(self, cfg: MulTConfig, dims: tuple[int, int, int]):
        super().__init__()
        d, heads = cfg.dst_feature_dim_nheads
        self.dims, self.d, self.kernels = dims, d, (cfg.conv1d_kernel_size_l, cfg.conv1d_kernel_size_a,
                                                    cfg.conv1d_kernel_size_v)
        self.text_dropout = nn.Dropout(cfg.text_dropout)
        self.proj = nn.ModuleList(nn.Conv1d(dim, d, k, bias=False) for dim, k in zip(dims, self.kernels))
        attn = dict(zip(STREAMS, (cfg.attn_dropout, cfg.attn_dropout_a, cfg.attn_dropout_v)))
        self.crossmodal = nn.ModuleDict({t + s: Encoder(d, heads, cfg.nlevels, attn[s], cfg)
                                         for t in STREAMS for s in STREAMS if s != t})
        self.memory = nn.ModuleDict({t: Encoder(2 * d, heads, max(cfg.nlevels, 3), cfg.attn_dropout, cfg)
                                     for t in STREAMS})
        self.proj1, self.proj2 = nn.Linear(6 * d, 6 * d), nn.Linear(6 * d, 6 * d)
        self.output_dropout = nn.Dropout(cfg.output_dropout)
        self.out_layer = nn.Linear(6 * d, 1)
        self.features_dim = 6 * d

    def streams(self, text, audio, vision, lengths):
        """stream -> (T', B, d) after the convolutions, and its lengths (None: MMSA's view)."""
        xs, out = (self.text_dropout(text), audio, vision), {}
        for s, x, proj, dim, k in zip(STREAMS, xs, self.proj, self.dims, self.kernels):
            x = F.pad(x.transpose(1, 2), (0, max(0, k - x.shape[1])))  # a batch shorter than the kernel: zeros
            out[s] = (x if dim == self.d else proj(x)).permute(2, 0, 1)
        shrunk = None if lengths is None else {s: (n - k + 1).clamp(min=1) for s, n, k in
                                               zip(STREAMS, lengths, self.kernels)}
        return out, shrunk

    def forward(self, text, audio, vision, lengths=None) -> FieldOutput:
        xs, lens = self.streams(text, audio, vision, lengths)
        padding = None if lens is None else {s: torch.arange(len(xs[s]), device=text.device)[None] >= lens[s][:, None]
                                             for s in STREAMS}
        last = []
        for t in STREAMS:
            crossed = [self.crossmodal[t + s](xs[t], xs[s], None if padding is None else padding[s])
                       for s in STREAMS if s != t]
            h = self.memory[t](torch.cat(crossed, -1), key_padding=None if padding is None else padding[t])
            last.append(last_step(h, None if lens is None else lens[t]))
        u = torch.cat(last, -1)
        u_proj = self.proj2(self.output_dropout(F.relu(self.proj1(u)))) + u
        return FieldOutput(self.out_layer(u_proj), u_proj)
