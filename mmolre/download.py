"""Stage `download`: get the raw corpus into data/raw/<dataset>/.

`demo` (the default) is generated here, offline and deterministically (mmolre/demo.py).
The CMU corpora (mosi, mosei, cmu) are fetched from their official sources.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmolre import MmolreError, demo
from mmolre.files import atomic_dir
from mmolre.params import build

DATASETS = ("demo", "mosi", "mosei", "cmu")


def download(params: dict, raw_root: Path) -> Path:
    """Produce data/raw/<dataset>/ for params['data']['dataset']; returns that folder."""
    dataset = params["data"]["dataset"]
    if dataset not in DATASETS:
        raise MmolreError(f"data.dataset={dataset!r}: choose one of {list(DATASETS)}")
    if dataset != "demo":
        raise MmolreError(
            f"data.dataset={dataset!r}: downloading the CMU corpora is not implemented yet "
            "(tracked in the CMU-MOSI/CMU-MOSEI issue); use data.dataset=demo")
    cfg = build(demo.DemoConfig, params, "demo")
    target = raw_root / dataset
    with atomic_dir(target) as tmp:
        demo.generate(cfg, tmp, seed=params["data"]["seed"])
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="where raw corpora go")


def run(args: argparse.Namespace, params: dict) -> None:
    folder = download(params, args.raw_root)
    print(f"download: wrote {folder}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("download")
