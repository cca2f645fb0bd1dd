"""Training-step speed of MMoLRE at the paper's size: loop vs fused mixture, fp32 vs bf16, eager vs compiled.

    python benchmarks/train_step.py                    # CPU or GPU, whichever is there
    python benchmarks/train_step.py --only mixture     # just one UniTSE mixture, fwd+bwd
    python benchmarks/train_step.py --only step --profile   # and the fused step's top operators
    python benchmarks/train_step.py --only optimizer   # the step with each AdamW implementation

Prints a table (step time, samples/s, achieved TFLOP/s and MFU = executed FLOPs per second / the
measured dense matmul rate of the same dtype on the same device and threads: a GPU's bf16 tensor
cores, or this CPU's cores, so every machine gives a ratio to its own limit).
Executed FLOPs per step are counted by torch (FlopCounterMode, fwd + bwd, times the batch); the
usual 3 x forward convention (closed form, mmolre.model_info) is printed beside it and overcounts,
since the first layers compute no input gradient. Results go to benchmarks/RESULTS.md by hand,
with date, device and command.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from mmolre.model import ExpertGroup, ExpertMixture, MMoLRE, MMoLREConfig
from mmolre.model_info import closed_form_flops
from mmolre.train import make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, repeats: int) -> float:
    """Median seconds of fn() after warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype=torch.bfloat16) -> float:
    """Measured dense FLOP/s (the MFU denominator): the best of a square matmul, the model's widest GEMM
    shapes (B*T x d x N*r, both ways) and its widest convolution (d -> N*r, k=3) run as a convolution,
    since the libraries differ (on AMD CPUs MKL's GEMM runs at half oneDNN's convolution rate in fp32):
    a roofline no step of this model can beat."""
    batch, frames, d, wide = (32, 512, 768, 1920) if device.type == "cuda" else (32, 300, 768, 1920)
    shapes = [(8192,) * 3 if device.type == "cuda" else (2048,) * 3, (batch * frames, d, wide), (batch * frames, wide, d)]
    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        rates.append(2 * m * k * n / timed(lambda: a @ b, device, 2, 5))
    x = torch.randn(batch, d, frames, device=device, dtype=dtype)
    w = torch.randn(wide, d, 3, device=device, dtype=dtype)
    rates.append(2 * batch * frames * d * wide * 3 / timed(lambda: torch.nn.functional.conv1d(x, w, padding=1),
                                                           device, 2, 5))
    return max(rates)


def executed_step_flops(cfg: MMoLREConfig, batch: int, tokens: int, frames: int) -> int:
    """FLOPs a training step really executes (forward + backward, counted by torch on one utterance,
    times the batch). Lower than the 3 x forward convention: the first layers compute no input gradient."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    model = MMoLRE(cfg).train()
    inputs = {"text": torch.randn(1, tokens, cfg.dims["text"]), "text_mask": torch.ones(1, tokens, dtype=torch.bool),
              "audio": torch.randn(1, frames, cfg.dims["audio"]), "audio_mask": torch.ones(1, frames, dtype=torch.bool),
              "sentiment": torch.zeros(1), "emotions": torch.zeros(1, 6)}
    aten = torch.ops.aten  # torch's counter has no formula for the CPU flash-attention kernels
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    with counter:
        model(**inputs).loss.backward()
    return counter.get_total_flops() * batch


def mixture_case(cfg: MMoLREConfig, batch: int, frames: int, device, dtype, warmup, repeats) -> float:
    torch.manual_seed(0)
    shared = ExpertGroup(cfg.shared_ranks, cfg.d_model, cfg.expert_kernel, cfg.fused_experts)
    mixture = ExpertMixture(shared, cfg.specific_rank, cfg.d_model, cfg.expert_kernel, cfg.fused_experts)
    shared.to(device); mixture.to(device)
    x = torch.randn(batch, frames, cfg.d_model, device=device, requires_grad=True)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y, _, _ = mixture(x)
        y.float().sum().backward()

    return timed(step, device, warmup, repeats)


def training_step(cfg: MMoLREConfig, batch: int, tokens: int, frames: int, device, dtype, compiled: bool = False,
                  adamw: dict | None = None):
    """A function running one training step of a fresh model on random inputs, as train does it (autocast
    in bf16, AdamW as train builds it unless `adamw` gives AdamW's own options, gradient clipping)."""
    torch.manual_seed(0)
    model = MMoLRE(cfg).to(device)
    stepper = torch.compile(model) if compiled else model
    optimizer = make_optimizer(model, 1e-4, 0.01, device) if adamw is None else \
        torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **adamw)
    inputs = {"text": torch.randn(batch, tokens, cfg.dims["text"], device=device),
              "text_mask": torch.ones(batch, tokens, dtype=torch.bool, device=device),
              "audio": torch.randn(batch, frames, cfg.dims["audio"], device=device),
              "audio_mask": torch.ones(batch, frames, dtype=torch.bool, device=device),
              "sentiment": torch.randn(batch, device=device), "emotions": torch.rand(batch, 6, device=device)}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = stepper(**inputs)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def train_step_case(cfg: MMoLREConfig, batch: int, tokens: int, frames: int, device, dtype, compiled: bool,
                    warmup: int, repeats: int) -> float:
    return timed(training_step(cfg, batch, tokens, frames, device, dtype, compiled), device, warmup, repeats)


def profile_case(cfg: MMoLREConfig, batch: int, tokens: int, frames: int, device, dtype, steps: int = 2) -> None:
    """Top operators of the fused training step by self time on `device` (CUDA kernels on a GPU, operators
    on a CPU), and the share of the expert weights' concatenation (aten::cat / aten::stack): whether one
    stacked parameter per group would matter."""
    from torch.profiler import ProfilerActivity, profile

    step = training_step(cfg, batch, tokens, frames, device, dtype)
    step(); sync(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    events = prof.key_averages()
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(self_time(e) for e in events)
    ops = sum(e.count for e in events if e.key.startswith("aten::")) // steps
    kernels = sum(e.count for e in events if cuda and e.device_type == torch.autograd.DeviceType.CUDA) // steps
    print(f"\nprofile of the fused step ({'bf16' if dtype == torch.bfloat16 else 'fp32'}, {steps} steps): "
          f"{total / steps / 1e3:.1f} ms of {'GPU kernel' if cuda else 'CPU operator'} self time per step, "
          f"{ops} aten operator calls" + (f", {kernels} kernels" if cuda else "") + " per step")
    for e in sorted(events, key=self_time, reverse=True)[:12]:
        print(f"  {e.key[:60]:<62}{self_time(e) / steps / 1e3:>9.2f} ms{self_time(e) / total:>7.1%}{e.count // steps:>7} calls")
    concat = sum(self_time(e) for e in events if e.key in ("aten::cat", "aten::stack"))
    print(f"  weight concatenation (aten::cat + aten::stack): {concat / steps / 1e3:.2f} ms, {concat / total:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=50)
    parser.add_argument("--audio-frames", type=int, default=250)
    parser.add_argument("--only", choices=["mixture", "step", "optimizer"],
                        help="run one part (optimizer: the fused step with AdamW's for-loop, foreach and fused "
                             "implementations; only when asked for)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile cases")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile the fused step (top operators)")
    parser.add_argument("--d-model", type=int, default=MMoLREConfig.d_model, help="default: the paper's size")
    parser.add_argument("--n-experts", type=int, default=MMoLREConfig.n_experts)
    parser.add_argument("--rank", type=int, default=MMoLREConfig.rank)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'CPU'}, " \
                                                                       f"{torch.get_num_threads()} threads"
    cfg = MMoLREConfig(d_model=args.d_model, n_experts=args.n_experts, rank=args.rank)  # default: the paper's
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}, text {args.text_tokens} tokens, "
          f"audio {args.audio_frames} frames, d={cfg.d_model}, N={cfg.n_experts}, r={cfg.rank}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    if args.only in (None, "mixture"):
        print(f"\none UniTSE mixture ({cfg.n_experts} shared + 1 task expert), fwd+bwd, input (B, audio frames, d)")
        print(f"{'experts':<8}{'dtype':<6}{'ms':>10}{'speed-up':>10}")
        for dname, dtype in dtypes.items():
            loop = mixture_case(dataclasses.replace(cfg, fused_experts=False), args.batch, args.audio_frames,
                                device, dtype, args.warmup, args.repeats)
            fused = mixture_case(cfg, args.batch, args.audio_frames, device, dtype, args.warmup, args.repeats)
            print(f"{'loop':<8}{dname:<6}{loop * 1e3:>10.1f}{'':>10}")
            print(f"{'fused':<8}{dname:<6}{fused * 1e3:>10.1f}{loop / fused:>9.2f}x")

    if args.only in (None, "step"):
        convention = 3 * closed_form_flops(cfg, {"text": args.text_tokens, "audio": args.audio_frames}) * args.batch
        flops = executed_step_flops(cfg, args.batch, args.text_tokens, args.audio_frames)
        peaks = {dname: matmul_peak(device, dtype) for dname, dtype in dtypes.items()}
        print(f"\nfull training step (fwd + bwd + AdamW); FLOPs/step executed {flops / 1e12:.3f} T (counted by "
              f"torch; 3 x forward would say {convention / 1e12:.3f} T); measured dense rate (matmul/conv): "
              + ", ".join(f"{d} {p / 1e12:.3f} TFLOP/s" for d, p in peaks.items()))
        print(f"{'experts':<8}{'dtype':<6}{'mode':<10}{'ms/step':>10}{'samples/s':>11}{'TFLOP/s':>9}{'MFU':>7}")
        for fused in (False, True):
            for dname, dtype in dtypes.items():
                for compiled in (False, True):
                    if compiled and (args.no_compile or not fused):
                        continue
                    seconds = train_step_case(dataclasses.replace(cfg, fused_experts=fused), args.batch,
                                              args.text_tokens, args.audio_frames, device, dtype, compiled,
                                              args.warmup + (2 if compiled else 0), args.repeats)
                    line = (f"{'fused' if fused else 'loop':<8}{dname:<6}{'compiled' if compiled else 'eager':<10}"
                            f"{seconds * 1e3:>10.1f}{args.batch / seconds:>11.1f}{flops / seconds / 1e12:>9.3f}")
                    print(line + f"{flops / seconds / peaks[dname]:>7.1%}", flush=True)

    if args.only == "optimizer":
        dname = "bf16" if device.type == "cuda" else "fp32"
        print(f"\nfused step ({dname}) by AdamW implementation (train uses fused)")
        print(f"{'AdamW':<10}{'ms/step':>10}")
        for name, options in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                              ("fused", {"fused": True})):
            step = training_step(cfg, args.batch, args.text_tokens, args.audio_frames, device, dtypes[dname],
                                 adamw=options)
            print(f"{name:<10}{timed(step, device, args.warmup, args.repeats) * 1e3:>10.1f}", flush=True)

    if args.profile:
        for dname, dtype in dtypes.items():
            if device.type == "cpu" or dname == "bf16":  # the GPU trains in bf16
                profile_case(cfg, args.batch, args.text_tokens, args.audio_frames, device, dtype)


if __name__ == "__main__":
    main()
