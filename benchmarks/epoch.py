"""One epoch of `mmolre train` at the paper's size on a CMU-MOSEI-sized synthetic feature file: is the
epoch model-bound?

    python benchmarks/epoch.py                          # 22,856 utterances (MMSA's MOSEI folds), ~13 GB float16
    python benchmarks/epoch.py --scale 0.02             # a smoke run of the same path on a CPU
    python benchmarks/epoch.py --modes eager,compiled   # also with train.compile (CUDA)

Builds the file (benchmarks/loader.py's MOSEI shape; splits 16,326 / 1,871 / 4,659 times --scale) in a
temporary folder, then runs the train stage's own function (`mmolre.train.train`: the feature store,
the values' check and statistics, one epoch, validation, saving) with the paper's model (d=768, N=15,
r=128; bf16 autocast on CUDA) for each mode. Prints train's own lines (setup seconds; epoch seconds,
utterances/s and the share of the epoch spent getting batches), the loader alone over the same store
(utterances/s of a pass of train batches), and as the last line
`epoch: <s> s, <u> utt/s on <device> (<mode>); loader alone <l> utt/s, ratio <l/u>`.
A ratio >= 3 means the loader can feed three such models: the epoch is model-bound.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from loader import build_file, throughput  # benchmarks/ is on sys.path when run as a script
from mmolre.batches import FeatureStore, stored_bytes, loader, store_device
from mmolre.features import FeatureFile, feature_path
from mmolre.train import train

MOSEI_SPLITS = {"train": 16326, "valid": 1871, "test": 4659}  # MMSA's CMU-MOSEI folds (docs/cmu-data.md)
ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"([\d.]+) s per epoch \((\d+) utt/s, (\d+)% of it getting batches\)")


def paper_params(compile_: bool, batch: int) -> dict:
    """params.yaml with the paper's model size, one epoch, one run (text + audio), one seed."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["dataset"] = "mosei"
    params["model"].update(d_model=768, n_experts=15, rank=128, n_heads=8)
    params["train"].update(epochs=1, lr=1e-4, batch_size=batch, compile=compile_)
    params["runs"] = {"main": {"modalities": ["text", "audio"]}}
    return params


class Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy (train's lines are both shown and parsed)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MOSEI's utterances (default: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--modes", default="eager", help="comma-separated: eager, compiled")
    parser.add_argument("--seconds", type=float, default=5.0, help="time the loader alone for at least this long")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    splits = {k: max(2, round(v * args.scale)) for k, v in MOSEI_SPLITS.items()}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        params = paper_params(False, args.batch)
        path = feature_path(params, root / "features")
        path.parent.mkdir(parents=True)
        started = time.perf_counter()
        build_file(path, sum(splits.values()), 768, splits=splits)
        features = FeatureFile(path)
        size = stored_bytes(features, ("text", "audio"))
        print(f"device: {name}; torch {torch.__version__}; {len(features)} utterances {splits}, "
              f"{size / 1e9:.2f} GB float16 (built in {time.perf_counter() - started:.0f} s); batch {args.batch}",
              flush=True)

        where = store_device(features, ("text", "audio"), device, "auto")
        store = FeatureStore(features, ("text", "audio"), where) if where is not None else None
        batches = loader(features, features.indices("train"), ("text", "audio"), args.batch, shuffle=True, seed=1,
                         workers=0, store=store)
        alone = throughput(batches, args.seconds, 4 * args.seconds)
        del store, batches
        print(f"loader alone ({'in ' + str(where) + ' memory' if where is not None else 'lazy h5py'}): "
              f"{alone:.0f} utt/s", flush=True)

        results = []
        for mode in args.modes.split(","):
            params = paper_params(mode == "compiled", args.batch)
            tee = Tee(sys.stdout)
            started = time.perf_counter()
            with contextlib.redirect_stdout(tee):
                train(params, "main", root / "features", root / mode / "models", root / mode / "curves")
            total = time.perf_counter() - started
            match = EPOCH_LINE.search(tee.copy.getvalue())
            seconds, waiting = float(match[1]), int(match[3])
            rate = splits["train"] / seconds  # train's line rounds utt/s to a whole number
            results.append((mode, seconds, rate, waiting, total))
            if device.type == "cuda":
                print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
                torch.cuda.reset_peak_memory_stats()

    print(f"\n{'mode':<10}{'epoch s':>9}{'utt/s':>9}{'getting batches':>17}{'train() s':>11}")
    for mode, seconds, rate, waiting, total in results:
        print(f"{mode:<10}{seconds:>9.1f}{rate:>9.1f}{waiting:>16d}%{total:>11.1f}")
    for mode, seconds, rate, _, _ in results:
        print(f"epoch: {seconds:.1f} s, {rate:.1f} utt/s on {name} ({mode}); loader alone {alone:.0f} utt/s, "
              f"ratio {alone / rate:.1f}")


if __name__ == "__main__":
    main()
