"""Training curves as dvclive writes them: one folder per run (reports/train/<run>/).

`metrics.json` holds the last epoch's values and, under `best`, the epoch early stopping kept (what
`dvc exp show` lists); `plots/metrics/<split>/<name>.tsv` one row per epoch (what `dvc plots show` /
`dvc plots diff` draw, and the report reads back). Written without wall-clock times, so a rerun
reproduces the files byte for byte.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mmolre.files import atomic_dir

# per-epoch record key -> dvclive metric name
NAMES = {"train_loss": "train/loss", "train_loss_sa": "train/loss_sa", "train_loss_er": "train/loss_er",
         "valid_loss": "valid/loss", "valid_mae": "valid/mae", "valid_emotion_f1": "valid/emotion_f1", "lr": "lr"}


def write_curves(folder: Path, curves: list[dict], best: dict) -> None:
    """Log `curves` (one dict per epoch, keys of NAMES plus `epoch`) and the kept epoch `best` with dvclive;
    metrics that do not apply to a run (NaN, e.g. emotion F1 without an ER head) are left out."""
    from dvclive import Live  # here, not at import: it pulls in DVC, which training itself never needs

    with atomic_dir(folder) as tmp:
        live = Live(str(tmp), save_dvc_exp=False, dvcyaml=False, report=None)
        for record in curves:
            live.step = record["epoch"]
            for key, name in NAMES.items():
                if key in record and not math.isnan(record[key]):
                    live.log_metric(name, record[key])  # keeps the summary's latest values too
        live.summary["best"] = {k: v for k, v in best.items() if not (isinstance(v, float) and math.isnan(v))}
        live.make_summary()
        live.end()


def read_curves(folder: Path) -> pd.DataFrame:
    """One row per epoch (column `epoch`) and one column per logged metric (dvclive names)."""
    tables = []
    for path in sorted((folder / "plots" / "metrics").rglob("*.tsv")):
        name = path.relative_to(folder / "plots" / "metrics").with_suffix("").as_posix()
        table = pd.read_csv(path, sep="\t")
        tables.append(table.rename(columns={"step": "epoch", path.stem: name})[["epoch", name]].set_index("epoch"))
    if not tables:
        return pd.DataFrame(columns=["epoch"])
    return pd.concat(tables, axis=1).reset_index()
