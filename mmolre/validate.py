"""`mmolre validate FILE`: check a feature file before trusting it (e.g. one from a colleague or a DVC remote).

Checks the structure (schema version, offsets monotone and spanning the values, meta arrays of one
length, labels in range) and then every value (finite, |x| <= 1e4, no utterance without frames),
and prints the file's summary statistics. Exit 0 when the file is sound; exit 2 with one line
naming the first bad utterance otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmolre import SPLITS
from mmolre.features import MAX_ABS, FeatureFile

USES_PARAMS = False


def summary(features: FeatureFile) -> list[str]:
    """Lines describing the file: utterances per split, and per modality its width and statistics."""
    splits = ", ".join(f"{s} {int((features.split == s).sum())}" for s in SPLITS)
    lines = [f"{features.path}: schema {features.attrs['schema_version']}, {len(features)} utterances ({splits}), "
             f"dataset(s) {', '.join(sorted(set(features.dataset)))}"]
    for modality, dim in features.dims.items():
        lengths = features.lengths(modality)
        stats = features.stats.get(modality, {})
        values = (f"values mean {stats['mean']:.4g}, std {stats['std']:.4g}, min {stats['min']:.4g}, "
                  f"max {stats['max']:.4g}" if "mean" in stats else "no stored statistics (an older file)")
        lines.append(f"  {modality}: {dim}-d, {int(lengths.sum())} frames (per utterance min {int(lengths.min())}, "
                     f"mean {float(np.mean(lengths)):.1f}, max {int(lengths.max())}); {values}")
    return lines


def validate(path: Path) -> list[str]:
    features = FeatureFile(path)
    features.check_values()
    return summary(features) + [f"OK: every value finite and |x| <= {MAX_ABS:g}, every utterance has frames, "
                                "labels in range"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="an HDF5 feature file (data/features/<dataset>/<encoders>.h5)")


def run(args: argparse.Namespace, params: dict) -> None:
    for line in validate(args.file):
        print(f"validate: {line}" if not line.startswith("  ") else line)
