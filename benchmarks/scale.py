"""How each stage's time and memory grow with the corpus: the demo at 1x, 4x and 16x its utterances.

    python benchmarks/scale.py                        # 1x, 4x, 16x (600, 2,400, 9,600 utterances)
    python benchmarks/scale.py --scales 1 4 --stages download prepare

Each stage runs alone in a fresh process (`mmolre <stage>`, in a temporary folder), which reports its own peak
RSS (VmHWM, from exec on) and the largest of its child processes' (the demo's speech synthesizer, DataLoader
workers); training runs `main` for 2 epochs (its cost per epoch is what grows). The growth exponent b of
time or memory ~ a * utterances^b is fitted over the scales: 1 means linear, 0 flat. Results go to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASE_PER_SPEAKER = 25  # the demo's utterances per speaker (params.yaml); scaled, the speakers stay the same
STAGES = ("download", "prepare", "featurize", "train")
RUN = ("import resource, sys; from mmolre.cli import main; code = main(sys.argv[1:]); "
       "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
       "print('PEAK', hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def run_stage(stage: str, work: Path, per_speaker: int) -> tuple[float, float]:
    """(seconds, peak RSS in bytes: the stage's process or its largest child) of one stage at this size."""
    roots = {"download": ["--raw-root", "raw"], "prepare": ["--raw-root", "raw", "--out-root", "prepared"],
             "featurize": ["--prepared-root", "prepared", "--raw-root", "raw", "--out-root", "features"],
             "train": ["main", "--features-root", "features", "--models-root", "models", "--curves-root", "curves"]}
    settings = ["--set", f"demo.utterances_per_speaker={per_speaker}", "--set", "train.epochs=2"]
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUN, stage, "--params", str(Path("params.yaml").resolve()),
                          *settings, *roots[stage]], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{out.stderr[-2000:]}")
    own, children = (int(x) for x in out.stdout.split("PEAK")[-1].split())
    return seconds, max(own, children) * 1024.0


def exponent(sizes, values) -> float:
    """b of values ~ a * sizes^b, least squares in log-log."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = parser.parse_args()
    results = {stage: [] for stage in args.stages}
    sizes = [24 * BASE_PER_SPEAKER * s for s in args.scales]
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            work = Path(tmp) / f"x{scale}"
            work.mkdir()
            for stage in args.stages:
                results[stage].append(run_stage(stage, work, BASE_PER_SPEAKER * scale))
                print(f"{stage} at {scale}x: {results[stage][-1][0]:.1f} s, "
                      f"{results[stage][-1][1] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    print("| stage | " + " | ".join(f"{n} utt: s, MiB" for n in sizes) + " | time exponent | memory exponent |")
    print("|---|" + "---|" * (len(sizes) + 2))
    for stage, rows in results.items():
        cells = [f"{s:.1f}, {m / 2**20:.0f}" for s, m in rows]
        print(f"| {stage} | " + " | ".join(cells) + f" | {exponent(sizes, [s for s, _ in rows]):.2f} | "
              f"{exponent(sizes, [m for _, m in rows]):.2f} |")


if __name__ == "__main__":
    main()
