"""Importing a processed feature file of MOSEI's shapes: seconds and peak RSS against the file's size.

    python benchmarks/processed_import.py                       # 1/32, 1/16 and 1/8 of MOSEI
    python benchmarks/processed_import.py --scales 0.25 --protocol 5

A synthetic MMSA `unaligned_50.pkl` with MOSEI's shapes (text 50 x 768 float32, audio 500 x 74 and vision
500 x 35 float64, MMSA's lengths, ids and labels) at a fraction of MOSEI's 16326/1871/4659 utterances is
written to a temporary folder; `mmolre download --from-processed` then runs in a fresh process, which reports
its peak RSS (VmHWM) when done. Target (issue #33): peak RSS under 1.5x the file, so the full 13 GB file
imports on this 24 GB machine. Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MOSEI = {"train": 16326, "valid": 1871, "test": 4659}
STEPS = {"text": 50, "audio": 500, "vision": 500}
DIMS = {"text": 768, "audio": 74, "vision": 35}
# the child's own high-water mark (VmHWM: its memory since exec, not the parent's pages it was forked with)
IMPORT = ("from pathlib import Path; import sys, yaml; from mmolre.download import download; "
          "p = yaml.safe_load(Path(sys.argv[1]).read_text()); download(p, Path(sys.argv[2]), Path(sys.argv[3])); "
          "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")


def split_arrays(rng, split: str, n: int) -> dict:
    """One split in MMSA's form, mean lengths as MOSEI's (audio 149, vision 95 of 500)."""
    lengths = {m: rng.integers(1, 2 * mean, n).clip(max=STEPS[m]) for m, mean in (("audio", 149), ("vision", 95))}
    text_len = rng.integers(5, 50, n)
    mask = (np.arange(50)[None] < text_len[:, None]).astype(np.int64)
    return {"raw_text": np.array([f"utterance {i}" for i in range(n)]), "id": [f"{split}v{i // 8}$_${i % 8}" for i in range(n)],
            "text": rng.standard_normal((n, 50, 768), np.float32),
            "audio": rng.standard_normal((n, 500, 74)).clip(-50, 50), "vision": rng.standard_normal((n, 500, 35)),
            "text_bert": np.stack([mask * 101, mask, 0 * mask], axis=1),
            "audio_lengths": lengths["audio"].tolist(), "vision_lengths": lengths["vision"].tolist(),
            "annotations": np.array(["Neutral"] * n), "classification_labels": np.ones(n),
            "regression_labels": rng.uniform(-3, 3, n)}


def write_file(path: Path, scale: float, protocol: int) -> None:
    rng = np.random.default_rng(0)
    data = {split: split_arrays(rng, split, max(8, round(n * scale))) for split, n in MOSEI.items()}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


def run_import(pkl: Path, work: Path) -> tuple[float, float]:
    """(seconds, peak RSS in bytes) of `download --from-processed` in a fresh process."""
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"] |= {"dataset": "mosei", "processed": str(pkl)}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", IMPORT, str(work / "params.yaml"), str(work / "raw"), str(work / "dl")],
                         check=True, stderr=subprocess.DEVNULL, capture_output=False, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    return seconds, int(out.stdout.split()[-1]) * 1024.0  # VmHWM is in kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[1 / 32, 1 / 16, 1 / 8])
    parser.add_argument("--protocol", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where the synthetic files go (default: a temp folder)")
    args = parser.parse_args()
    print("| scale of MOSEI | utterances | file (GB) | import (s) | MB/s | peak RSS (GB) | RSS / file |")
    print("|---|---|---|---|---|---|---|")
    for scale in sorted(args.scales):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            work = Path(tmp)
            pkl = work / "unaligned_50.pkl"
            write_file(pkl, scale, args.protocol)
            size = pkl.stat().st_size
            seconds, peak = run_import(pkl, work)
            n = sum(max(8, round(v * scale)) for v in MOSEI.values())
            print(f"| {scale:g} | {n} | {size / 1e9:.2f} | {seconds:.1f} | {size / 1e6 / seconds:.0f} | "
                  f"{peak / 1e9:.2f} | {peak / size:.2f} |", flush=True)


if __name__ == "__main__":
    main()
