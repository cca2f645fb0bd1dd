"""What the paired tests add to `evaluate`: seconds for one pair of models, per headline metric, at the field's
test-split sizes (mmolre/stats.py: a 10,000-resample bootstrap and a 10,000-swap permutation test each).

    python benchmarks/paired_tests.py [--sizes 686 4659] [--resamples 10000]

Synthetic predictions of two models (MOSI's test split has 686 utterances, MOSEI's 4,659); evaluate runs one
pair per other run and per robustness condition, so its added time is about (pairs) x (the row's total).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmolre.stats import HEADLINES, paired


def pair_seconds(n: int, resamples: int, rng: np.random.Generator) -> dict[str, float]:
    label = np.round(rng.uniform(-3, 3, n) * 3) / 3
    intensity = rng.uniform(0, 3, (n, 6)) * (rng.uniform(size=(n, 6)) > 0.7)
    arrays = {"msa": (label + rng.normal(0, 0.8, n), label + rng.normal(0, 0.9, n), label),
              "mer": (rng.uniform(size=(n, 6)), rng.uniform(size=(n, 6)), intensity)}
    out = {}
    for task, metrics in HEADLINES.items():
        for metric, statistic in metrics.items():
            started = time.perf_counter()
            paired(*arrays[task], statistic, seed=1111, n_resamples=resamples)
            out[f"{task}.{metric}"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[686, 4659])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        seconds = pair_seconds(n, args.resamples, rng)
        cells = ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
        print(f"{n} utterances: {cells}; total {sum(seconds.values()):.1f} s per pair")


if __name__ == "__main__":
    main()
