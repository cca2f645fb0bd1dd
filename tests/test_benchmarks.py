"""The benchmarks a GPU session runs (benchmarks/gpu.sh) work: its --smoke mode, end to end on the CPU, so
that device time is never spent finding a broken script."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_script_runs_every_benchmark_and_keeps_their_tables(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.txt", "epoch.txt", "loader.txt", "train_step.txt"]
    step = (tmp_path / "train_step.txt").read_text()
    assert re.search(r"^fused +bf16 +eager +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+%$", step, re.MULTILINE), step
    assert re.search(r"weight concatenation \(aten::cat \+ aten::stack\): [\d.]+ ms, [\d.]+%", step), step
    loader = (tmp_path / "loader.txt").read_text()
    assert re.search(r"^loader: \d+ utt/s, model step: [\d.]+ utt/s on .+, ratio [\d.]+$", loader, re.MULTILINE), loader
    assert re.search(r"^setup from the store \((cpu|cuda(:\d+)?)\): values checked in [\d.]+ s", loader, re.MULTILINE), loader
    epoch = (tmp_path / "epoch.txt").read_text()
    assert "'train': 8, 'valid': 2, 'test': 2" in epoch, epoch
    assert re.search(r"^epoch: [\d.]+ s, [\d.]+ utt/s on .+ \(eager\); loader alone \d+ utt/s, ratio [\d.]+$", epoch,
                     re.MULTILINE), epoch
    assert not re.search(r"^train main: +\d+%", epoch, re.MULTILINE)  # the progress bar's redraws are left out
    device = (tmp_path / "device.txt").read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", device[0]) and device[2].startswith("torch 2."), device


def test_gpu_script_refuses_an_unknown_part(tmp_path):
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "steps"], cwd=ROOT, env={**os.environ, "OUT": str(tmp_path)},
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown part 'steps' (step, loader, epoch, --smoke)" in result.stderr
