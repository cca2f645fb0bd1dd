"""End to end: the real dvc.yaml on the shrunk demo in a temporary git + DVC repository."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import make_project_repo, set_yaml, sh, tool_env

pytestmark = pytest.mark.slow


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The project reproduced once and committed; every test starts from it and leaves it so (`restore`), so that
    each test runs alone or in any order. The first `dvc repro`'s log is in first-repro.log beside it."""
    repo = make_project_repo(tmp_path_factory.mktemp("my project"))  # a path with a space, as users have
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["runs"] = {run: params["runs"][run] for run in ("main", "trimodal")}  # two: the foreach, cheaply
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "commit", "-qam", "two runs")
    (repo.parent / "first-repro.log").write_text(sh(repo, *DVC, "repro"))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "first run")
    return repo


def restore(repo: Path) -> None:
    """The workspace back at the last commit: its params and metrics (git) and its outputs (DVC's cache)."""
    sh(repo, "git", "checkout", "-q", "--", ".")
    sh(repo, *DVC, "checkout", "-q", "--force")
    assert "Data and pipelines are up to date" in sh(repo, *DVC, "status")


def test_repro_runs_every_stage_then_is_a_no_op_then_reruns_only_what_lr_touches(repo):
    dvc = DVC
    first = (repo.parent / "first-repro.log").read_text()
    assert ran_stages(first) == {"download", "prepare", "featurize", "train@main", "train@trimodal", "evaluate",
                                 "transfer", "report"}
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics["demo"]) == {"msa", "mer"}
    assert (repo / "reports" / "report.md").is_file() and (repo / "reports" / "figures" / "routing.png").is_file()
    assert sorted(p.name for p in (repo / "models" / "main").iterdir()) == ["config.json", "model.safetensors"]
    report = (repo / "reports" / "report.md").read_text()  # the trimodal run in the runs and robustness tables
    assert "| trimodal | text+audio+video |" in report and "| trimodal | video absent |" in report
    assert list(json.loads((repo / "reports" / "robustness.json").read_text())["trimodal"]) == [
        "full", "video absent", "audio absent", "text absent", "audio noise"]

    second = sh(repo, *dvc, "repro")
    assert ran_stages(second) == set() and "Data and pipelines are up to date" in second

    set_yaml(repo / "params.yaml", "train", "lr", 0.01)
    try:
        third = sh(repo, *dvc, "repro")
        assert ran_stages(third) == {"train@main", "train@trimodal", "evaluate", "transfer", "report"}
        diff = json.loads(sh(repo, *dvc, "metrics", "diff", "--json").strip().splitlines()[-1])
    finally:
        restore(repo)
    changed = diff["reports/metrics.json"]
    assert "demo.msa.mae" in changed
    assert changed["demo.msa.mae"]["old"] != changed["demo.msa.mae"]["new"]
    assert "reports/runs.json" in diff


def test_a_new_model_option_reruns_the_model_stages_and_leaves_the_data_stages_up_to_date(repo):
    """An ablation added as one VARIANTS entry (mmolre/model_config.py) and a model option (a field of the model
    section, mmolre/runs.py): download, prepare and featurize stay up to date, training is what reruns."""
    dvc = [sys.executable, "-m", "dvc"]
    assert "Data and pipelines are up to date" in sh(repo, *dvc, "status")
    config, runs = repo / "mmolre" / "model_config.py", repo / "mmolre" / "runs.py"
    config.write_text(config.read_text() + '\nVARIANTS["no_shared_twice"] = VARIANTS["no_shared"]\n')
    runs.write_text(runs.read_text().replace("class RunParams(ModelParams):",
                                             "class RunParams(ModelParams):\n    new_option: int = 0"))
    try:
        changed = json.loads(sh(repo, *dvc, "status", "--json").strip().splitlines()[-1])
        assert {"download", "prepare", "featurize"}.isdisjoint(changed)
        assert {"train@main", "evaluate", "report"} <= set(changed)
    finally:
        sh(repo, "git", "checkout", "--", "mmolre/model_config.py", "mmolre/runs.py")
    assert "Data and pipelines are up to date" in sh(repo, *dvc, "status")


def test_a_second_repro_in_the_same_workspace_is_refused_and_the_first_finishes(repo):
    assert " " in str(repo)
    set_yaml(repo / "params.yaml", "evaluate", "batch_size", 16)  # evaluate and transfer rerun: seconds of lock
    dvc = [*DVC, "repro"]
    log = repo.parent / "first.log"
    try:
        first = subprocess.Popen(dvc, cwd=repo, env=tool_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "Running stage" not in log.read_text():  # the first holds DVC's lock from here on
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        second = subprocess.run(dvc, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=120)
        said = second.stdout + second.stderr  # DVC's repo lock, or its per-output read/write lock
        assert second.returncode != 0 and ("Unable to acquire lock" in said or "is busy" in said), said
        assert first.wait(600) == 0, log.read_text()
        assert {"evaluate", "transfer"} <= ran_stages(log.read_text()) <= {"evaluate", "transfer", "report"}
        assert "Data and pipelines are up to date" in sh(repo, *dvc)
    finally:
        restore(repo)


def test_dvclive_metrics_in_exp_show_and_curves_in_plots_diff(repo):
    dvc = DVC
    committed_lr = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"]
    try:
        sh(repo, *dvc, "exp", "run", "-n", "lr-high", "-S", "train.lr=0.001")
        shown = json.loads(sh(repo, *dvc, "exp", "show", "--json").strip().splitlines()[-1])
        plots = json.loads(sh(repo, *dvc, "plots", "diff", "HEAD", "lr-high", "--json").strip().splitlines()[-1])["data"]
    finally:
        restore(repo)  # `exp run` leaves the experiment's params and outputs in the workspace
    commit = next(c for c in shown if c["rev"] != "workspace")
    experiment = next(e["revs"][0] for e in commit["experiments"] if e["name"] == "lr-high")
    for metrics in (commit["data"]["metrics"], experiment["data"]["metrics"]):  # the baseline and the experiment
        main = metrics["reports/train/main/metrics.json"]["data"]
        assert {"train", "valid", "lr", "step", "best"} <= set(main) and main["best"]["epoch"] >= 1
        assert "reports/train/trimodal/metrics.json" in metrics
    assert experiment["data"]["metrics"]["reports/train/main/metrics.json"]["data"]["lr"] == 0.001
    assert commit["data"]["metrics"]["reports/train/main/metrics.json"]["data"]["lr"] == committed_lr != 0.001
    loss = plots["Training loss (main run)"][0]
    rows = loss["content"]["data"]["values"]
    assert set(loss["revisions"]) == {"HEAD", "lr-high"} and {r["rev"] for r in rows} == {"HEAD", "lr-high"}
    by_rev = {rev: [r["loss"] for r in rows if r["rev"] == rev and r["filename"] == "valid/loss.tsv"]
              for rev in ("HEAD", "lr-high")}
    assert len(by_rev["HEAD"]) == 2 and by_rev["HEAD"] != by_rev["lr-high"]  # two curves, one per experiment
    figures = {entry["revisions"][0]: Path(entry["url"]).read_bytes() for entry in plots["reports/figures/curves.png"]}
    assert all(entry["type"] == "image" for entry in plots["reports/figures/curves.png"])
    assert set(figures) == {"HEAD", "lr-high"} and figures["HEAD"] != figures["lr-high"]  # the report's figure, twice
    assert {f"reports/figures/{f}.png" for f in ("curves", "scatter", "confusion", "routing", "utilization")} <= set(plots)


def test_a_fresh_clone_pulls_every_output_from_the_remote_and_recomputes_nothing(repo, tmp_path):
    dvc = [sys.executable, "-m", "dvc"]
    remote = tmp_path / "shared cache"  # any DVC remote: a local folder here, s3://... or gs://... alike
    sh(repo, *dvc, "remote", "add", "-d", "shared", str(remote))
    sh(repo, *dvc, "repro")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    assert "pushed" in sh(repo, *dvc, "push")
    clone = tmp_path / "clone of it"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models" / "main").exists() and not (clone / "data" / "features" / "demo").exists()
    sh(clone, *dvc, "pull")
    assert sorted(p.name for p in (clone / "models" / "main").iterdir()) == ["config.json", "model.safetensors"]
    assert (clone / "models/main/model.safetensors").read_bytes() == (repo / "models/main/model.safetensors").read_bytes()
    assert "Data and pipelines are up to date" in sh(clone, *dvc, "status")
    log = sh(clone, *dvc, "repro")
    assert ran_stages(log) == set() and "Data and pipelines are up to date" in log


def hub_env(hub, home: Path, **extra) -> dict:
    """The tools' environment pointed at the hub on 127.0.0.1 (HF_ENDPOINT), with its token and a fresh cache."""
    from fake_hub import TOKEN

    return {**tool_env(), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(home),
            "HF_HUB_OFFLINE": "0", **extra}


def run_in(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_publish_uploads_card_weights_and_config_in_one_commit_and_predict_from_the_hub_equals_the_folder(
        repo, tmp_path, monkeypatch, capsys):
    """Publish and predict from the hub run as the user runs them (HF_ENDPOINT is read when huggingface_hub is
    imported); the dry run and the folder's predictions in this process."""
    from huggingface_hub import ModelCard

    from fake_hub import FakeHub
    from mmolre.cli import main
    from mmolre.metrics import flatten

    assert "Data and pipelines are up to date" in sh(repo, *DVC, "repro")
    wav = str(repo / "data/raw/demo/audio" / sorted(p.name for p in (repo / "data/raw/demo/audio").iterdir())[0])
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path / "hf")
        out = run_in(repo, env, "mmolre", "publish", "models/main", "--repo", "tester/mmolre-demo", "--private",
                     "--license", "apache-2.0")
        assert out.returncode == 0, out.stderr
        repository = hub.repos["tester/mmolre-demo"]
        (oid, summary, files), = repository.commits[1:]  # one commit after the hub's initial one
        assert repository.private and summary == "mmolre publish: run main"
        assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
        for name in ("config.json", "model.safetensors"):
            assert files[name] == (repo / "models/main" / name).read_bytes()
        assert f"mmolre predict --model tester/mmolre-demo --revision {oid} --audio clip.wav" in out.stdout
        assert f"/tester/mmolre-demo/commit/{oid} (3 files, private)" in out.stdout
        data = ModelCard(files["README.md"].decode()).data
        metrics = flatten(json.loads((repo / "reports/metrics.json").read_text())["demo"])
        defined = {key: value for key, value in metrics.items() if value is not None}  # null: undefined (NaN)
        assert {r.metric_type: r.metric_value for r in data.eval_results} == defined and "msa.mae" in defined
        assert all(r.metric_args == {"seeds": [1111]} for r in data.eval_results)  # one seed: no std
        assert data.library_name == "mmolre" and data.base_model == ["sentence-transformers/all-MiniLM-L6-v2"]

        monkeypatch.chdir(repo)
        capsys.readouterr()
        assert main(["publish", "models/main", "--repo", "tester/mmolre-demo", "--private", "--license",
                     "apache-2.0", "--dry-run", str(tmp_path / "staged")]) == 0
        assert "nothing uploaded" in capsys.readouterr().out and len(repository.commits) == 2
        assert (tmp_path / "staged" / "README.md").read_bytes() == files["README.md"]

        predict = ("predict", "--audio", wav, "--text", "what a lovely day", "--json")
        assert main([*predict, "--model", "models/main"]) == 0
        from_folder = json.loads(capsys.readouterr().out)
        got = run_in(repo, env, "mmolre", *predict, "--model", "tester/mmolre-demo")
        assert got.returncode == 0, got.stderr
        from_hub = json.loads(got.stdout)
        assert from_hub.pop("model") == f"tester/mmolre-demo@{oid}" and from_folder.pop("model") == "models/main"
        assert from_hub == from_folder
        hub.shutdown()  # the pinned revision comes from the cache now
        cached = run_in(repo, {**env, "HF_HUB_OFFLINE": "1"}, "mmolre", *predict, "--model", "tester/mmolre-demo",
                        "--revision", oid)
        assert cached.returncode == 0, cached.stderr
        assert json.loads(cached.stdout) == {**from_folder, "model": f"tester/mmolre-demo@{oid}"}


def test_publish_refuses_a_dirty_workspace_and_a_missing_token_in_one_line(repo, tmp_path, monkeypatch, capsys):
    from mmolre.cli import main

    monkeypatch.chdir(repo)
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no login" / "token"))
    assert main(["publish", "models/main", "--repo", "tester/x"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said == ["mmolre publish: error: no Hugging Face token: run `hf auth login` (a token with write access) "
                    "or set HF_TOKEN; --dry-run DIR writes the files without uploading"]
    set_yaml(repo / "params.yaml", "train", "lr", 0.002)
    try:
        assert main(["publish", "models/main", "--repo", "tester/x", "--dry-run", str(tmp_path / "d")]) == 2
    finally:
        sh(repo, "git", "checkout", "--", "params.yaml")
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("mmolre publish: error: dvc status: train@main, train@trimodal "
                                                 "changed since the last `dvc repro`, so the model, its metrics")
    assert not (tmp_path / "d").exists()
