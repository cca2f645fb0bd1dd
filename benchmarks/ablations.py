"""The paper's ablations, other expert designs and the fusion baselines on the demo, trained on the same
features: test metrics, parameters, GFLOPs per utterance and seconds per epoch.

    python benchmarks/ablations.py             # after `dvc repro` (reads data/features); about 4 min on 2 cores
    python benchmarks/ablations.py --archs     # MMoLRE beside every model.arch baseline (same heads and loss)

Rows (default): every model.variant, then the expert designs beyond the paper (LoRA-style linear experts, top-k
routing with a load-balancing loss, per-expert ranks, top-p routing), each on top of the full model. With
--archs: the full model and each baseline of mmolre/baselines/.

The same table (without seconds per epoch, a wall-clock figure kept out of the pipeline's reproducible
outputs) comes out of the pipeline when the runs are listed in params `runs` (docs/model.md); this script keeps the
workspace's pipeline outputs untouched (it writes to a temp dir). Seconds per epoch are what `mmolre train`
reports for the run (the mean over its epochs, validation included).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

from mmolre.evaluate import evaluate
from mmolre.model_config import ARCHS, VARIANTS
from mmolre.params import load_params
from mmolre.train import train

EPOCH_LINE = re.compile(r"^train (\S+) \(seed \d+\): best epoch \d+/(\d+).*; ([\d.]+) s per epoch", re.MULTILINE)


def designs() -> dict[str, dict]:
    both = ["text", "audio"]
    runs = {("main" if v == "mmolre" else v): {"modalities": both, "variant": v} for v in VARIANTS}
    return runs | {"lowrank_linear": {"modalities": both, "expert": "lowrank_linear"},
                   "topk_2": {"modalities": both, "router": "topk", "top_k": 2},
                   "top_p_0.7": {"modalities": both, "router": "top_p", "top_p": 0.7},
                   "ranks_8_16_16_32": {"modalities": both, "rank": [8, 16, 16, 32]}}


def archs() -> dict[str, dict]:
    return {("main" if a == "mmolre" else a): {"modalities": ["text", "audio"], "arch": a} for a in ARCHS}


def trained(params: dict) -> tuple[dict, dict, dict]:
    """Train and evaluate every run in a temp dir: metrics, costs, seconds per epoch (from train's own line)."""
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(log):
        out = Path(out)
        for run in params["runs"]:
            train(params, run, Path("data/features"), out / "models", out / "curves")
        runs = evaluate(params, Path("data/features"), out / "models", out / "reports")
        costs = json.loads((out / "reports" / "costs.json").read_text())
    seconds = {run: (float(s), int(n)) for run, n, s in EPOCH_LINE.findall(log.getvalue())}
    return runs, costs, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", action="store_true", help="MMoLRE beside the fusion baselines of model.arch")
    args = parser.parse_args()
    params = load_params("params.yaml")
    params["runs"] = archs() if args.archs else designs()
    params["evaluate"]["robustness"] = False
    runs, costs, seconds = trained(params)
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"
    print("\n| run | MAE ↓ | Corr | Acc-2 (non0) | emotion WA | emotion F1 | params | GFLOPs/utt | s/epoch | epochs |"
          "\n|---|---|---|---|---|---|---|---|---|---|")
    for run, result in runs.items():
        msa, mer = result["demo"].get("msa", {}), result["demo"].get("mer", {}).get("avg", {})
        epoch_s, epochs = seconds.get(run, (None, None))
        print(f"| {run} | {fmt(msa.get('mae'))} | {fmt(msa.get('corr'))} | "
              f"{fmt(msa.get('acc2_non0'), 1)} | {fmt(mer.get('wa'), 1)} | {fmt(mer.get('f1'), 1)} | "
              f"{costs[run]['params']:,} | {costs[run]['flops_per_utterance'] / 1e9:.4f} | {fmt(epoch_s, 2)} | "
              f"{epochs} |")


if __name__ == "__main__":
    main()
