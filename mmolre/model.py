"""MMoLRE: Multimodal Mixture of Low-Rank Experts (Zhang et al., ICME 2025, arXiv 2505.14143).

Reading order follows the paper (docs/paper.md):
  LowRankExpert -> ExpertGroup -> ExpertMixture -> UniTSEBlock -> UniTSE
  -> TaskAdaptiveFusion -> MMoLRE (input projections, heads, multi-task loss).
Tasks: "sa" (sentiment) and "er" (emotions); what each head predicts comes from the label space
(mmolre/label_spaces.py): for the paper's CMU corpora sentiment regression and six-emotion presence.
Shapes: B batch, T tokens/frames, d model width, E experts in a group, r rank.
The choices (sizes, ablations, routers) and their rules are MMoLREConfig, in mmolre/model_config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmolre.hub import PretrainedMixin
from mmolre.label_spaces import Task
from mmolre.modalities import MODALITIES
from mmolre.model_config import JOINT, MMoLREConfig

@dataclass
class MMoLREOutput:
    sentiment: torch.Tensor | None           # (B,) predicted sentiment intensity, (B, targets) or (B, classes)
                                             # logits in other label spaces (None: no SA head)
    emotions: torch.Tensor | None            # (B, 6) emotion presence logits, or (B, classes) (None: no ER head)
    loss: torch.Tensor | None = None         # L_SA + lambda * L_ER, when labels are given
    loss_sa: torch.Tensor | None = None
    loss_er: torch.Tensor | None = None
    loss_aux: torch.Tensor | None = None     # load balancing of top-k routers (weighted into `loss`)
    # "block1/text/sa" -> (B, E) mean gate per expert; "top1/block1/text/sa" -> (B, E) share of tokens
    # whose largest gate is that expert; "fusion/sa" -> (B, M) modality gates
    routing: dict[str, torch.Tensor] = field(default_factory=dict)


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

    def __init__(self, ranks: tuple[int, ...], d: int, kernel_size: int, fused: bool):
        super().__init__()
        self.experts = nn.ModuleList(LowRankExpert(d, r, kernel_size) for r in ranks)
        self.fused, self.width = fused, sum(ranks)
        # each gate multiplies its expert's r_n hidden channels: one int when the ranks are equal, else a
        # buffer that moves with the module (no host-to-device copy per forward)
        self.uniform = ranks[0] if len(set(ranks)) == 1 else None
        self.register_buffer("repeats", torch.tensor(ranks), persistent=False)

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
        repeats = self.uniform or self.repeats  # output_size: no device-to-host sync to size the result
        hidden = features * gates.transpose(1, 2).repeat_interleave(repeats, dim=1, output_size=self.width)  # (B, sum r_n, T)
        return F.conv1d(hidden, weight) + (gates @ bias).transpose(1, 2)  # + sum_e g_e b2_e


def top_p_gates(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Per token the fewest experts whose probabilities reach `p` (largest first), renormalised to sum 1:
    a token the router is sure of keeps one expert, an uncertain ("harder") one keeps more."""
    ordered, order = probs.sort(-1, descending=True)
    before = ordered.cumsum(-1) - ordered  # the mass of the larger ones
    kept = torch.where(before < p, ordered, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, kept)
    return kept / kept.sum(-1, keepdim=True)


class ExpertMixture(nn.Module):
    """One task's mixture: y = sum_n g_n(x) f_sh^(n)(x) + g_{N+1}(x) f_ts(x), g = softmax(router(x)) per token
    (router=topk: only the top_k largest gates kept, renormalised to sum 1; router=top_p: the fewest largest
    gates reaching top_p, renormalised [ours]).

    Ablations drop the shared group (no_shared) or the task-specific expert (no_specific).
    """

    def __init__(self, shared: ExpertGroup | None, specific_rank: int | None, d: int, kernel_size: int, fused: bool,
                 top_k: int | None = None, top_p: float | None = None):
        super().__init__()
        self.shared = [shared] if shared else []  # a list: the group is registered once, by the block
        self.specific = ExpertGroup((specific_rank,), d, kernel_size, fused) if specific_rank else None
        self.n_shared = len(shared.experts) if shared else 0
        self.router = nn.Linear(d, self.n_shared + int(specific_rank is not None))
        self.top_k, self.top_p = top_k, top_p

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> gates (B, T, E) and router probabilities (B, T, E)."""
        probs = torch.softmax(self.router(x), dim=-1)
        if self.top_p is not None:
            return top_p_gates(probs, self.top_p), probs
        if not self.top_k:
            return probs, probs
        top = probs.topk(self.top_k, dim=-1)
        kept = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
        return kept / kept.sum(-1, keepdim=True), probs

    def forward(self, x: torch.Tensor, shared_features: torch.Tensor | None = None):
        """x (B, T, d) -> y (B, T, d), gates (B, T, N+1), router probabilities (B, T, N+1)."""
        xc = x.transpose(1, 2)  # (B, d, T)
        gates, probs = self.route(x)
        n = self.n_shared
        y = 0
        if self.shared:
            if shared_features is None:
                shared_features = self.shared[0].features(xc)
            y = y + self.shared[0].combine(shared_features, gates[..., :n])
        if self.specific is not None:
            y = y + self.specific.combine(self.specific.features(xc), gates[..., n:])
        return y.transpose(1, 2), gates, probs


def load_balancing_loss(gates: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """E * sum_e f_e P_e over the real tokens (Switch-Transformer style): f_e the share of token slots routed to
    expert e, P_e its mean router probability; 1 when routing is even, larger when it collapses."""
    keep = mask.unsqueeze(-1).to(probs.dtype)
    tokens = keep.sum().clamp(min=1.0)
    routed = ((gates > 0).to(probs.dtype) * keep).sum((0, 1)) / (tokens * k)
    mean_prob = (probs * keep).sum((0, 1)) / tokens
    return probs.shape[-1] * (routed * mean_prob).sum()


class UniTSEBlock(nn.Module):
    """N shared experts + per task a specific expert and a router; x_task <- LN(x_task + y_task)."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        d, k = cfg.d_model, cfg.expert_kernel
        self.shared = ExpertGroup(cfg.shared_ranks, d, k, cfg.fused_experts) if cfg.n_shared else None
        self.top_k = cfg.top_k if cfg.router == "topk" else None
        top_p = cfg.top_p if cfg.router == "top_p" else None
        self.mixtures = nn.ModuleDict({branch: ExpertMixture(
            self.shared, cfg.specific_rank if cfg.task_specific else None, d, k, cfg.fused_experts, self.top_k, top_p)
            for branch in cfg.branches})
        self.norms = nn.ModuleDict({branch: nn.LayerNorm(d) for branch in cfg.branches})
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor], mask: torch.Tensor):
        """x: one (B, T, d) tensor read by every task (block 1) or task -> (B, T, d); mask (B, T).

        Returns task -> (B, T, d), task -> gates (B, T, N+1), and the load-balancing loss (0 for dense routers).
        """
        keep = mask.unsqueeze(-1).to(next(iter(self.norms.values())).weight.dtype)  # zero padding before convs
        if isinstance(x, torch.Tensor):  # x^SA = x^ER = x: the shared experts run once for both tasks
            x = x * keep
            xs = {branch: x for branch in self.mixtures}
            shared_features = self.shared.features(x.transpose(1, 2)) if self.shared else None
        else:
            xs, shared_features = {branch: v * keep for branch, v in x.items()}, None
        out, gates, aux = {}, {}, keep.new_zeros(())
        for branch, x_branch in xs.items():
            y, gates[branch], probs = self.mixtures[branch](x_branch, shared_features)
            out[branch] = self.norms[branch](x_branch + self.dropout(y))
            if self.top_k:
                aux = aux + load_balancing_loss(gates[branch], probs, mask, self.top_k)
        return out, gates, aux


class UniTSE(nn.Module):
    """Unimodal task-specific feature extraction: block 1 separates the tasks, block 2 relates them."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.blocks = nn.ModuleList(UniTSEBlock(cfg) for _ in range(cfg.n_blocks))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        """(B, T, d) -> task -> (B, T, d), the gates of every block [task -> (B, T, N+1)], and the blocks'
        load-balancing loss."""
        xs, all_gates, aux = x, [], 0.0
        for block in self.blocks:
            xs, gates, block_aux = block(xs, mask)
            all_gates.append(gates)
            aux = aux + block_aux
        return xs, all_gates, aux


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) -> (B, d): mean over the real positions."""
    keep = mask.unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def attend_present(attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor,
                   key_mask: torch.Tensor) -> torch.Tensor:
    """Attention of `query` (B, T_q, d) over the real positions of `keys` (B, T_k, d); zero for a sample whose
    keys are all padding (an absent modality: its softmax would be 0/0, so it attends to the ignored positions
    and the result is dropped)."""
    present = key_mask.any(1)
    ignore = torch.where(present[:, None], ~key_mask, torch.zeros_like(key_mask))
    out = attention(query, keys, keys, key_padding_mask=ignore, need_weights=False)[0]
    return torch.where(present[:, None, None], out, torch.zeros_like(out))


class TaskAdaptiveFusion(nn.Module):
    """One task's fusion [ours]: cross-modal attention (each modality's positions attend to the positions of all
    the others, one multi-head attention layer per modality: text <-> audio with two), masked mean pooling, and
    a per-sample gate (softmax over modalities) that weights the pooled modalities."""

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        d, m = cfg.d_model, len(cfg.modalities)
        self.modalities = cfg.modalities
        self.attending = tuple(x for x in MODALITIES if x in cfg.modalities) if m >= 2 else ()  # registry order
        if self.attending:
            self.attend = nn.ModuleDict({q: nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout,
                                                                  batch_first=True) for q in self.attending})
            self.norms = nn.ModuleDict({q: nn.LayerNorm(d) for q in self.attending})
            self.dropout = nn.Dropout(cfg.dropout)
        self.gate = nn.Linear(m * d, m)

    def cross_attended(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """x_q <- LN(x_q + Attention(x_q; the other modalities' positions, concatenated)) for every modality q
        (with two modalities: text attends to audio and audio to text)."""
        attended = {}
        for q in self.attending:
            others = [o for o in self.attending if o != q]
            attended[q] = attend_present(self.attend[q], xs[q], torch.cat([xs[o] for o in others], 1),
                                         torch.cat([masks[o] for o in others], 1))
        return {q: self.norms[q](xs[q] + self.dropout(attended[q])) for q in self.attending}

    def forward(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        """modality -> (B, T_m, d) and (B, T_m) -> task vector (B, d), modality gates (B, M).
        A modality whose mask is all False in a sample is absent there [ours]: nothing attends to it, it is
        pooled to zero and its gate is 0, so its values cannot matter (each sample needs one modality)."""
        present = {m: masks[m].any(1) for m in self.modalities}  # (B,)
        if self.attending:
            xs = self.cross_attended(xs, masks)
        pooled = torch.stack([torch.where(present[m][:, None], masked_mean(xs[m], masks[m]), 0.0)
                              for m in self.modalities], dim=1)  # (B, M, d)
        present_mask = torch.stack([present[m] for m in self.modalities], dim=1)  # (B, M)
        gates = torch.softmax(self.gate(pooled.flatten(1)).masked_fill(~present_mask, float("-inf")), dim=-1)
        return (gates.unsqueeze(1) @ pooled).squeeze(1), gates  # sum_m g_m p_m


def model_input(inputs: dict, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, mask) of `modality` among a forward call's keyword inputs."""
    if inputs.get(modality) is None or inputs.get(f"{modality}_mask") is None:
        raise ValueError(f"this model reads {modality}: pass {modality} and {modality}_mask")
    return inputs[modality], inputs[f"{modality}_mask"]


class InputProjection(nn.Module):
    """Standardise encoder features with train-split statistics, then project to d when widths differ."""

    def __init__(self, dim: int, d: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.proj = nn.Linear(dim, d) if dim != d else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj((x - self.mean) / self.std)


class DialogueContext(nn.Module):
    """[ours] An utterance's fused vector h_i with its dialogue's k previous ones (the paper's open question 1):
    h_i + W [h_i ; c_i] + b, c_i the mean of h_j over the utterances j of the same dialogue with
    i - k <= turn_j < turn_i (0 when there are none). Causal by construction: no later utterance enters.
    W starts at zero, so training starts from the model without context; the experts are untouched."""

    def __init__(self, d: int, window: int):
        super().__init__()
        self.window = window
        self.mix = nn.Linear(2 * d, d)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: torch.Tensor, dialogue: torch.Tensor | None, turn: torch.Tensor | None) -> torch.Tensor:
        context = torch.zeros_like(h)
        if dialogue is not None:
            back = turn[:, None] - turn[None, :]  # (B, B): how many turns j lies before i
            seen = (dialogue[:, None] == dialogue[None, :]) & (back >= 1) & (back <= self.window)
            context = (seen.to(h.dtype) @ h) / seen.sum(1, keepdim=True).clamp(min=1).to(h.dtype)
        return h + self.mix(torch.cat([h, context], -1))


def head(d: int, out: int, dropout: float) -> nn.Sequential:
    """MLP(d -> d/2 -> out) [ours]."""
    return nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(dropout), nn.Linear(d // 2, out))


def task_loss(task: Task, pred: torch.Tensor, target: torch.Tensor, pos_weight=None) -> torch.Tensor:
    """One head's loss, the mean over the samples that have its label (0 when none has): L1 for a regression
    (over the labelled targets), cross-entropy for classes, BCE on presence (intensity > 0) per emotion.
    Masked sums rather than boolean indexing: no data-dependent shape or branch, so no host sync and one
    graph under torch.compile."""
    pred = pred.float()
    if task.kind == "regression":
        has = ~torch.isnan(target)
        errors = torch.where(has, (pred - target.nan_to_num()).abs(), 0.0)
        return errors.sum() / has.sum().clamp(min=1)
    if task.kind == "presence":
        has = ~torch.isnan(target).any(-1, keepdim=True)  # (B, 1)
        bce = F.binary_cross_entropy_with_logits(pred, (target.nan_to_num() > 0).to(pred.dtype),
                                                 pos_weight=pos_weight, reduction="none")
        return torch.where(has, bce, 0.0).sum() / (has.sum() * pred.shape[-1]).clamp(min=1)
    has, classes = class_targets(task, target)
    ce = F.cross_entropy(pred, classes, reduction="none")
    return torch.where(has, ce, 0.0).sum() / has.sum().clamp(min=1)


def class_targets(task: Task, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) labelled?, (B,) class index, of class labels stored as numbers (B,) or one-hot (B, classes)."""
    if task.values:
        has = ~torch.isnan(target)
        return has, (target[:, None] == target.new_tensor(task.values)).float().argmax(-1)
    return ~torch.isnan(target).any(-1), target.nan_to_num().argmax(-1)


def multitask_loss(heads: dict[str, Task], outputs: dict, labels: dict, pos_weight, er_weight):
    """L = L_SA + lambda * L_ER (task_loss each; 0 for a task the model has no head for)."""
    zero = sum(p.float().sum() * 0.0 for p in outputs.values() if p is not None)  # keeps the graph
    losses = {t: task_loss(heads[t], outputs[t], labels[t], pos_weight if t == "er" else None) if t in heads
              else zero for t in ("sa", "er")}
    return losses["sa"] + er_weight * losses["er"], losses["sa"], losses["er"]


def predictions(task: Task, output: torch.Tensor) -> torch.Tensor:
    """A head's output as the task reads it: the regression's values, presence or class probabilities."""
    if task.kind == "regression":
        return output.float()
    return torch.sigmoid(output.float()) if task.kind == "presence" else torch.softmax(output.float(), -1)


def routing_summary(gates: list[dict[str, torch.Tensor]], mask: torch.Tensor, modality: str, sparse: bool) -> dict:
    """Per block and branch of one modality, over its real tokens: the mean gate per expert, the share of
    tokens each expert leads (top1/), and with a sparse router the experts a token uses (active/)."""
    out = {}
    for b, block_gates in enumerate(gates, start=1):
        for branch, g in block_gates.items():
            key = f"block{b}/{modality}/{branch}"
            out[key] = masked_mean(g, mask).detach()
            out[f"top1/{key}"] = masked_mean(F.one_hot(g.argmax(-1), g.shape[-1]).to(g.dtype), mask).detach()
            if sparse:  # dense: every expert
                out[f"active/{key}"] = masked_mean((g > 0).sum(-1, keepdim=True).to(g.dtype), mask).detach()
    return out


class TaskHeads:
    """What every model of mmolre has after its fusion (MMoLRE and the baselines of mmolre/baselines/, so that
    only the fusion differs): the task heads, the multi-task loss, the inputs' standardisation."""

    def add_heads(self, cfg: MMoLREConfig) -> None:
        self.sa_head = head(cfg.d_model, cfg.heads["sa"].outputs, cfg.dropout) if "sa" in cfg.tasks else None
        self.er_head = head(cfg.d_model, cfg.heads["er"].outputs, cfg.dropout) if "er" in cfg.tasks else None
        pos_weight = torch.tensor(cfg.emotion_pos_weight) if cfg.emotion_pos_weight else None
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def apply_heads(self, vector: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each head on its task's fused vector; a one-target sentiment as (B,), other heads (B, outputs)."""
        sentiment = self.sa_head(vector["sa"]) if self.sa_head is not None else None
        if sentiment is not None and sentiment.shape[-1] == 1:
            sentiment = sentiment.squeeze(-1)
        return sentiment, self.er_head(vector["er"]) if self.er_head is not None else None

    def head_outputs(self, vector: dict, routing: dict, sentiment, emotions) -> MMoLREOutput:
        """The heads' outputs, and the multi-task loss when labels are given."""
        out = MMoLREOutput(*self.apply_heads(vector), routing=routing)
        if sentiment is not None and emotions is not None:
            out.loss, out.loss_sa, out.loss_er = multitask_loss(
                self.config.heads, {"sa": out.sentiment, "er": out.emotions}, {"sa": sentiment, "er": emotions},
                self.pos_weight, self.config.er_loss_weight)
        return out

    @torch.no_grad()
    def set_feature_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """modality -> (mean, std) of the train split's features, used by InputProjection."""
        for m, (mean, std) in stats.items():
            if m in self.inputs:
                self.inputs[m].mean.copy_(mean)
                self.inputs[m].std.copy_(std.clamp(min=1e-5))


class MMoLRE(nn.Module, PretrainedMixin, TaskHeads):
    """Encoder features -> UniTSE per modality -> task-adaptive fusion per task -> SA and ER heads.
    Saved and loaded as a folder (`save_pretrained` / `MMoLRE.from_pretrained("models/main")`, mmolre/hub.py)."""

    config_class = MMoLREConfig

    @classmethod
    def build(cls, config: MMoLREConfig) -> nn.Module:
        if config.arch != "mmolre":
            from mmolre import MmolreError

            raise MmolreError(f"a saved {config.arch} baseline, not MMoLRE: load it with "
                              "mmolre.architectures.from_pretrained")
        return cls(config)

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.config = cfg
        self.inputs = nn.ModuleDict({m: InputProjection(cfg.dims[m], cfg.d_model) for m in cfg.modalities})
        self.unitse = nn.ModuleDict({m: UniTSE(cfg) for m in cfg.modalities})
        self.fusion = nn.ModuleDict({branch: TaskAdaptiveFusion(cfg) for branch in cfg.branches})
        if cfg.context == "dialogue":
            self.context = nn.ModuleDict({b: DialogueContext(cfg.d_model, cfg.context_window) for b in cfg.branches})
        self.add_heads(cfg)

    def forward(self, sentiment=None, emotions=None, return_routing: bool = False, dialogue=None, turn=None,
                **inputs) -> MMoLREOutput:
        """inputs: per modality m of the config, m (B, T_m, dims[m]) and m_mask (B, T_m), True = real position
        (e.g. text=..., text_mask=..., audio=..., audio_mask=...); sentiment and emotions labels (NaN where
        absent; for cmu (B,) and (B, 6)) give the loss; dialogue and turn (B,) ints place each utterance in its
        dialogue (read by context=dialogue only)."""
        cfg = self.config
        per_branch = {branch: {} for branch in cfg.branches}
        masks, routing, aux = {}, {}, 0.0
        for m in cfg.modalities:
            x, masks[m] = model_input(inputs, m)
            xs, gates, modality_aux = self.unitse[m](self.inputs[m](x), masks[m])
            aux = aux + modality_aux
            for branch in cfg.branches:
                per_branch[branch][m] = xs[branch]
            if return_routing:
                routing |= routing_summary(gates, masks[m], m, sparse=cfg.router != "dense")
        vectors = {}
        for branch in cfg.branches:
            vectors[branch], modality_gates = self.fusion[branch](per_branch[branch], masks)
            if cfg.context == "dialogue":
                vectors[branch] = self.context[branch](vectors[branch], dialogue, turn)
            if return_routing:
                routing[f"fusion/{branch}"] = modality_gates.detach()
        vector = {task: vectors[JOINT if JOINT in vectors else task] for task in cfg.tasks}
        out = self.head_outputs(vector, routing, sentiment, emotions)
        if out.loss is not None and cfg.router == "topk":
            out.loss_aux = aux
            out.loss = out.loss + cfg.aux_loss_weight * aux
        return out
