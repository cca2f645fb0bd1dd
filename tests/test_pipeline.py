"""End to end: the real dvc.yaml on the shrunk demo in a temporary git + DVC repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, shrink

pytestmark = pytest.mark.slow


def sh(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout + out.stderr


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "mmolre", repo / "mmolre", ignore=shutil.ignore_patterns("__pycache__"))
    params = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    sh(repo, "git", "init", "-q")
    sh(repo, *dvc, "init", "-q")
    sh(repo, *dvc, "config", "core.analytics", "false")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "init")
    return repo


def test_repro_runs_every_stage_then_is_a_no_op_then_reruns_only_what_lr_touches(repo):
    dvc = [sys.executable, "-m", "dvc"]
    first = sh(repo, *dvc, "repro")
    assert ran_stages(first) == {"download", "prepare", "featurize", "train@main", "train@text_only",
                                 "train@audio_only", "evaluate", "report"}
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics["demo"]) == {"msa", "mer"}
    assert (repo / "reports" / "report.md").is_file() and (repo / "reports" / "figures" / "routing.png").is_file()
    assert (repo / "models" / "main" / "model.pt").is_file()

    second = sh(repo, *dvc, "repro")
    assert ran_stages(second) == set() and "Data and pipelines are up to date" in second

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "first run")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.01
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = sh(repo, *dvc, "repro")
    assert ran_stages(third) == {"train@main", "train@text_only", "train@audio_only", "evaluate", "report"}

    diff = json.loads(sh(repo, *dvc, "metrics", "diff", "--json").strip().splitlines()[-1])
    changed = diff["reports/metrics.json"]
    assert "demo.msa.mae" in changed
    assert changed["demo.msa.mae"]["old"] != changed["demo.msa.mae"]["new"]
    assert "reports/runs.json" in diff
