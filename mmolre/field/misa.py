"""MISA (Hazarika et al., ACM MM 2020; MMSA's models/singleTask/MISA.py):
- text: a fine-tuned BERT over the token ids, its outputs averaged over the attention mask (CLS and SEP
  included) -> Linear(768 -> h) + ReLU + LN;
- audio, vision: biLSTM(d -> d) -> LN(2d) -> biLSTM(2d -> d); the final states [h1 fwd, h2 fwd, h1 bwd, h2 bwd]
  -> Linear(4d -> h) + ReLU + LN;
- per modality a private encoder (Linear + Sigmoid), one shared encoder for all three, a reconstruction Linear
  of private + shared;
- the six vectors as a sequence -> torch's TransformerEncoder (one layer, 2 heads, its defaults) -> concatenated
  -> Linear(6h -> 3h) -> Dropout -> ReLU -> Linear to the sentiment.
MMSA packs audio and vision with the text's token count (so at most the first T_text frames are read); with
`lengths`, each stream is packed with its own length. MMSA's unused sp_discriminator and LayerNorm(2 x 768) are
kept so that its weights load and its parameter count holds."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmolre.field.base import FieldOutput
from mmolre.field.presets import MISAConfig

MODS = ("t", "v", "a")  # MMSA's order of the subspaces


def projection(in_size: int, h: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_size, h), nn.ReLU(), nn.LayerNorm(h))


def gate(h: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(h, h), nn.Sigmoid())


def final_state(rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    """The packed outputs of `rnn` over x (B, T, in) read up to `lengths`, and its final hidden states."""
    out, state = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    return out, state[0] if isinstance(state, tuple) else state


def stream_vector(rnns: nn.ModuleList, norm: nn.LayerNorm, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Two stacked biLSTMs with a LayerNorm between them: (B, T, d) -> [h1 fwd, h2 fwd, h1 bwd, h2 bwd] (B, 4d)."""
    packed, h1 = final_state(rnns[0], x, lengths)
    hidden, _ = pad_packed_sequence(packed, batch_first=True)
    _, h2 = final_state(rnns[1], norm(hidden), lengths)
    return torch.cat((h1, h2), dim=2).permute(1, 0, 2).reshape(x.shape[0], -1)


class MISA(nn.Module):
    def __init__(self, cfg: MISAConfig, dims: tuple[int, int, int], bert: nn.Module):
        super().__init__()
        _, da, dv = dims
        h, rnn = cfg.hidden_size, nn.LSTM if cfg.rnncell == "lstm" else nn.GRU
        self.bert = bert
        self.rnns = nn.ModuleDict({m: nn.ModuleList([rnn(d, d, bidirectional=True), rnn(2 * d, d, bidirectional=True)])
                                   for m, d in (("v", dv), ("a", da))})
        self.project = nn.ModuleDict({"t": projection(768, h), "v": projection(4 * dv, h), "a": projection(4 * da, h)})
        self.private = nn.ModuleDict({m: gate(h) for m in MODS})
        self.shared = gate(h)
        self.recon = nn.ModuleDict({m: nn.Linear(h, h) for m in MODS})
        self.sp_discriminator = nn.Linear(h, 4)  # unused, as in MMSA
        self.fusion = nn.Sequential(nn.Linear(6 * h, 3 * h), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(3 * h, 1))
        # between the two biLSTMs; the text's is unused, as in MMSA
        self.norms = nn.ModuleDict({"t": nn.LayerNorm(2 * 768), "v": nn.LayerNorm(2 * dv), "a": nn.LayerNorm(2 * da)})
        self.transformer = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=h, nhead=2), num_layers=1,
                                                 enable_nested_tensor=False)
        self.features_dim = 6 * h

    def text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T) ids, mask, segments -> the masked mean of BERT's outputs (B, 768) and the token counts."""
        ids, mask, segments = tokens[:, 0].long(), tokens[:, 1].float(), tokens[:, 2].long()
        hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=segments)[0]
        count = mask.sum(1, keepdim=True)
        return (mask[..., None] * hidden).sum(1) / count, count[:, 0].int().cpu()

    def forward(self, text, audio, vision, lengths=None) -> FieldOutput:
        utterance_t, count = self.text(text)
        lv, la = (count, count) if lengths is None else (lengths[2].cpu(), lengths[1].cpu())
        vectors = {"t": utterance_t, "v": stream_vector(self.rnns["v"], self.norms["v"], vision, lv.clamp(min=1)),
                   "a": stream_vector(self.rnns["a"], self.norms["a"], audio, la.clamp(min=1))}
        projected = {m: self.project[m](vectors[m]) for m in MODS}
        states = {f"private_{m}": self.private[m](projected[m]) for m in MODS}
        states |= {f"shared_{m}": self.shared(projected[m]) for m in MODS}
        states |= {f"recon_{m}": self.recon[m](states[f"private_{m}"] + states[f"shared_{m}"]) for m in MODS}
        states |= {f"orig_{m}": projected[m] for m in MODS}
        h = torch.stack([states[f"private_{m}"] for m in MODS] + [states[f"shared_{m}"] for m in MODS])
        h = self.transformer(h)
        fused = torch.cat(list(h), dim=1)
        return FieldOutput(self.fusion(fused), fused, states)
