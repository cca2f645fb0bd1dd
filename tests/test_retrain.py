"""The Prefect retraining flow on the shrunk demo in a temporary git + DVC repository."""

import hashlib
import subprocess
import sys

import httpx
import pytest
import yaml
from prefect.settings import PREFECT_API_URL

from conftest import make_project_repo, set_yaml
from flows.retrain import RetrainFailed, retrain
from flows.schedule import deployment

pytestmark = pytest.mark.slow


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


def test_retrain_promotes_skips_keeps_and_fails_without_serving_a_rejected_model(prefect_api, tmp_path, caplog):
    (tmp_path / "my repo").mkdir()
    repo = make_project_repo(tmp_path / "my repo")  # a path with a space: the flow quotes nothing by hand
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["runs"] = {"main": params["runs"]["main"]}  # the flow reads no other run: one model per candidate
    params["featurize"]["video_encoder"] = None
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "commit", "-qam", "the main run alone"], cwd=repo, check=True, capture_output=True)

    first = retrain(repo=str(repo))  # nothing committed to compare with: promoted
    assert first["trained"] and first["promoted"] and first["accepted"] is None
    assert first["line"].startswith("retrain: trained, promoted")
    accepted = tag_commit(repo)
    assert accepted
    accepted_state = state(repo)
    assert accepted_state["git"] == "" and "up to date" in accepted_state["dvc"] and accepted_state["models"]

    second = retrain(repo=str(repo))
    assert not second["trained"] and second["line"] == "retrain: skipped (nothing changed since the last run)"
    fresh_clones_restore_then_skip(repo, tmp_path, caplog)

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



def test_the_bar_is_the_promotion_tag_else_the_committed_head(tmp_path):
    """Before any promotion the committed HEAD is the accepted revision (so a first candidate is compared with the
    committed baseline); checked on a bare git repository rather than by a fourth retraining."""
    from flows.retrain import accepted_revision

    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True)
    git("init", "-q")
    assert accepted_revision("mmolre-accepted", str(tmp_path)) is None  # no commit yet
    git("commit", "-q", "--allow-empty", "-m", "baseline")
    assert accepted_revision("mmolre-accepted", str(tmp_path)) == "HEAD"
    git("tag", "mmolre-accepted")
    git("commit", "-q", "--allow-empty", "-m", "later")
    assert accepted_revision("mmolre-accepted", str(tmp_path)) == "mmolre-accepted"


def test_schedule_builds_a_cron_deployment():
    d = deployment("0 3 * * 1", "/srv/mmolre")
    assert d.name == "mmolre-retrain"
    assert d.schedules[0].schedule.cron == "0 3 * * 1"
    assert d.parameters == {"repo": "/srv/mmolre", "force": False}


def clone(origin, folder):
    subprocess.run(["git", "clone", "-q", str(origin), str(folder)], check=True, capture_output=True)
    return folder


def fresh_clones_restore_then_skip(origin, tmp_path, caplog):
    """A fresh clone (no DVC cache) of the accepted revision: the first run restores its outputs (pulled
    when a remote holds them, else rebuilt byte for byte), the second skips; never a candidate. The fallbacks
    are steps, each one line in the log, not failures: no traceback."""
    rebuilt = clone(origin, tmp_path / "fresh clone")
    caplog.clear()
    first = retrain(repo=str(rebuilt))
    log = caplog.text
    assert "Traceback" not in log and "DvcFailed" not in log
    for step in ("retrain: restore: dvc checkout: not all in the DVC cache",
                 "retrain: restore: dvc pull: no DVC remote configured",
                 "retrain: restore: dvc repro: rebuilding the accepted outputs"):
        assert step in log
    assert not first["trained"] and first["line"] == (
        "retrain: restored the accepted outputs: in no DVC cache or remote, so rebuilt by `dvc repro`, byte for "
        "byte (nothing changed since the accepted revision)")
    assert state(rebuilt)["git"] == "" and "up to date" in state(rebuilt)["dvc"]
    assert state(rebuilt)["models"] == state(origin)["models"]
    assert retrain(repo=str(rebuilt))["line"] == "retrain: skipped (nothing changed since the last run)"

    store = tmp_path / "dvc store"
    sh = lambda repo, *args: subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True)
    sh(origin, sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(store))
    sh(origin, sys.executable, "-m", "dvc", "push", "-q")
    sh(origin, "git", "commit", "-qam", "a DVC remote")
    pulled = clone(origin, tmp_path / "clone with a remote")
    assert retrain(repo=str(pulled))["line"] == (
        "retrain: restored the accepted outputs from DVC (nothing changed since the accepted revision)")
    assert state(pulled)["models"] == state(origin)["models"] and "up to date" in state(pulled)["dvc"]
    assert retrain(repo=str(pulled))["line"] == "retrain: skipped (nothing changed since the last run)"

    from flows.retrain import OutputsMissing, restore

    bare = clone(origin, tmp_path / "clone without cache or remote")
    sh(bare, "git", "checkout", "-q", "mmolre-accepted")  # before the remote was configured
    (bare / "models/main").mkdir(parents=True)
    (bare / "models/main/model.safetensors").write_bytes(b"a rejected candidate's weights")
    with pytest.raises(OutputsMissing) as missing:  # a kept candidate where the accepted outputs are nowhere
        restore(str(bare), "HEAD")
    assert "models/main" in missing.value.paths and not (bare / "models/main").exists()
    assert "`dvc pull` them from a remote that holds them, or `dvc repro`" in str(missing.value)


def test_only_absent_outputs_is_a_restore_and_anything_else_a_candidate():
    from flows.retrain import only_absent_outputs

    fresh = {"prepare": [{"changed deps": {"data/raw/demo": "deleted"}}, {"changed outs": {"data/prepared/demo": "not in cache"}}],
             "train@main": [{"changed outs": {"models/main": "not in cache"}}],
             "evaluate": [{"changed deps": {"models": "modified"}}, {"changed outs": {"reports/predictions": "deleted"}}]}
    assert only_absent_outputs(fresh)  # `models` is a folder holding absent outputs (its .gitignore is there)
    code = {**fresh, "train@main": [{"changed deps": {"mmolre/train.py": "modified"}}, *fresh["train@main"]]}
    params = {**fresh, "train@main": [{"changed deps": {"params.yaml": {"train.lr": 0.02}}}]}
    edited = {**fresh, "train@main": [{"changed outs": {"models/main": "modified"}}]}
    assert not any(map(only_absent_outputs, (code, params, edited, {}, {"train@main": ["changed command"]})))
