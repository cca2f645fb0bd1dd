"""The Prefect retraining flow on the shrunk demo in a temporary git + DVC repository."""

import hashlib
import subprocess
import sys

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from conftest import make_project_repo, set_yaml
from flows.retrain import RetrainFailed, retrain
from flows.schedule import deployment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def latest_artifact(key: str) -> dict:
    """The newest artifact with `key`, through the REST API (this client sends nulls the server refuses)."""
    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", timeout=30,
                          json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1, "offset": 0})
    response.raise_for_status()
    assert response.json(), f"no artifact {key}"
    return response.json()[0]


def tag_commit(repo, tag="mmolre-accepted") -> str:
    return subprocess.run(["git", "rev-parse", tag], cwd=repo, capture_output=True, text=True).stdout.strip()


def state(repo) -> dict:
    """What must not move when a candidate is not promoted: git and DVC status, and models/ byte for byte."""
    run = lambda *args: subprocess.run(args, cwd=repo, capture_output=True, text=True).stdout
    return {"git": run("git", "status", "--porcelain"), "dvc": run(sys.executable, "-m", "dvc", "status"),
            "models": {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in sorted((repo / "models").rglob("*")) if p.is_file()}}


def test_retrain_promotes_skips_keeps_and_fails_without_serving_a_rejected_model(prefect_harness, tmp_path):
    (tmp_path / "my repo").mkdir()
    repo = make_project_repo(tmp_path / "my repo")  # a path with a space: the flow quotes nothing by hand

    first = retrain(repo=str(repo))  # nothing committed to compare with: promoted
    assert first["trained"] and first["promoted"] and first["accepted"] is None
    assert first["line"].startswith("retrain: trained, promoted")
    accepted = tag_commit(repo)
    assert accepted
    accepted_state = state(repo)
    assert accepted_state["git"] == "" and "up to date" in accepted_state["dvc"] and accepted_state["models"]

    second = retrain(repo=str(repo))
    assert not second["trained"] and second["line"] == "retrain: skipped (nothing changed since the last run)"

    set_yaml(repo / "params.yaml", "train", "lr", 0.02)
    third = retrain(repo=str(repo), margin=1e9)  # an impossible margin: trained but kept
    assert third["trained"] and not third["promoted"] and "kept" in third["line"]
    assert f"candidate kept as experiment {third['experiment']}" in third["line"]
    assert third["accepted"] == first["new"] and third["new"] != first["new"]
    assert "demo.msa.mae" in third["diff"]
    assert tag_commit(repo) == accepted and state(repo) == accepted_state  # the rejected model is not live
    assert third["experiment"] in subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"],
                                                 cwd=repo, capture_output=True, text=True).stdout
    diff_artifact = latest_artifact("mmolre-metrics-diff")
    assert "demo.msa.mae" in diff_artifact["data"] and "accepted" in diff_artifact["data"]
    assert "happy" in str(latest_artifact("mmolre-emotion-scores-demo")["data"])
    assert retrain(repo=str(repo))["line"].startswith("retrain: skipped")  # the accepted state is what is live

    with pytest.raises(RetrainFailed) as failed:
        retrain(repo=str(repo), set_params=["train.lr=-1"])
    line = str(failed.value)
    assert line.startswith("retrain: failed: train@") and "params train.lr=-1: Input should be greater than 0" in line
    assert tag_commit(repo) == accepted and state(repo) == accepted_state

    subprocess.run(["git", "tag", "-d", "mmolre-accepted"], cwd=repo, check=True, capture_output=True)
    worse = retrain(repo=str(repo), set_params=["train.lr=0.0000001", "train.epochs=1"])  # no tag: HEAD is the bar
    assert worse["trained"] and not worse["promoted"] and worse["accepted"] == first["new"]
    assert worse["new"] > worse["accepted"] and state(repo) == accepted_state


def test_schedule_builds_a_cron_deployment():
    d = deployment("0 3 * * 1", "/srv/mmolre")
    assert d.name == "mmolre-retrain"
    assert d.schedules[0].schedule.cron == "0 3 * * 1"
    assert d.parameters == {"repo": "/srv/mmolre", "force": False}
