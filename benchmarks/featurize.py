"""Featurize throughput: the full stage vs the encoders' forward alone on the same batches.

    python benchmarks/featurize.py                 # the demo (after `dvc repro` or mmolre download/prepare)
    python benchmarks/featurize.py --set featurize.workers=0

The full path reads and resamples audio (DataLoader workers), tokenizes, encodes, writes chunks
and assembles the HDF5 file; the forward-only figure encodes the same batches from memory. The
ratio shows what data loading and writing cost. Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmolre.encoders import TextEncoder, audio_encoder, load_audio
from mmolre.featurize import batches_by_length, featurize, pick_device
from mmolre.params import FeaturizeParams, build, load_params


def forward_only(table: pd.DataFrame, raw_root: Path, cfg: FeaturizeParams) -> float:
    """Seconds for the encoders alone over the batches featurize forms (audio decoded beforehand)."""
    device = pick_device(cfg.device)
    text, audio = TextEncoder(cfg.text_encoder, cfg.text_layer, cfg.max_text_tokens, device), audio_encoder(cfg, device)
    waves = [load_audio(raw_root / r.audio_path, r.start_s, r.end_s, audio.sample_rate, cfg.max_audio_s)
             for r in table.itertuples()]
    texts = table.text.tolist()
    window = cfg.batch_size * 8
    durations = np.minimum(table.end_s - table.start_s, cfg.max_audio_s).to_numpy()
    start = time.perf_counter()
    for w in range(0, len(table), window):
        idx = np.arange(w, min(w + window, len(table)))
        for b in batches_by_length(np.array([len(texts[i]) for i in idx]), cfg.batch_size):
            text.encode([texts[idx[k]] for k in b])
        for b in batches_by_length(durations[idx], cfg.batch_size, cfg.max_batch_audio_s):
            audio.encode([waves[idx[k]] for k in b])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"))
    parser.add_argument("--prepared-root", type=Path, default=Path("data/prepared"))
    args = parser.parse_args()
    params = load_params("params.yaml", args.overrides)
    cfg = build(FeaturizeParams, params, "featurize")
    table = pd.read_parquet(args.prepared_root / params["data"]["dataset"] / "utterances.parquet")
    audio_s = float(np.minimum(table.end_s - table.start_s, cfg.max_audio_s).sum())
    encoders = forward_only(table, args.raw_root, cfg)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        featurize(params, args.prepared_root, args.raw_root, Path(out))
        full = time.perf_counter() - start
    print(f"\n{len(table)} utterances, {audio_s:.0f} s of audio; text {cfg.text_encoder}, audio {cfg.audio_encoder}; "
          f"workers {cfg.workers}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<18}{'seconds':>9}{'utt/s':>9}{'audio-s/s':>11}")
    for name, seconds in (("encoders only", encoders), ("full featurize", full)):
        print(f"{name:<18}{seconds:>9.2f}{len(table) / seconds:>9.1f}{audio_s / seconds:>11.1f}")
    print(f"full / encoder-only throughput: {encoders / full:.0%}")


if __name__ == "__main__":
    main()
