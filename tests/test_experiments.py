"""Experiments across machines on this one: a Prefect server on 127.0.0.1 (the session's), a process work pool
with two workers, a bare git remote and a local DVC remote; two points fanned out, pushed, pulled and shown.

The points run a small DVC project (one stage, one parameter, a cached output) rather than the whole
pipeline: what is under test is the machinery around `dvc exp run`, which tests/test_pipeline.py covers."""

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest

from conftest import ROOT, sh

pytestmark = pytest.mark.slow

TRAIN = """import json, pathlib, yaml
lr = yaml.safe_load(open("params.yaml"))["lr"]
pathlib.Path("model.txt").write_text(f"weights for lr={lr}\\n")
json.dump({"score": round(2 * lr, 6)}, open("metrics.json", "w"))
"""
DVC_YAML = """stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [lr]
    outs: [model.txt]
    metrics:
      - metrics.json:
          cache: false
"""


def toy_project(root):
    """A git + DVC project with this repo's flows/, pushed to a bare remote, outputs on a local DVC remote."""
    origin, work = root / "origin.git", root / "work"
    sh(root, "git", "init", "-q", "--bare", str(origin))
    work.mkdir()
    shutil.copytree(ROOT / "flows", work / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "train.py").write_text(TRAIN)
    (work / "dvc.yaml").write_text(DVC_YAML)
    (work / "params.yaml").write_text("lr: 0.5\n")
    dvc = [sys.executable, "-m", "dvc"]
    sh(work, "git", "init", "-q")
    sh(work, *dvc, "init", "-q")
    sh(work, *dvc, "config", "core.analytics", "false")
    sh(work, *dvc, "remote", "add", "-d", "shared", str(root / "dvc-remote"))
    sh(work, *dvc, "repro")
    sh(work, *dvc, "push")
    sh(work, "git", "add", "-A")
    sh(work, "git", "commit", "-qm", "baseline")
    sh(work, "git", "remote", "add", "origin", str(origin))
    sh(work, "git", "push", "-q", "origin", "HEAD:main")
    return work


@pytest.fixture(scope="module")
def prefect_pool(tmp_path_factory, prefect_api):
    """Two process workers on pool `toy` of the session's Prefect server (127.0.0.1); the environment that
    reaches them."""
    tmp_path = tmp_path_factory.mktemp("workers")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    prefect = [sys.executable, "-m", "prefect"]
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run([*prefect, "work-pool", "create", "toy", "--type", "process"], env=env, check=True,
                   capture_output=True)
    workers = [subprocess.Popen([*prefect, "worker", "start", "--pool", "toy", "--limit", "1", "--name", f"worker-{k}"],
                                env=env, cwd=tmp_path, stdout=open(logs / f"worker-{k}.log", "w"),
                                stderr=subprocess.STDOUT) for k in range(2)]
    try:
        yield env, logs
    finally:
        for worker in workers:  # idle by now: nothing of theirs to let finish
            worker.kill()
            worker.wait(10)


def test_two_points_fan_out_to_two_workers_and_come_back_as_experiments(tmp_path, prefect_pool):
    env, logs = prefect_pool
    work = toy_project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "flows.experiments", "--pool", "toy", "--repo", str(work),
                           "--point", "lr=0.1", "--point", "lr=0.25"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    worker_logs = "\n".join(p.read_text()[-3000:] for p in sorted(logs.glob("worker-*.log")))
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{worker_logs}"
    shown = json.loads(sh(work, sys.executable, "-m", "dvc", "exp", "show", "--json").strip().splitlines()[-1])
    experiments = {e["name"]: e["revs"][0]["data"] for c in shown if c["rev"] != "workspace"
                   for e in c.get("experiments") or []}
    scores = sorted(data["metrics"]["metrics.json"]["data"]["score"] for data in experiments.values())
    assert len(experiments) == 2 and scores == [0.2, 0.5]  # each point's own parameter, computed on a worker
    assert all(data["params"]["params.yaml"]["data"]["lr"] in (0.1, 0.25) for data in experiments.values())
    assert all(name in done.stdout for name in experiments)  # `dvc exp show`, printed by the flow
    name = next(n for n, data in experiments.items() if data["params"]["params.yaml"]["data"]["lr"] == 0.25)
    sh(work, sys.executable, "-m", "dvc", "exp", "apply", name)  # its cached output comes from the DVC remote
    sh(work, sys.executable, "-m", "dvc", "pull")
    assert (work / "model.txt").read_text() == "weights for lr=0.25\n"
    worked = "\n".join(p.read_text() for p in sorted(logs.glob("worker-*.log")))
    for name in experiments:  # each point ran on a worker of the pool, and its experiment was pushed from there
        assert f"Flow run '{name}' submitted to infrastructure" in worked and \
            f"Pushed experiment {name} to Git remote 'origin'" in worked, worked[-3000:]


def test_the_retraining_schedule_deploys_on_the_pool(tmp_path, prefect_pool):
    env, _ = prefect_pool
    done = subprocess.run([sys.executable, "-m", "flows.schedule", "--pool", "toy", "--cron", "0 3 * * 1",
                           "--repo", str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "schedule: mmolre-retrain deployed on work pool 'toy' (0 3 * * 1)" in done.stdout
    deployment = httpx.get(f"{env['PREFECT_API_URL']}/deployments/name/mmolre-retrain/mmolre-retrain", timeout=30).json()
    assert deployment["work_pool_name"] == "toy" and deployment["entrypoint"] == "flows/retrain.py:retrain"
    assert deployment["parameters"] == {"repo": str(ROOT), "force": False}
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * 1"]
