"""Does the data path keep up with the model? Utterances/s delivered by each way of reading features,
next to what the paper-size training step consumes.

    python benchmarks/loader.py                      # 2,000 MOSEI-shaped utterances (~1.2 GB float16)
    python benchmarks/loader.py --utterances 5000 --batch 32

Builds a feature file of CMU-MOSEI's shape (paper widths 768 + 768; text tokens ~ N(30, 12) in
[5, 64]; audio frames at 50 Hz of durations ~ lognormal with median 6 s, in [0.5 s, 20 s]) in a
temporary folder, then times full passes over it with shuffled length-bucketed batches:
lazy h5py with 0/1/2 DataLoader workers, and the in-memory FeatureStore (on the GPU when there is
one). The model's demand is the paper-size train step (bf16 autocast on CUDA, fp32 on a CPU)
measured here in the same run, at the mean shape of the batches; on a CPU also the demand an H200
would make at 40 % MFU, from the closed-form FLOP count (790 TFLOP/s measured bf16 matmul rate).
Prints peak RSS (the in-memory path holds the values once, as float16) and the seconds of what train
does once per run before its first step: the values' check and the train statistics, from the file and
from the store.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmolre import EMOTIONS
from mmolre.batches import FeatureStore, stored_bytes, keep_freed_memory, loader
from mmolre.features import FeatureFile, FeatureWriter
from mmolre.model_config import MMoLREConfig
from mmolre.model_info import closed_form_flops
from mmolre.train import feature_stats

H200_BF16 = 790e12  # measured 8192^3 bf16 matmul rate on this workplace's H200s (device/KINDS.md)


def build_file(path: Path, n: int, dim: int, seed: int = 0, splits: dict[str, int] | None = None) -> None:
    """A MOSEI-shaped feature file of `n` utterances (random splits 70/10/20, or exactly `splits`). Each
    utterance's values are a slice of one pool of random rows: what training reads costs the same, and
    building 23k utterances takes a pass of writes, not billions of random draws."""
    rng = np.random.default_rng(seed)
    text_len = np.clip(rng.normal(30, 12, n).round(), 5, 64).astype(int)
    audio_len = (np.clip(rng.lognormal(np.log(6.0), 0.6, n), 0.5, 20.0) * 50).astype(int)
    split = rng.permutation(np.repeat(list(splits), list(splits.values()))) if splits else \
        rng.choice(["train", "valid", "test"], n, p=[0.7, 0.1, 0.2])
    table = pd.DataFrame({"utterance_id": [f"u{i:06d}" for i in range(n)], "split": split, "dataset": "mosei",
                          "sentiment": rng.uniform(-3, 3, n), **{e: rng.uniform(0, 3, n) for e in EMOTIONS}})
    pool = rng.standard_normal((1 << 15, dim), dtype=np.float32)
    rows = lambda length: pool[(start := int(rng.integers(0, len(pool) - length))):start + length]
    provenance = {"text_encoder": "synthetic", "audio_encoder": "synthetic", "text_encoder_revision": "none",
                  "audio_encoder_revision": "none", "text_layer": -1, "audio_layer": -1, "sample_rate": 16000,
                  "featurize_config": "{}", "params_hash": "synthetic", "dataset": "mosei"}  # what train records
    writer = FeatureWriter(path, table, {"text": dim, "audio": dim}, provenance)
    for start in range(0, n, 200):
        part = range(start, min(start + 200, n))
        writer.append("text", [rows(text_len[i]) for i in part])
        writer.append("audio", [rows(audio_len[i]) for i in part])
    writer.close()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(batches, seconds_min: float, seconds_max: float) -> float:
    """Utterances/s over whole passes (epochs, reshuffled) until `seconds_min` have passed, or part of
    one pass when a pass takes longer than `seconds_max`."""
    started, n, epoch = time.perf_counter(), 0, 0
    while time.perf_counter() - started < seconds_min:
        epoch += 1
        batches.batch_sampler.set_epoch(epoch)
        for batch in batches:
            n += len(batch["index"])
            sync(batch["audio"].device)
            if time.perf_counter() - started > seconds_max:
                return n / (time.perf_counter() - started)
    return n / (time.perf_counter() - started)


def model_demand(device: torch.device, batch: int, tokens: int, frames: int, repeats: int) -> tuple[float, float]:
    """(utterances/s of the paper-size train step on `device`, FLOPs per utterance)."""
    import train_step as bench  # benchmarks/ is on sys.path when run as a script

    cfg = MMoLREConfig()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seconds = bench.train_step_case(cfg, batch, tokens, frames, device, dtype, False, 1, repeats)
    return batch / seconds, 3 * closed_form_flops(cfg, {"text": tokens, "audio": frames})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="time each path for at least this long")
    parser.add_argument("--step-batch", type=int, default=8, help="batch of the model-demand step (CPU: keep small)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keep_freed_memory()  # the allocator setting a CPU FeatureStore makes, for every path alike
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mosei_shape.h5"
        started = time.perf_counter()
        build_file(path, args.utterances, 768)
        features = FeatureFile(path)
        size = stored_bytes(features, ("text", "audio"))
        print(f"device: {name}; torch {torch.__version__}; {args.utterances} utterances, {size / 1e9:.2f} GB float16 "
              f"(built in {time.perf_counter() - started:.0f} s); batch {args.batch}")
        train = features.indices("train")
        rows = []
        for workers in (0, 1, 2):
            batches = loader(features, train, ("text", "audio"), args.batch, shuffle=True, seed=1, workers=workers)
            rows.append((f"lazy h5py, {workers} worker(s)", throughput(batches, args.seconds, 4 * args.seconds)))
        started = time.perf_counter()
        store = FeatureStore(features, ("text", "audio"), device)
        load_s = time.perf_counter() - started
        batches = loader(features, train, ("text", "audio"), args.batch, shuffle=True, seed=1, store=store)
        rows.append((f"in memory ({store.values['audio'].device}, loaded in {load_s:.1f} s)",
                     throughput(batches, args.seconds, 4 * args.seconds)))
        loader_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before the model step
        setup = {}  # what train does once per run before its first step, from the file and from the store
        for source, values in (("file", None), (f"store ({store.device})", store.values)):
            started = time.perf_counter()
            features.check_values(values=values)
            checked = time.perf_counter()
            for m in ("text", "audio"):
                feature_stats(features, train, m, values[m] if values else None)
            sync(store.device)
            setup[source] = (checked - started, time.perf_counter() - checked)
        text_mean = float(np.mean(features.lengths("text")[train]))
        audio_mean = float(np.mean(features.lengths("audio")[train]))
        demand, flops = model_demand(device, args.step_batch, round(text_mean), round(audio_mean), 2)
        print(f"\n{'path':<48}{'utt/s':>10}")
        for label, rate in rows:
            print(f"{label:<48}{rate:>10.1f}")
        print(f"{'model: paper-size train step on ' + device.type:<48}{demand:>10.1f}")
        if device.type == "cpu":
            print(f"{'model: an H200 at 40% MFU (computed)':<48}{0.4 * H200_BF16 / flops:>10.1f}")
        print(f"\nmean shape: text {text_mean:.0f} tokens, audio {audio_mean:.0f} frames; "
              f"{flops / 1e9:.1f} GFLOP per utterance per step; peak RSS of the loaders {loader_rss:.2f} GB "
              f"(values {size / 1e9:.2f} GB; the model step comes after)")
        for source, (check_s, stats_s) in setup.items():
            print(f"setup from the {source}: values checked in {check_s:.2f} s, train statistics in {stats_s:.2f} s")
        best = max(rows, key=lambda r: r[1])
        lazy_best = max(r[1] for r in rows[:3])
        print(f"in-memory / best lazy: {rows[3][1] / lazy_best:.1f}x")
        print(f"loader: {best[1]:.0f} utt/s, model step: {demand:.1f} utt/s on {name}, ratio {best[1] / demand:.1f}")


if __name__ == "__main__":
    main()
