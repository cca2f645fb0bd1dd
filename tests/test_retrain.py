"""The Prefect retraining flow on the shrunk demo in a temporary git + DVC repository."""

import subprocess

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from conftest import make_project_repo, set_yaml
from flows.pipeline import DvcFailed
from flows.retrain import retrain
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


def test_retrain_promotes_then_skips_then_retrains_and_fails_cleanly(prefect_harness, tmp_path):
    (tmp_path / "my repo").mkdir()
    repo = make_project_repo(tmp_path / "my repo")  # a path with a space: the flow quotes nothing by hand

    first = retrain(repo=str(repo))
    assert first["trained"] and first["promoted"] and first["accepted"] is None
    assert first["line"].startswith("retrain: trained, promoted")
    accepted = tag_commit(repo)
    assert accepted
    assert subprocess.run(["git", "status", "--porcelain", "reports", "dvc.lock"], cwd=repo,
                          capture_output=True, text=True).stdout == ""  # the promoted state is committed

    second = retrain(repo=str(repo))
    assert not second["trained"] and second["line"] == "retrain: skipped (nothing changed since the last run)"

    set_yaml(repo / "params.yaml", "train", "lr", 0.02)
    third = retrain(repo=str(repo), margin=1e9)  # an impossible margin: trained but kept
    assert third["trained"] and not third["promoted"] and "kept" in third["line"]
    assert third["accepted"] == first["new"] and third["new"] != first["new"]
    assert "demo.msa.mae" in third["diff"]
    assert tag_commit(repo) == accepted
    diff_artifact = latest_artifact("mmolre-metrics-diff")
    assert "demo.msa.mae" in diff_artifact["data"] and "accepted" in diff_artifact["data"]
    assert "happy" in str(latest_artifact("mmolre-emotion-scores-demo")["data"])

    set_yaml(repo / "params.yaml", "runs", "main.modalities", ["video"])
    with pytest.raises(DvcFailed, match="modalities"):  # the stage's own error reaches the flow
        retrain(repo=str(repo))
    assert tag_commit(repo) == accepted


def test_schedule_builds_a_cron_deployment():
    d = deployment("0 3 * * 1", "/srv/mmolre")
    assert d.name == "mmolre-retrain"
    assert d.schedules[0].schedule.cron == "0 3 * * 1"
    assert d.parameters == {"repo": "/srv/mmolre", "force": False}
