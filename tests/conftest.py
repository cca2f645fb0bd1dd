"""Shared fixtures: the real params.yaml shrunk to a tiny demo (few dozen utterances, tiny model)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `make test`'s parallel workers: one thread each, as the CPUs
    for _key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # are shared among them (before torch is imported)
        os.environ.setdefault(_key, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="mmolre-prefect-"))  # before prefect is imported
for _key, _value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@t"), ("GIT_COMMITTER_NAME", "t"),
                     ("GIT_COMMITTER_EMAIL", "t@t")):
    os.environ.setdefault(_key, _value)

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


@pytest.fixture(autouse=True)
def no_cmu_host(monkeypatch):
    """No test ever reaches CMU's host: its official URLs point at a closed port on 127.0.0.1 (a test that
    serves the official files itself sets `sdk.HOST` to its own server)."""
    from mmolre.datasets import sdk

    monkeypatch.setattr(sdk, "HOST", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One temporary Prefect server for the session (in-process flow runs, and the workers tests start);
    its API URL. Stopped before pytest closes its output."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


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


def tool_env() -> dict:
    """The environment with this venv's tools (mmolre, dvc) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(repo: Path, *args: str) -> str:
    """Run a command in `repo` with this venv's tools first on PATH; fail the test with its output."""
    out = subprocess.run(args, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout + out.stderr


def make_project_repo(repo: Path) -> Path:
    """A git + DVC repository holding the real dvc.yaml and code, with the shrunk params."""
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


def set_yaml(path: Path, section: str, key: str, value) -> None:
    data = yaml.safe_load(path.read_text())
    node = data[section]
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
