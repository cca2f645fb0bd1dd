"""Shared fixtures: the real params.yaml shrunk to a tiny demo (few dozen utterances, tiny model)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from mmolre.params import load_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "demo": {"speakers": 6, "utterances_per_speaker": 6, "split_speakers": [4, 1, 1]},
    "model": {"d_model": 32, "n_experts": 2, "rank": 4, "n_heads": 2},
    "train": {"epochs": 2, "patience": 2, "batch_size": 8},
}


def shrink(params: dict) -> dict:
    params = copy.deepcopy(params)
    for section, values in TINY.items():
        params[section].update(values)
    return params


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return shrink(load_params(ROOT / "params.yaml"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory, tiny_params) -> dict:
    """download + prepare + featurize of the tiny demo, once per session: paths and params."""
    from mmolre.download import download
    from mmolre.featurize import featurize
    from mmolre.prepare import prepare

    root = tmp_path_factory.mktemp("tiny_demo")
    paths = {"raw": root / "raw", "prepared": root / "prepared", "features": root / "features"}
    download(tiny_params, paths["raw"])
    prepare(tiny_params, paths["raw"], paths["prepared"])
    paths["h5"] = featurize(tiny_params, paths["prepared"], paths["raw"], paths["features"])
    return {"params": tiny_params, **paths}
