"""`mmolre model-info`: parameters and forward FLOPs per utterance, closed form and measured.

FLOPs count multiply-adds twice (2 x MACs) in matrix products and convolutions, the
operations torch.utils.flop_counter counts; normalisation, activations and softmax are
left out. The count is that of the fused mixture (the default). Defaults: the paper's size (d=768, N=15, r=128,
RoBERTa/Data2Vec widths) with a 50-token text and 250 audio frames (5 s of Data2Vec frames), next to its full-rank
twin; `--modalities text,audio,video` adds the video stream (768-d, 25 frames: 5 s at 5 fps).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mmolre import MmolreError
from mmolre.architectures import build_model
from mmolre.model import MMoLRE, MMoLREConfig
from mmolre.modalities import MODALITIES
from mmolre.model_config import ARCHS

PAPER = MMoLREConfig()  # the defaults are the paper's size
USES_PARAMS = False  # the sizes come from the command line


def expert_params(d: int, r: int, k: int) -> int:
    return k * d * r + r + r * d + d


def input_params(cfg: MMoLREConfig) -> int:
    """The input projections (a modality already d wide has none)."""
    dims = cfg.dims
    return sum(dims[x] * cfg.d_model + cfg.d_model for x in cfg.modalities if dims[x] != cfg.d_model)


def head_params(cfg: MMoLREConfig) -> int:
    d = cfg.d_model
    return sum(d * (d // 2) + d // 2 + (d // 2) * task.outputs + task.outputs for task in cfg.heads.values())


def attention_layer_params(w: int, cross: bool) -> int:
    """A transformer layer of width w (mult.AttentionLayer; MISA's nn.TransformerEncoderLayer): attention, FFN
    4w, two LayerNorms (three with keys of another sequence)."""
    return (4 * w * w + 4 * w) + (8 * w * w + 5 * w) + 2 * w * (3 if cross else 2)


def fusion_params(cfg: MMoLREConfig) -> int:
    """A baseline's layers after the input projections (the pooled baselines: after their pooled layers)."""
    d, f, m, r, n = cfg.d_model, cfg.fusion_dim, len(cfg.modalities), cfg.fusion_rank, cfg.mult_layers
    if cfg.arch == "fusion_mult":
        sources = max(m - 1, 1)
        cross = m * (m - 1) * (n * attention_layer_params(d, True) + 2 * d)
        own = m * (n * attention_layer_params(sources * d, False) + 2 * sources * d)
        return cross + own + m * sources * d * d + d
    if cfg.arch == "fusion_misa":  # E_c, the E_p^m, the decoder; a Transformer encoder layer; out
        return (m + 2) * (f * f + f) + attention_layer_params(f, False) + 2 * m * f * d + d
    return {"late_fusion": m * f * d + d, "fusion_tfn": (f + 1) ** m * d + d,
            "fusion_lmf": m * (f + 1) * r * d + r + d}[cfg.arch]


def baseline_params(cfg: MMoLREConfig) -> int:
    """A fusion baseline (mmolre/baselines/): pooled unimodal layers (all but mult), its fusion, the heads."""
    pooled = 0 if cfg.arch == "fusion_mult" else len(cfg.modalities) * (cfg.d_model * cfg.fusion_dim + cfg.fusion_dim)
    return input_params(cfg) + pooled + fusion_params(cfg) + head_params(cfg)


def closed_form_params(cfg: MMoLREConfig) -> int:
    if cfg.arch != "mmolre":
        return baseline_params(cfg)
    d, k, n, m = cfg.d_model, cfg.expert_kernel, cfg.n_shared, len(cfg.modalities)
    b, s = len(cfg.branches), int(cfg.task_specific)
    experts = sum(expert_params(d, r, k) for r in cfg.shared_ranks) + b * s * expert_params(d, cfg.specific_rank, k)
    block = experts + b * (d * (n + s) + n + s) + b * 2 * d
    attention = m * (4 * d * d + 4 * d + 2 * d) if m >= 2 else 0  # per modality an MHA layer and a LayerNorm
    fusion = b * (attention + m * d * m + m)
    return input_params(cfg) + m * cfg.n_blocks * block + fusion + head_params(cfg) + cfg.context_params


def input_flops(cfg: MMoLREConfig, lengths: dict[str, int]) -> int:
    dims = cfg.dims
    return sum(2 * dims[x] * cfg.d_model * lengths[x] for x in cfg.modalities if dims[x] != cfg.d_model)


def head_flops(cfg: MMoLREConfig) -> int:
    d = cfg.d_model
    return sum(2 * d * (d // 2) + 2 * (d // 2) * task.outputs for task in cfg.heads.values())


def attention_flops(w: int, t_query: int, t_keys: int) -> int:
    """Multi-head attention of width w: projections q, out (query length) and k, v (key length), scores and
    values."""
    return 4 * t_query * w * w + 4 * t_keys * w * w + 4 * t_query * t_keys * w


def attention_layer_flops(w: int, t_query: int, t_keys: int) -> int:
    """A transformer layer: its attention and the FFN of width 4w."""
    return attention_flops(w, t_query, t_keys) + 16 * t_query * w * w


def fusion_flops(cfg: MMoLREConfig, lengths: dict[str, int]) -> int:
    """Matrix products only: the outer product, LMF's factor products and sums are elementwise (not counted);
    MISA's decoder runs only for its training losses."""
    d, f, m, r, n = cfg.d_model, cfg.fusion_dim, len(cfg.modalities), cfg.fusion_rank, cfg.mult_layers
    if cfg.arch == "fusion_mult":
        total, sources = 2 * m * max(m - 1, 1) * d * d, max(m - 1, 1)
        for target in cfg.modalities:
            t = lengths[target]
            total += sum(n * attention_layer_flops(d, t, lengths[s]) for s in cfg.modalities if s != target)
            total += n * attention_layer_flops(sources * d, t, t)
        return total
    if cfg.arch == "fusion_misa":
        return 2 * m * 2 * f * f + attention_layer_flops(f, 2 * m, 2 * m) + 2 * 2 * m * f * d
    return {"late_fusion": 2 * m * f * d, "fusion_tfn": 2 * (f + 1) ** m * d,
            "fusion_lmf": m * 2 * (f + 1) * r * d}[cfg.arch]


def baseline_flops(cfg: MMoLREConfig, lengths: dict[str, int]) -> int:
    pooled = 0 if cfg.arch == "fusion_mult" else len(cfg.modalities) * 2 * cfg.d_model * cfg.fusion_dim
    return input_flops(cfg, lengths) + pooled + fusion_flops(cfg, lengths) + head_flops(cfg)


def closed_form_flops(cfg: MMoLREConfig, lengths: dict[str, int]) -> int:
    """Forward FLOPs of one utterance (batch of one, no padding) of `lengths` (modality -> positions)."""
    if cfg.arch != "mmolre":
        return baseline_flops(cfg, lengths)
    d, k, n = cfg.d_model, cfg.expert_kernel, cfg.n_shared
    b, s, m = len(cfg.branches), int(cfg.task_specific), len(cfg.modalities)
    hidden = lambda r: 2 * k * d * r  # per expert of rank r and token: first conv
    out = lambda r: 2 * r * d + 2 * d  # second conv + gated bias
    shared_hidden, shared_out = sum(map(hidden, cfg.shared_ranks)), sum(map(out, cfg.shared_ranks))
    specific = hidden(cfg.specific_rank) + out(cfg.specific_rank)
    total = input_flops(cfg, lengths)
    for x in cfg.modalities:
        t = lengths[x]
        for block in range(cfg.n_blocks):
            once = shared_hidden * (1 if block == 0 else b)  # block 1: computed once for every branch
            per_branch = 2 * d * (n + s) + shared_out + s * specific  # router, gated second convs, task expert
            total += t * (once + b * per_branch)
    attention = sum(attention_flops(d, lengths[q], sum(lengths[o] for o in cfg.modalities if o != q))
                    for q in cfg.modalities) if m >= 2 else 0  # per branch each modality attends to the others
    total += b * (attention + 2 * m * d * m + 2 * m * d)  # gate over the pooled [p_1; ...; p_M], weighted sum
    total += head_flops(cfg)
    if cfg.context == "dialogue":  # W [h; c] per branch (the mean over k previous vectors: additions, not counted)
        total += b * 2 * (2 * d) * d
    return total


def measured_flops(model: MMoLRE, lengths: dict[str, int]) -> int:
    cfg, given = model.config, {}
    for m in cfg.modalities:
        given |= {m: torch.zeros(1, lengths[m], cfg.dims[m]), f"{m}_mask": torch.ones(1, lengths[m], dtype=torch.bool)}
    given |= model.example_inputs(lengths) if hasattr(model, "example_inputs") else {}
    # torch's counter has no formula for the CPU flash-attention kernel that MultiheadAttention runs here
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                     lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused self-attention kernel is not counted either
    try:
        with counter, torch.no_grad():
            model.eval()(**given)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def info_rows(cfg: MMoLREConfig, lengths: dict[str, int], measure: bool) -> list[dict]:
    """MMoLRE and its full-rank twin, or the one baseline of `cfg.arch` (rank: its fusion_rank, fusion_lmf only)."""
    rows = []
    models = ((("low-rank", cfg), ("full-rank twin", dataclasses.replace(cfg, variant="full_rank")))
              if cfg.arch == "mmolre" else ((cfg.arch, cfg),))
    for name, variant_cfg in models:
        rank = (variant_cfg.expert_rank if cfg.arch == "mmolre" else
                cfg.fusion_rank if cfg.arch == "fusion_lmf" else "–")
        row = {"model": name, "rank": rank, "params": closed_form_params(variant_cfg),
               "flops": closed_form_flops(variant_cfg, lengths)}
        if measure:
            model = build_model(variant_cfg)
            row["params_measured"] = sum(p.numel() for p in model.parameters())
            row["flops_measured"] = measured_flops(model, lengths)
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d-model", type=int, default=PAPER.d_model)
    parser.add_argument("--n-experts", type=int, default=PAPER.n_experts)
    parser.add_argument("--rank", type=int, default=PAPER.rank)
    parser.add_argument("--modalities", default=",".join(PAPER.modalities),
                        help=f"comma-separated, of {', '.join(MODALITIES)} (default: the paper's)")
    for m in MODALITIES.values():  # --text-dim, --text-tokens, --audio-dim, --audio-frames, --video-dim, ...
        parser.add_argument(f"--{m.name}-dim", type=int, default=m.paper_dim, help=f"width of the {m.name} features")
        parser.add_argument(f"--{m.name}-{'tokens' if m.name == 'text' else 'frames'}", type=int,
                            default=m.example_length, dest=f"{m.name}_length", help=f"{m.name} positions per utterance")
    parser.add_argument("--context", choices=("none", "dialogue"), default="none",
                        help="with the dialogue-context module after fusion (model.context)")
    parser.add_argument("--arch", choices=(*ARCHS, "all"), default="mmolre",
                        help="MMoLRE (with its full-rank twin), a fusion baseline of model.arch, or all of them")
    parser.add_argument("--fusion-dim", type=int, default=PAPER.fusion_dim, help="baselines' pooled width")
    parser.add_argument("--fusion-rank", type=int, default=PAPER.fusion_rank, help="lmf's rank R")
    parser.add_argument("--no-measure", action="store_true", help="closed form only (no model is built)")


def run(args: argparse.Namespace, params: dict) -> None:
    modalities = tuple(m.strip() for m in args.modalities.split(","))
    try:
        cfg = dataclasses.replace(PAPER, d_model=args.d_model, n_experts=args.n_experts, rank=args.rank,
                                  dims={m: getattr(args, f"{m}_dim") for m in MODALITIES}, modalities=modalities,
                                  context=args.context, fusion_dim=args.fusion_dim, fusion_rank=args.fusion_rank)
    except ValueError as e:
        raise MmolreError(f"model-info: {e}") from None
    lengths = {m: getattr(args, f"{m}_length") for m in modalities}
    archs = ARCHS if args.arch == "all" else (args.arch,)
    rows = [row for arch in archs for row in info_rows(dataclasses.replace(cfg, arch=arch), lengths,
                                                       not args.no_measure)]
    shape = " + ".join(f"{n} {m} {'tokens' if m == 'text' else 'frames'}" for m, n in lengths.items())
    print(f"MMoLRE d={cfg.d_model}, N={cfg.n_experts}, {cfg.n_blocks} blocks, context {cfg.context}; one utterance of "
          f"{shape}")
    print(f"{'model':<16}{'rank':>6}{'parameters':>16}{'GFLOPs/utt':>14}" + ("  measured (params, GFLOPs)" if
                                                                             not args.no_measure else ""))
    for row in rows:
        line = f"{row['model']:<16}{row['rank']:>6}{row['params']:>16,}{row['flops'] / 1e9:>14.3f}"
        if "flops_measured" in row:
            line += f"  {row['params_measured']:,}, {row['flops_measured'] / 1e9:.3f}"
        print(line)
    named = {row["model"]: row for row in rows}
    if "low-rank" in named:
        low, full = named["low-rank"], named["full-rank twin"]
        print(f"full-rank / low-rank: {full['params'] / low['params']:.2f}x parameters, "
              f"{full['flops'] / low['flops']:.2f}x FLOPs")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("model-info")
