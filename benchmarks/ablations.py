"""The paper's ablations and other expert designs on the demo, trained on the same features: test metrics.

    python benchmarks/ablations.py        # after `dvc repro` (reads data/features); about 4 min on 2 cores

Rows: every model.variant, then the expert designs beyond the paper (LoRA-style linear experts, top-k
routing with a load-balancing loss, per-expert ranks), each on top of the full model.

The same table comes out of the pipeline when the variants are listed in params `runs`
(README); this script keeps the workspace's pipeline outputs untouched (it writes to a temp dir).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from mmolre.evaluate import evaluate
from mmolre.model_config import VARIANTS
from mmolre.params import load_params
from mmolre.train import train


def main() -> None:
    params = load_params("params.yaml")
    both = ["text", "audio"]
    params["runs"] = {("main" if v == "mmolre" else v): {"modalities": both, "variant": v} for v in VARIANTS}
    params["runs"] |= {"lowrank_linear": {"modalities": both, "expert": "lowrank_linear"},
                       "topk_2": {"modalities": both, "router": "topk", "top_k": 2},
                       "ranks_8_16_16_32": {"modalities": both, "rank": [8, 16, 16, 32]}}
    params["evaluate"]["robustness"] = False
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()):
        out = Path(out)
        for run in params["runs"]:
            train(params, run, Path("data/features"), out / "models", out / "curves")
        runs = evaluate(params, Path("data/features"), out / "models", out / "reports")
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"
    print("\n| run | MAE ↓ | Corr | Acc-2 (non0) | emotion WA | emotion F1 |\n|---|---|---|---|---|---|")
    for run, result in runs.items():
        msa, mer = result["demo"].get("msa", {}), result["demo"].get("mer", {}).get("avg", {})
        print(f"| {run} | {fmt(msa.get('mae'))} | {fmt(msa.get('corr'))} | "
              f"{fmt(msa.get('acc2_non0'), 1)} | {fmt(mer.get('wa'), 1)} | {fmt(mer.get('f1'), 1)} |")


if __name__ == "__main__":
    main()
