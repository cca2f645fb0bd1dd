"""MMoLRE: Multimodal Mixture of Low-Rank Experts (Zhang et al., ICME 2025, arXiv 2505.14143).

Reading order follows the paper (../shared/design/paper.md):
  LowRankExpert -> ExpertGroup -> ExpertMixture -> UniTSEBlock -> UniTSE
  -> TaskAdaptiveFusion -> MMoLRE (input projections, heads, multi-task loss).
Tasks: "sa" (sentiment regression) and "er" (six-emotion recognition, multi-label).
Shapes: B batch, T tokens/frames, d model width, E experts in a group, r rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("sa", "er")
MODALITIES = ("text", "audio")


@dataclass
class MMoLREConfig:
    text_dim: int = 768          # width of the text features (roberta-base)
    audio_dim: int = 768         # width of the audio features (data2vec-audio-base)
    d_model: int = 768           # d [paper]
    n_experts: int = 15          # N shared low-rank experts per mixture [paper: best N = 15]
    rank: int = 128              # r_n of every expert [paper: best r_n = 128]
    kernel_size: int = 3         # kernel of an expert's first convolution [paper]
    n_blocks: int = 2            # UniTSE blocks per modality [paper]
    n_heads: int = 8             # heads of the cross-modal attention in fusion [ours]
    dropout: float = 0.1         # [ours]
    n_emotions: int = 6          # happy, sad, anger, surprise, disgust, fear
    modalities: tuple[str, ...] = MODALITIES  # a subset gives the unimodal runs
    fused_experts: bool = True   # mixture as two wide convolutions; False = loop over experts
    er_loss_weight: float = 1.0  # lambda in L = L_SA + lambda * L_ER [ours]
    emotion_pos_weight: tuple[float, ...] | None = None  # BCE positive-class weights [ours]

    def __post_init__(self):
        self.modalities = tuple(self.modalities)
        if not self.modalities or set(self.modalities) - set(MODALITIES):
            raise ValueError(f"modalities {self.modalities}: choose a non-empty subset of {MODALITIES}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.emotion_pos_weight is not None:
            self.emotion_pos_weight = tuple(float(w) for w in self.emotion_pos_weight)


@dataclass
class MMoLREOutput:
    sentiment: torch.Tensor                  # (B,) predicted sentiment intensity
    emotions: torch.Tensor                   # (B, 6) emotion presence logits
    loss: torch.Tensor | None = None         # L_SA + lambda * L_ER, when labels are given
    loss_sa: torch.Tensor | None = None
    loss_er: torch.Tensor | None = None
    routing: dict[str, torch.Tensor] = field(default_factory=dict)  # "block1/text/sa" -> (B, E) mean gates


class LowRankExpert(nn.Module):
    """f(x) = Conv1d(r -> d, k=1)(GELU(Conv1d(d -> r, k=3)(x))): weights 3 x d x r and 1 x r x d, with biases."""

    def __init__(self, d: int, rank: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv1d(d, rank, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(rank, d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d, T) -> (B, d, T)
        return self.conv2(F.gelu(self.conv1(x)))


class ExpertGroup(nn.Module):
    """E low-rank experts that read the same input.

    `features(x)` is the part that does not depend on the gates, so it can be computed once
    and combined with several routers' gates (both tasks in block 1). With `fused`, the E
    first convolutions run as one conv(d -> E*r) and the gated second convolutions as one
    conv(E*r -> d); otherwise each expert runs on its own (the reference).
    """

    def __init__(self, n: int, d: int, rank: int, kernel_size: int, fused: bool):
        super().__init__()
        self.experts = nn.ModuleList(LowRankExpert(d, rank, kernel_size) for _ in range(n))
        self.rank, self.fused = rank, fused

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, T) -> fused: hidden (B, E*r, T); loop: expert outputs (B, E, d, T)."""
        if not self.fused:
            return torch.stack([expert(x) for expert in self.experts], dim=1)
        weight = torch.cat([e.conv1.weight for e in self.experts])  # (E*r, d, k)
        bias = torch.cat([e.conv1.bias for e in self.experts])
        return F.gelu(F.conv1d(x, weight, bias, padding=self.experts[0].conv1.padding))

    def combine(self, features: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """sum_e gates_e * f_e(x): features from `features`, gates (B, T, E) -> (B, d, T)."""
        if not self.fused:
            return torch.einsum("bedt,bte->bdt", features, gates)
        weight = torch.cat([e.conv2.weight for e in self.experts], dim=1)  # (d, E*r, 1)
        bias = torch.stack([e.conv2.bias for e in self.experts])  # (E, d)
        hidden = features * gates.transpose(1, 2).repeat_interleave(self.rank, dim=1)  # (B, E*r, T)
        return F.conv1d(hidden, weight) + torch.einsum("bte,ed->bdt", gates, bias)


class ExpertMixture(nn.Module):
    """One task's mixture: y = sum_n g_n(x) f_sh^(n)(x) + g_{N+1}(x) f_ts(x), g = softmax(router(x)) per token."""

    def __init__(self, shared: ExpertGroup, d: int, rank: int, kernel_size: int, fused: bool):
        super().__init__()
        self.shared = [shared]  # a list, so the group shared with the other task is not registered twice
        self.specific = ExpertGroup(1, d, rank, kernel_size, fused)
        self.router = nn.Linear(d, len(shared.experts) + 1)

    def forward(self, x: torch.Tensor, shared_features: torch.Tensor | None = None):
        """x (B, T, d) -> y (B, T, d), gates (B, T, N+1)."""
        xc = x.transpose(1, 2)  # (B, d, T)
        shared = self.shared[0]
        if shared_features is None:
            shared_features = shared.features(xc)
        gates = torch.softmax(self.router(x), dim=-1)  # (B, T, N+1)
        n = len(shared.experts)
        y = shared.combine(shared_features, gates[..., :n]) + self.specific.combine(
            self.specific.features(xc), gates[..., n:])
        return y.transpose(1, 2), gates


class UniTSEBlock(nn.Module):
    """N shared experts + per task a specific expert and a router; x_task <- LN(x_task + y_task)."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        d = cfg.d_model
        self.shared = ExpertGroup(cfg.n_experts, d, cfg.rank, cfg.kernel_size, cfg.fused_experts)
        self.mixtures = nn.ModuleDict(
            {task: ExpertMixture(self.shared, d, cfg.rank, cfg.kernel_size, cfg.fused_experts) for task in TASKS})
        self.norms = nn.ModuleDict({task: nn.LayerNorm(d) for task in TASKS})
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor], mask: torch.Tensor):
        """x: one (B, T, d) tensor read by every task (block 1) or task -> (B, T, d); mask (B, T).

        Returns task -> (B, T, d) and task -> gates (B, T, N+1).
        """
        keep = mask.unsqueeze(-1).to(self.norms[TASKS[0]].weight.dtype)  # zero padding before the convolutions
        if isinstance(x, torch.Tensor):  # x^SA = x^ER = x: the shared experts run once for both tasks
            x = x * keep
            xs, shared_features = {task: x for task in TASKS}, self.shared.features(x.transpose(1, 2))
        else:
            xs, shared_features = {task: v * keep for task, v in x.items()}, None
        out, gates = {}, {}
        for task, x_task in xs.items():
            y, gates[task] = self.mixtures[task](x_task, shared_features)
            out[task] = self.norms[task](x_task + self.dropout(y))
        return out, gates


class UniTSE(nn.Module):
    """Unimodal task-specific feature extraction: block 1 separates the tasks, block 2 relates them."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.blocks = nn.ModuleList(UniTSEBlock(cfg) for _ in range(cfg.n_blocks))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """(B, T, d) -> task -> (B, T, d), and the gates of every block: [task -> (B, T, N+1)]."""
        xs, all_gates = x, []
        for block in self.blocks:
            xs, gates = block(xs, mask)
            all_gates.append(gates)
        return xs, all_gates


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) -> (B, d): mean over the real positions."""
    keep = mask.unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class TaskAdaptiveFusion(nn.Module):
    """One task's fusion [ours]: cross-modal attention (text <-> audio), masked mean pooling,
    and a per-sample gate (softmax over modalities) that weights the pooled modalities."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        d, m = cfg.d_model, len(cfg.modalities)
        self.modalities = cfg.modalities
        if m == 2:
            self.attend = nn.ModuleDict({q: nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout,
                                                                  batch_first=True) for q in MODALITIES})
            self.norms = nn.ModuleDict({q: nn.LayerNorm(d) for q in MODALITIES})
            self.dropout = nn.Dropout(cfg.dropout)
        self.gate = nn.Linear(m * d, m)

    def forward(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        """modality -> (B, T_m, d) and (B, T_m) -> task vector (B, d), modality gates (B, M)."""
        if len(self.modalities) == 2:
            other = {"text": "audio", "audio": "text"}
            xs = {q: self.norms[q](xs[q] + self.dropout(self.attend[q](
                xs[q], xs[other[q]], xs[other[q]], key_padding_mask=~masks[other[q]], need_weights=False)[0]))
                for q in MODALITIES}
        pooled = torch.stack([masked_mean(xs[m], masks[m]) for m in self.modalities], dim=1)  # (B, M, d)
        gates = torch.softmax(self.gate(pooled.flatten(1)), dim=-1)  # (B, M)
        return torch.einsum("bm,bmd->bd", gates, pooled), gates


class InputProjection(nn.Module):
    """Standardise encoder features with train-split statistics, then project to d when widths differ."""

    def __init__(self, dim: int, d: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.proj = nn.Linear(dim, d) if dim != d else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj((x - self.mean) / self.std)


def head(d: int, out: int, dropout: float) -> nn.Sequential:
    """MLP(d -> d/2 -> out) [ours]."""
    return nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(dropout), nn.Linear(d // 2, out))


def multitask_loss(sentiment_pred, emotion_logits, sentiment, emotions, pos_weight, er_weight):
    """L = L1(sentiment) + lambda * BCE(presence = intensity > 0); each over the samples that have the label."""
    has_sa = ~torch.isnan(sentiment)
    has_er = ~torch.isnan(emotions).any(-1)
    zero = sentiment_pred.sum() * 0.0  # keeps the graph when a batch has no label of a kind
    loss_sa = F.l1_loss(sentiment_pred[has_sa], sentiment[has_sa]) if has_sa.any() else zero
    loss_er = F.binary_cross_entropy_with_logits(
        emotion_logits[has_er], (emotions[has_er] > 0).to(emotion_logits.dtype), pos_weight=pos_weight,
    ) if has_er.any() else zero
    return loss_sa + er_weight * loss_er, loss_sa, loss_er


class MMoLRE(nn.Module):
    """Encoder features -> UniTSE per modality -> task-adaptive fusion per task -> SA and ER heads."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.config = cfg
        dims = {"text": cfg.text_dim, "audio": cfg.audio_dim}
        self.inputs = nn.ModuleDict({m: InputProjection(dims[m], cfg.d_model) for m in cfg.modalities})
        self.unitse = nn.ModuleDict({m: UniTSE(cfg) for m in cfg.modalities})
        self.fusion = nn.ModuleDict({task: TaskAdaptiveFusion(cfg) for task in TASKS})
        self.sa_head = head(cfg.d_model, 1, cfg.dropout)
        self.er_head = head(cfg.d_model, cfg.n_emotions, cfg.dropout)
        pos_weight = torch.tensor(cfg.emotion_pos_weight) if cfg.emotion_pos_weight else None
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, text=None, text_mask=None, audio=None, audio_mask=None, sentiment=None, emotions=None,
                return_routing: bool = False) -> MMoLREOutput:
        """text (B, T_t, text_dim), audio (B, T_a, audio_dim), masks (B, T) True = real position;
        sentiment (B,) and emotions (B, 6) labels (NaN where absent) give the loss."""
        given = {"text": (text, text_mask), "audio": (audio, audio_mask)}
        per_task = {task: {} for task in TASKS}
        masks, routing = {}, {}
        for m in self.config.modalities:
            x, masks[m] = given[m]
            if x is None:
                raise ValueError(f"this model reads {m}: pass {m} and {m}_mask")
            xs, gates = self.unitse[m](self.inputs[m](x), masks[m])
            for task in TASKS:
                per_task[task][m] = xs[task]
            if return_routing:
                for b, block_gates in enumerate(gates, start=1):
                    for task, g in block_gates.items():
                        routing[f"block{b}/{m}/{task}"] = masked_mean(g, masks[m]).detach()
        vectors = {}
        for task in TASKS:
            vectors[task], modality_gates = self.fusion[task](per_task[task], masks)
            if return_routing:
                routing[f"fusion/{task}"] = modality_gates.detach()
        out = MMoLREOutput(sentiment=self.sa_head(vectors["sa"]).squeeze(-1), emotions=self.er_head(vectors["er"]),
                           routing=routing)
        if sentiment is not None and emotions is not None:
            out.loss, out.loss_sa, out.loss_er = multitask_loss(
                out.sentiment.float(), out.emotions.float(), sentiment, emotions, self.pos_weight,
                self.config.er_loss_weight)
        return out

    @torch.no_grad()
    def set_feature_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """modality -> (mean, std) of the train split's features, used by InputProjection."""
        for m, (mean, std) in stats.items():
            if m in self.inputs:
                self.inputs[m].mean.copy_(mean)
                self.inputs[m].std.copy_(std.clamp(min=1e-5))
