"""`mmolre model-info`: parameters and forward FLOPs per utterance, closed form and measured.

FLOPs count multiply-adds twice (2 x MACs) in matrix products and convolutions, the
operations torch.utils.flop_counter counts; normalisation, activations and softmax are
left out. The count is that of the fused mixture (the default). Defaults: the paper's size (d=768, N=15, r=128, RoBERTa/Data2Vec widths) with a
50-token text and 250 audio frames (5 s of Data2Vec frames), next to its full-rank twin.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mmolre.model import MMoLRE, MMoLREConfig

PAPER = MMoLREConfig()  # the defaults are the paper's size
USES_PARAMS = False  # the sizes come from the command line


def expert_params(d: int, r: int, k: int) -> int:
    return k * d * r + r + r * d + d


def closed_form_params(cfg: MMoLREConfig) -> int:
    d, k, n, m = cfg.d_model, cfg.expert_kernel, cfg.n_shared, len(cfg.modalities)
    b, s = len(cfg.branches), int(cfg.task_specific)
    experts = sum(expert_params(d, r, k) for r in cfg.shared_ranks) + b * s * expert_params(d, cfg.specific_rank, k)
    block = experts + b * (d * (n + s) + n + s) + b * 2 * d
    dims = {"text": cfg.text_dim, "audio": cfg.audio_dim}
    inputs = sum(dims[x] * d + d for x in cfg.modalities if dims[x] != d)
    attention = 2 * (4 * d * d + 4 * d) + 2 * 2 * d if m == 2 else 0  # two MHA layers, two LayerNorms
    fusion = b * (attention + m * d * m + m)
    heads = sum(d * (d // 2) + d // 2 + (d // 2) * task.outputs + task.outputs for task in cfg.heads.values())
    return inputs + len(cfg.modalities) * cfg.n_blocks * block + fusion + heads + cfg.context_params


def closed_form_flops(cfg: MMoLREConfig, t_text: int, t_audio: int) -> int:
    """Forward FLOPs of one utterance (batch of one, no padding)."""
    d, k, n = cfg.d_model, cfg.expert_kernel, cfg.n_shared
    b, s, m = len(cfg.branches), int(cfg.task_specific), len(cfg.modalities)
    dims = {"text": cfg.text_dim, "audio": cfg.audio_dim}
    lengths = {"text": t_text, "audio": t_audio}
    hidden = lambda r: 2 * k * d * r  # per expert of rank r and token: first conv
    out = lambda r: 2 * r * d + 2 * d  # second conv + gated bias
    shared_hidden, shared_out = sum(map(hidden, cfg.shared_ranks)), sum(map(out, cfg.shared_ranks))
    specific = hidden(cfg.specific_rank) + out(cfg.specific_rank)
    total = 0
    for x in cfg.modalities:
        t = lengths[x]
        total += 2 * dims[x] * d * t if dims[x] != d else 0
        for block in range(cfg.n_blocks):
            once = shared_hidden * (1 if block == 0 else b)  # block 1: computed once for every branch
            per_branch = 2 * d * (n + s) + shared_out + s * specific  # router, gated second convs, task expert
            total += t * (once + b * per_branch)
    if m == 2:  # per branch, text attends to audio and audio to text
        tt, ta = t_text, t_audio
        attention = 2 * d * d * (tt + 2 * ta + tt) + 4 * tt * ta * d  # projections q, k, v, out; scores + values
        attention += 2 * d * d * (ta + 2 * tt + ta) + 4 * ta * tt * d
    else:
        attention = 0
    total += b * (attention + 2 * m * d * m + 2 * m * d)  # gate over [p_t; p_a], weighted sum of pooled vectors
    total += sum(2 * d * (d // 2) + 2 * (d // 2) * task.outputs for task in cfg.heads.values())
    if cfg.context == "dialogue":  # W [h; c] per branch (the mean over k previous vectors: additions, not counted)
        total += b * 2 * (2 * d) * d
    return total


def measured_flops(model: MMoLRE, t_text: int, t_audio: int) -> int:
    cfg = model.config
    given = {}
    if "text" in cfg.modalities:
        given |= {"text": torch.zeros(1, t_text, cfg.text_dim), "text_mask": torch.ones(1, t_text, dtype=torch.bool)}
    if "audio" in cfg.modalities:
        given |= {"audio": torch.zeros(1, t_audio, cfg.audio_dim),
                  "audio_mask": torch.ones(1, t_audio, dtype=torch.bool)}
    # torch's counter has no formula for the CPU flash-attention kernel that MultiheadAttention runs here
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                     lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    with counter, torch.no_grad():
        model.eval()(**given)
    return counter.get_total_flops()


def info_rows(cfg: MMoLREConfig, t_text: int, t_audio: int, measure: bool) -> list[dict]:
    rows = []
    for name, variant_cfg in (("low-rank", cfg), ("full-rank twin", dataclasses.replace(cfg, variant="full_rank"))):
        row = {"model": name, "rank": variant_cfg.expert_rank, "params": closed_form_params(variant_cfg),
               "flops": closed_form_flops(variant_cfg, t_text, t_audio)}
        if measure:
            model = MMoLRE(variant_cfg)
            row["params_measured"] = sum(p.numel() for p in model.parameters())
            row["flops_measured"] = measured_flops(model, t_text, t_audio)
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d-model", type=int, default=PAPER.d_model)
    parser.add_argument("--n-experts", type=int, default=PAPER.n_experts)
    parser.add_argument("--rank", type=int, default=PAPER.rank)
    parser.add_argument("--text-dim", type=int, default=PAPER.text_dim)
    parser.add_argument("--audio-dim", type=int, default=PAPER.audio_dim)
    parser.add_argument("--text-tokens", type=int, default=50)
    parser.add_argument("--audio-frames", type=int, default=250)
    parser.add_argument("--context", choices=("none", "dialogue"), default="none",
                        help="with the dialogue-context module after fusion (model.context)")
    parser.add_argument("--no-measure", action="store_true", help="closed form only (no model is built)")


def run(args: argparse.Namespace, params: dict) -> None:
    cfg = dataclasses.replace(PAPER, d_model=args.d_model, n_experts=args.n_experts, rank=args.rank,
                              text_dim=args.text_dim, audio_dim=args.audio_dim, context=args.context)
    rows = info_rows(cfg, args.text_tokens, args.audio_frames, not args.no_measure)
    print(f"MMoLRE d={cfg.d_model}, N={cfg.n_experts}, {cfg.n_blocks} blocks, context {cfg.context}; one utterance of "
          f"{args.text_tokens} text tokens + {args.audio_frames} audio frames")
    print(f"{'model':<16}{'rank':>6}{'parameters':>16}{'GFLOPs/utt':>14}" + ("  measured (params, GFLOPs)" if
                                                                             not args.no_measure else ""))
    for row in rows:
        line = f"{row['model']:<16}{row['rank']:>6}{row['params']:>16,}{row['flops'] / 1e9:>14.3f}"
        if "flops_measured" in row:
            line += f"  {row['params_measured']:,}, {row['flops_measured'] / 1e9:.3f}"
        print(line)
    low, full = rows
    print(f"full-rank / low-rank: {full['params'] / low['params']:.2f}x parameters, "
          f"{full['flops'] / low['flops']:.2f}x FLOPs")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("model-info")
