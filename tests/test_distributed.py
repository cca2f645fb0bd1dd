"""DDP: `torchrun --nproc_per_node=2` on CPU (gloo) trains the same model as one process."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmolre.batches import LengthBucketSampler
from mmolre.curves import read_curves

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_ranks_split_each_global_batch():
    lengths = [5, 3, 8, 1, 9, 2, 7]
    single = LengthBucketSampler(lengths, 4, shuffle=True, seed=3)
    ranks = [list(LengthBucketSampler(lengths, 4, shuffle=True, seed=3, rank=r, world=2)) for r in (0, 1)]
    for batch, part0, part1 in zip(single, *ranks, strict=True):
        assert sorted(part0 + part1) == sorted(batch)


def test_two_gloo_processes_equal_one_process(tiny_demo, tmp_path):
    params = {**tiny_demo["params"], "model": {**tiny_demo["params"]["model"], "dropout": 0.0},
              "train": {**tiny_demo["params"]["train"], "batch_size": 8, "epochs": 2, "threads": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["main", "--params", str(tmp_path / "params.yaml"), "--features-root", str(tiny_demo["features"])]
    outputs = {}
    for name, launcher in (("single", [sys.executable, "-m", "mmolre.train"]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node=2", "-m", "mmolre.train"])):
        done = subprocess.run([*launcher, *common, "--models-root", str(tmp_path / name / "models"),
                               "--curves-root", str(tmp_path / name / "curves")],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[name] = done
    single = load_file(tmp_path / "single/models/main/model.safetensors")
    ddp = load_file(tmp_path / "ddp/models/main/model.safetensors")
    assert single.keys() == ddp.keys()
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=key)
    curves = {n: read_curves(tmp_path / n / "curves/main") for n in ("single", "ddp")}
    pd.testing.assert_frame_equal(curves["single"], curves["ddp"], rtol=1e-4)
    assert outputs["ddp"].stdout.count("train main (seed 1111): best epoch") == 1  # only rank 0 reports and writes


def test_torchrun_featurize_equals_one_process(tiny_demo, tmp_path):
    """Two gloo ranks each encode their windows into the shared chunk folder; rank 0 assembles the same bytes."""
    featurize = {**tiny_demo["params"]["featurize"], "batch_size": 2, "device": "cpu", "workers": 0}  # 3 windows
    common = ["--prepared-root", str(tiny_demo["prepared"]), "--raw-root", str(tiny_demo["raw"])]
    runs = {}
    for name, launcher in (("single", [sys.executable, "-m", "mmolre.featurize"]),
                           ("torchrun", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node=2", "-m", "mmolre.featurize"])):
        params = {**tiny_demo["params"], "featurize": {**featurize, "partial_dir": str(tmp_path / name / "shared")}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
        runs[name] = subprocess.run([*launcher, "--params", str(tmp_path / f"{name}.yaml"), *common,
                                     "--out-root", str(tmp_path / name / "features")],
                                    cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    files = {name: tmp_path / name / "features" / "demo" / tiny_demo["h5"].name for name in runs}
    assert files["torchrun"].read_bytes() == files["single"].read_bytes()
    assert runs["torchrun"].stdout.count("featurize: wrote") == 1  # rank 0 alone assembles
    assert list((tmp_path / "torchrun" / "shared" / "demo").iterdir()) == []  # the chunks, removed after the merge
    # windows of 16 rows over 36: rank 0 encodes windows 0 and 2 (16 + 4 rows), rank 1 window 1 (16 rows)
    assert "| 20/20 [" in runs["torchrun"].stderr and "| 16/16 [" in runs["torchrun"].stderr
    assert "| 36/36 [" in runs["single"].stderr
