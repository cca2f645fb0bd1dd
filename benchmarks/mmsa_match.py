"""Joining MMSA's MOSEI clips to CMU_MOSEI_Labels.csd at the real corpus's size: seconds and clips matched.

    python benchmarks/mmsa_match.py [--videos 3293] [--seed 0]

A synthetic label sequence shaped like the real one (3,293 videos, 23,259 rows: about 7 per video,
lengths 1-15 s, sentiment in steps of 1/3, 16 words per row in the word timings) and MMSA-like clips
(98 % of the rows, lengths off by up to 50 ms of AAC framing). Times `mmsa.match_clips` with the label
sequence alone and with the word timings; prints the seconds and how many clips each matched. The real
release's match rate depends on how its lengths and sentiments collide, so only the time carries over.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from mmolre.datasets.mmsa import Evidence, match_clips


def corpus(videos: int, rng: np.random.Generator) -> tuple[dict, dict, pd.DataFrame]:
    labels, words, clips = {}, {}, []
    for v in range(videos):
        video, n = f"v{v:06d}", int(rng.integers(2, 13))
        starts = np.cumsum(rng.uniform(1, 16, n))
        ends = starts + rng.uniform(1, 15, n)
        features = np.zeros((n, 7), np.float32)
        features[:, 0] = np.round(rng.uniform(-3, 3, n) * 3) / 3
        features[:, 1:] = rng.integers(0, 4, (n, 6)) / 3
        labels[video] = (features, np.stack([starts, ends], axis=1))
        said = [[f"w{rng.integers(5000)}" for _ in range(16)] for _ in range(n)]
        spans = [[s + k * (e - s) / 16, s + (k + 1) * (e - s) / 16] for s, e in zip(starts, ends) for k in range(16)]
        words[video] = (np.array([[w.encode()] for row in said for w in row], dtype="S8"), np.array(spans))
        for k in np.flatnonzero(rng.random(n) < 0.98):
            clips.append({"utterance": f"{video}_{k}", "video_id": video, "clip_id": str(k),
                          "text": " ".join(said[k]), "label": float(features[k, 0]),
                          "seconds": float(ends[k] - starts[k] + rng.uniform(0, 0.05))})
    return labels, words, pd.DataFrame(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3293)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels, words, clips = corpus(args.videos, np.random.default_rng(args.seed))
    rows = sum(len(f) for f, _ in labels.values())
    print(f"{args.videos} videos, {rows} label rows, {len(clips)} clips")
    for name, evidence in (("label sequence only", Evidence(labels)), ("with word timings", Evidence(labels, words))):
        started = time.perf_counter()
        found = match_clips(clips, evidence)
        seconds = time.perf_counter() - started
        matched = sum(row is not None for row, _ in found.values())
        print(f"{name:20s} {seconds:6.1f} s  matched {matched}/{len(clips)} clips")


if __name__ == "__main__":
    main()
