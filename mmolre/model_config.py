"""The model's choices and their rules, without torch: MMoLREConfig and the tables it reads.

mmolre/model.py builds the network from an MMoLREConfig; mmolre/params.py validates the params
`model` section (and every run of `runs`) by building one, so the rules below are the only ones and
their messages are what `mmolre <stage>` prints. Adding an ablation is one entry of VARIANTS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmolre.field.presets import CONFIGS, CORPORA, preset
from mmolre.label_spaces import DEFAULT, LABEL_SPACES, Task
from mmolre.modalities import MODALITIES, PAPER_MODALITIES

TASKS = ("sa", "er")
EXPERTS = ("lowrank_conv", "lowrank_linear")
ROUTERS = ("dense", "topk", "top_p")
# the model, a fusion-only variant on MMoLRE's footing (mmolre/baselines/), or one of the field's models as MMSA
# 2.2.1 defines and trains it (FIELD_ARCHS, mmolre/field/: its layers, its preset, its recipe)
FIELD_ARCHS = tuple(CONFIGS)  # lf_dnn, tfn, lmf, mult, misa
VARIANT_ARCHS = ("late_fusion", "fusion_tfn", "fusion_lmf", "fusion_mult", "fusion_misa")
ARCHS = ("mmolre",) + VARIANT_ARCHS + FIELD_ARCHS
FIELD_MODALITIES = ("text", "audio", "video")  # what the field's models read, in MMSA's order
CONTEXTS = ("none", "dialogue")  # none [paper]: each utterance alone | dialogue: the previous utterances too [ours]
JOINT = "joint"  # the one path through UniTSE and fusion that both tasks share under hard sharing


@dataclass(frozen=True)
class Variant:
    """How an ablation of the paper differs from the full model."""
    tasks: tuple[str, ...] = TASKS  # the heads it has
    shared: bool = True             # N shared low-rank experts in each mixture
    specific: bool = True           # a task-specific expert in each mixture
    full_rank: bool = False         # experts of rank d_model instead of r
    joint: bool = False             # both tasks read one UniTSE and fusion path (no task-specific branches)


VARIANTS = {
    "mmolre": Variant(),
    "no_shared": Variant(shared=False),
    "no_specific": Variant(specific=False),
    "full_rank": Variant(full_rank=True),
    "hard_sharing": Variant(specific=False, joint=True),
    "msa_only": Variant(tasks=("sa",)),
    "mer_only": Variant(tasks=("er",)),
}


def one_of(key: str, value, allowed) -> str | None:
    """The broken rule when `value` is not among `allowed`, else None."""
    if value in allowed:
        return None
    return f"{key}={value!r}: choose one of {', '.join(allowed)}"


def field_rules(cfg: "MMoLREConfig") -> list[str]:
    """The rules of a field model's run: MMSA's three modalities, a preset of a corpus MMSA tuned, its keys, one
    sentiment intensity (MMSA's regression); and the field keys' values for every arch."""
    named = [None if cfg.field_preset in ("",) + CORPORA else (f"field_preset={cfg.field_preset!r}: choose one of "
                                                                f"{', '.join(CORPORA)} (empty: the data's dataset)"),
             one_of("field_view", cfg.field_view, ("own", "loader"))]
    if any(named):
        return [rule for rule in named if rule]
    if cfg.arch not in FIELD_ARCHS:
        return [f"field_settings={cfg.field_settings}: keys of the field's models' presets; arch={cfg.arch} has "
                "none"] if cfg.field_settings else []
    rules = []
    if set(cfg.modalities) != set(FIELD_MODALITIES):
        rules.append(f"arch={cfg.arch} reads text, audio and video, as MMSA's does: set modalities: "
                     "[text, audio, video]")
    if cfg.field_preset or cfg.field_settings:  # without a preset yet (params), the keys against MOSI's
        try:
            preset(cfg.arch, cfg.field_preset or CORPORA[0], **cfg.field_settings)
        except ValueError as e:
            rules.append(f"field_preset={cfg.field_preset}, field_settings: {e}")
    sa = LABEL_SPACES.get(cfg.label_space, {}).get("sa")
    if sa is not None and (sa.kind != "regression" or sa.outputs != 1):
        rules.append(f"arch={cfg.arch} predicts one sentiment intensity (MMSA's regression); label space "
                     f"{cfg.label_space} has sentiment as {sa.kind}")
    return rules


@dataclass
class MMoLREConfig:
    # width of each modality's features (the paper's: roberta-base and data2vec-audio-base, 768 each)
    dims: dict[str, int] = field(default_factory=lambda: {m.name: m.paper_dim for m in MODALITIES.values()})
    d_model: int = 768           # d [paper]
    n_experts: int = 15          # N shared low-rank experts per mixture [paper: best N = 15]
    rank: int | tuple[int, ...] = 128  # r_n: one rank for every expert, or one per shared expert [paper: best 128]
    kernel_size: int = 3         # kernel of an expert's first convolution [paper]
    expert: str = "lowrank_conv"  # lowrank_conv [paper] | lowrank_linear: first layer k=1 (LoRA-style, no temporal kernel)
    router: str = "dense"        # dense [paper]: softmax over all experts | topk: the top_k largest gates, renormalised
    top_k: int = 2               # experts kept per token with router=topk
    top_p: float = 0.7           # router=top_p: per token the fewest experts whose gates reach p, renormalised [ours]
    aux_loss_weight: float = 0.01  # weight of the load-balancing loss with router=topk [ours]
    n_blocks: int = 2            # UniTSE blocks per modality [paper]
    n_heads: int = 8             # heads of the cross-modal attention in fusion [ours]
    dropout: float = 0.1         # [ours]
    label_space: str = DEFAULT   # what the heads predict and the losses compare (mmolre/label_spaces.py)
    modalities: tuple[str, ...] = PAPER_MODALITIES  # any of mmolre/modalities.py: one gives a unimodal run
    context: str = "none"        # none [paper] | dialogue: after fusion, the k previous utterances' fused vectors [ours]
    context_window: int = 2      # k, the previous utterances of its dialogue an utterance sees [ours]
    variant: str = "mmolre"      # a key of VARIANTS: an ablation of the paper
    arch: str = "mmolre"         # mmolre | a fusion-only variant on the same inputs, heads and loss (mmolre/baselines/)
                                 # | a field model as MMSA trains it (FIELD_ARCHS, mmolre/field/)
    field_preset: str = ""       # field archs: the corpus whose MMSA preset they take (mosi | mosei | sims); "" in
                                 # params: the data's dataset (train fills it in)
    field_settings: dict = field(default_factory=dict)  # field archs: preset keys replaced (mmolre/field/presets.py)
    field_view: str = "own"      # the features' data view (data.processed_view; train fills it in): loader = what
                                 # MMSA's loader hands its models, read as MMSA's models read it
    fusion_dim: int = 32         # baselines: width of each modality's pooled vector [ours]
    fusion_rank: int = 4         # lmf: rank R of the modality factors [ours]
    mult_layers: int = 2         # mult: layers of each crossmodal and self-attention transformer [ours]
    misa_sim_weight: float = 1.0    # misa: weight of L_sim (CMD of the invariant vectors) [ours]
    misa_diff_weight: float = 0.3   # misa: weight of L_diff (soft orthogonality) [ours]
    misa_recon_weight: float = 1.0  # misa: weight of L_recon (reconstruction) [ours]
    fused_experts: bool = True   # mixture as two wide convolutions; False = loop over experts
    er_loss_weight: float = 1.0  # lambda in L = L_SA + lambda * L_ER [ours]
    emotion_pos_weight: tuple[float, ...] | None = None  # BCE positive-class weights [ours]

    def __post_init__(self):
        self.modalities = tuple(self.modalities)
        self.dims = {m: int(d) for m, d in self.dims.items()}
        if isinstance(self.rank, (list, tuple)):
            self.rank = tuple(int(r) for r in self.rank)
        if self.emotion_pos_weight is not None:
            self.emotion_pos_weight = tuple(float(w) for w in self.emotion_pos_weight)
        broken = self.broken_rules()
        if broken:
            raise ValueError("\n".join(broken))

    def broken_rules(self) -> list[str]:
        """Every rule the values break, one sentence each naming the keys."""
        rules = [one_of("variant", self.variant, VARIANTS), one_of("expert", self.expert, EXPERTS),
                 one_of("router", self.router, ROUTERS), one_of("label_space", self.label_space, LABEL_SPACES),
                 one_of("context", self.context, CONTEXTS), one_of("arch", self.arch, ARCHS)]
        rules += field_rules(self)
        field_variants = ("mmolre", "msa_only") if self.arch in FIELD_ARCHS else ("mmolre",)
        if self.arch != "mmolre" and (self.variant not in field_variants or self.context != "none"):
            rules.append(f"arch={self.arch}: variant and context are MMoLRE's (keep variant=mmolre, context=none)")
        if self.fusion_dim < 1 or self.fusion_rank < 1 or self.mult_layers < 1:
            rules.append(f"fusion_dim={self.fusion_dim}, fusion_rank={self.fusion_rank} and mult_layers="
                         f"{self.mult_layers} must be >= 1")
        if self.arch == "fusion_misa" and self.fusion_dim % self.n_heads:
            rules.append(f"arch=fusion_misa: n_heads={self.n_heads} must divide fusion_dim={self.fusion_dim} (its "
                         f"self-attention over the subspace vectors)")
        if not 0 < self.top_p <= 1:
            rules.append(f"top_p={self.top_p} must lie in (0, 1] (the router probability the kept experts reach)")
        if self.context_window < 1:
            rules.append(f"context_window={self.context_window} must be >= 1 (previous utterances seen)")
        if self.variant in VARIANTS and self.label_space in LABEL_SPACES and not self.tasks:
            rules.append(f"variant={self.variant} has a head for {', '.join(self.ablation.tasks)} only, and label "
                         f"space {self.label_space} labels {', '.join(LABEL_SPACES[self.label_space])} only")
        rules += [one_of("modalities", m, MODALITIES) for m in self.modalities]
        if not self.modalities or len(set(self.modalities)) < len(self.modalities):
            rules.append(f"modalities={list(self.modalities)}: a non-empty subset of {', '.join(MODALITIES)}")
        unsized = [m for m in self.modalities if m in MODALITIES and m not in self.dims]
        if unsized:
            rules.append(f"modalities={list(self.modalities)}: no feature width (dims) for {', '.join(unsized)}")
        if self.d_model % self.n_heads:
            rules.append(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        ranks = self.rank if isinstance(self.rank, tuple) else (self.rank,)
        if isinstance(self.rank, tuple) and len(self.rank) != self.n_experts:
            rules.append(f"rank={list(self.rank)} needs one rank per shared expert (n_experts={self.n_experts})")
        if max(ranks) > self.d_model:
            rules.append(f"rank={self.rank} must be <= d_model={self.d_model} (a low-rank expert)")
        if self.router == "topk" and self.variant in VARIANTS and not 1 <= self.top_k <= self.mixture_size:
            rules.append(f"top_k={self.top_k}: a mixture has {self.mixture_size} expert(s) with n_experts="
                         f"{self.n_experts} and variant={self.variant}; choose 1 <= top_k <= {self.mixture_size}")
        return [rule for rule in rules if rule]

    @property
    def ablation(self) -> Variant:
        return VARIANTS[self.variant]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The heads: the variant's tasks that the label space labels."""
        return tuple(t for t in self.ablation.tasks if t in LABEL_SPACES[self.label_space])

    @property
    def heads(self) -> dict[str, Task]:
        """task -> what its head predicts."""
        return {t: LABEL_SPACES[self.label_space][t] for t in self.tasks}

    @classmethod
    def from_saved(cls, values: dict) -> "MMoLREConfig":
        """The config of a saved model; one saved before label spaces existed has n_emotions (6: cmu), one
        saved before the modality registry text_dim and audio_dim."""
        values = dict(values)
        if values.pop("n_emotions", 6) != 6:
            raise ValueError("n_emotions other than 6 without a label_space")
        widths = {m: values.pop(f"{m}_dim") for m in PAPER_MODALITIES if f"{m}_dim" in values}
        if widths:
            values["dims"] = widths
        return cls(**values)

    @property
    def branches(self) -> tuple[str, ...]:
        """Paths through UniTSE and fusion: one per task, or one JOINT path for both (hard sharing)."""
        return (JOINT,) if self.ablation.joint else self.tasks

    @property
    def n_shared(self) -> int:
        return self.n_experts if self.ablation.shared else 0

    @property
    def task_specific(self) -> bool:
        return self.ablation.specific

    @property
    def mixture_size(self) -> int:
        """Experts a router chooses among: the shared ones and the task-specific one."""
        return self.n_shared + int(self.task_specific)

    @property
    def expert_rank(self) -> int | tuple[int, ...]:
        return self.d_model if self.ablation.full_rank else self.rank

    @property
    def shared_ranks(self) -> tuple[int, ...]:
        """r_n of each shared expert."""
        r = self.expert_rank
        if not self.n_shared:
            return ()
        return r if isinstance(r, tuple) else (r,) * self.n_shared

    @property
    def specific_rank(self) -> int:
        """Rank of the task-specific experts: the shared experts' rank, or their largest when they differ [ours]."""
        r = self.expert_rank
        return max(r) if isinstance(r, tuple) else r

    @property
    def context_params(self) -> int:
        """Parameters of the dialogue-context module: W (d x 2d) and b per branch (0 without context)."""
        d = self.d_model
        return len(self.branches) * (2 * d * d + d) if self.context == "dialogue" else 0

    @property
    def expert_kernel(self) -> int:
        return 1 if self.expert == "lowrank_linear" else self.kernel_size
