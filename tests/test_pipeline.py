"""End to end: the real dvc.yaml on the shrunk demo in a temporary git + DVC repository."""

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import make_project_repo, set_yaml, sh, tool_env

pytestmark = pytest.mark.slow


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_project_repo(tmp_path_factory.mktemp("my project"))  # a path with a space, as users have


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
    set_yaml(repo / "params.yaml", "train", "lr", 0.01)
    third = sh(repo, *dvc, "repro")
    assert ran_stages(third) == {"train@main", "train@text_only", "train@audio_only", "evaluate", "report"}

    diff = json.loads(sh(repo, *dvc, "metrics", "diff", "--json").strip().splitlines()[-1])
    changed = diff["reports/metrics.json"]
    assert "demo.msa.mae" in changed
    assert changed["demo.msa.mae"]["old"] != changed["demo.msa.mae"]["new"]
    assert "reports/runs.json" in diff


def test_a_second_repro_in_the_same_workspace_is_refused_and_the_first_finishes(repo):
    assert " " in str(repo)
    set_yaml(repo / "params.yaml", "train", "lr", 0.02)
    dvc = [sys.executable, "-m", "dvc", "repro"]
    log = repo.parent / "first.log"
    first = subprocess.Popen(dvc, cwd=repo, env=tool_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Running stage" not in log.read_text():  # the first holds DVC's lock from here on
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    second = subprocess.run(dvc, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=120)
    said = second.stdout + second.stderr  # DVC's repo lock, or its per-output read/write lock
    assert second.returncode != 0 and ("Unable to acquire lock" in said or "is busy" in said), said
    assert first.wait(600) == 0, log.read_text()
    assert ran_stages(log.read_text()) == {"train@main", "train@text_only", "train@audio_only", "evaluate", "report"}
    assert "Data and pipelines are up to date" in sh(repo, sys.executable, "-m", "dvc", "repro")
