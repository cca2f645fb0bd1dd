"""The paper's ablations on the demo: every model.variant trained on the same features, test metrics.

    python benchmarks/ablations.py        # after `dvc repro` (reads data/features); about 2.5 min on 2 cores

The same table comes out of the pipeline when the variants are listed in params `runs`
(README); this script keeps the workspace's pipeline outputs untouched (it writes to a temp dir).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from mmolre.evaluate import evaluate
from mmolre.model import VARIANTS
from mmolre.params import load_params
from mmolre.train import train


def main() -> None:
    params = load_params("params.yaml")
    params["runs"] = {("main" if v == "mmolre" else v): {"modalities": ["text", "audio"], "variant": v}
                      for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()):
        out = Path(out)
        for run in params["runs"]:
            train(params, run, Path("data/features"), out / "models", out / "curves")
        runs = evaluate(params, Path("data/features"), out / "models", out / "reports")
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"
    print("\n| variant | MAE ↓ | Corr | Acc-2 (non0) | emotion WA | emotion F1 |\n|---|---|---|---|---|---|")
    for run, result in runs.items():
        msa, mer = result["demo"].get("msa", {}), result["demo"].get("mer", {}).get("avg", {})
        print(f"| {params['runs'][run]['variant']} | {fmt(msa.get('mae'))} | {fmt(msa.get('corr'))} | "
              f"{fmt(msa.get('acc2_non0'), 1)} | {fmt(mer.get('wa'), 1)} | {fmt(mer.get('f1'), 1)} |")


if __name__ == "__main__":
    main()
