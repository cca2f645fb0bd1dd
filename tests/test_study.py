"""`mmolre study`: a 2 x 2 grid as queued DVC experiments in a temporary repository whose one stage scores the
params it is given (what is under test is the machinery around `dvc exp run --queue`, not training)."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, sh, shrink, tool_env
from mmolre.study import field_ranges, folded, named_points, parse_grid, point_name, sample_points

# the test MAE falls with n * r; the valid MAE (runs.main's best epoch, which chooses) is lowest at n * r = 12
SCORE = """import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))
n, r, seeds = p["model"]["n_experts"], p["model"]["rank"], p["runs"]["main"]["seeds"]
maes = [1.0 / (n * r) + s / 1e4 for s in seeds]
mean = sum(maes) / len(maes)
pathlib.Path("reports/train/main").mkdir(parents=True, exist_ok=True)
msa = {"mae": mean} if len(maes) == 1 else {"mae": mean, "mae_std": 0.5}
pathlib.Path("reports/metrics.json").write_text(json.dumps({"demo": {"msa": msa}}))
best = {"valid_mae": abs(n * r - 12) / 10 + 0.5, "valid_loss": 9.0}
pathlib.Path("reports/train/main/metrics.json").write_text(json.dumps({"best": best}))
costs = {run: {"params": 100 * n * r, "flops_per_utterance": 10**6 * n} for run in p["runs"]}
pathlib.Path("reports/costs.json").write_text(json.dumps(costs))
"""
STAGE = {"stages": {"score": {"cmd": "python score.py", "deps": ["score.py"], "params": ["model", "runs"],
                              "metrics": [{"reports/metrics.json": {"cache": False}},
                                          {"reports/train/main/metrics.json": {"cache": False}},
                                          {"reports/costs.json": {"cache": False}}]}}}


def study_repo(repo):
    params = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "score.py").write_text(SCORE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(STAGE, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    sh(repo, "git", "init", "-q")
    sh(repo, *dvc, "init", "-q")
    sh(repo, *dvc, "config", "core.analytics", "false")
    sh(repo, *dvc, "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    return repo


def mmolre(repo, *args):
    return subprocess.run([shutil.which("mmolre", path=tool_env()["PATH"]), *args], cwd=repo, env=tool_env(),
                          capture_output=True, text=True, timeout=600)


def test_grid_values_and_names():
    assert parse_grid(["model.rank=16,32", "model.rank_list=[8,16],[4,4]"]) == {
        "model.rank": [16, 32], "model.rank_list": [[8, 16], [4, 4]]}
    assert point_name("study", {"model.n_experts": 3, "model.rank": [8, 16]}, [1111, 1]) == \
        "study-n_experts3-rank_8_16_-s1111_1"
    assert point_name("s", {"model.dropout": 0.1, "train.dropout": 0.2}, None) == "s-model_dropout0.1-train_dropout0.2"
    assert point_name("study", {"model.arch": "tfn", "model.rank": 8}, None) == "study-archtfn-rank8"


def test_the_study_table_gives_each_point_its_seeds_interval():
    from mmolre.study import metric_of, study_table

    metrics = {"demo": {"msa": {"mae": 0.5, "mae_std": 0.1, "mae_ci95": 0.2484}}}
    assert metric_of(metrics, "demo.msa.mae") == (0.5, 0.1, 0.2484)
    row = {"model.rank": 4, "experiment": "s-rank4", "demo.msa.mae": 0.5, "demo.msa.mae_std": 0.1,
           "demo.msa.mae_ci95": 0.2484, "params": 10, "flops_per_utterance": 2e9,
           "valid": {"key": "best.valid_mae", "value": 0.61}}
    assert "| 4 | 0.61 | 0.5 ± 0.1 | [0.2516, 0.7484] | 10 | 2 | s-rank4 |" in study_table([row], ["model.rank"], "demo.msa.mae")


@pytest.mark.slow
def test_study_runs_a_2x2_grid_once_and_writes_its_table_and_figure(tmp_path):
    repo = study_repo(tmp_path)
    before = (repo / "params.yaml").read_text()
    first = mmolre(repo, "study", "--grid", "model.n_experts=1,3", "--grid", "model.rank=4,8", "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "study: 4 points, 0 already run or queued on this commit, 4 to run" in first.stderr
    study = json.loads((repo / "reports" / "study" / "study.json").read_text())
    got = {(p["model.n_experts"], p["model.rank"]): (p["demo.msa.mae"], p["params"]) for p in study["points"]}
    assert got == {(n, r): (pytest.approx(1 / (n * r) + 0.1111), 100 * n * r) for n in (1, 3) for r in (4, 8)}
    # chosen on validation (n * r = 12), not on the test MAE (lowest at n * r = 24)
    assert study["chosen"]["experiment"] == "study-n_experts3-rank4" and study["metric"] == "demo.msa.mae"
    assert study["chosen"]["valid"] == {"key": "best.valid_mae", "value": 0.5}
    table = (repo / "reports" / "study" / "study.md").read_text()
    assert "Chosen on the valid split (best.valid_mae of runs.main's best epoch = 0.5): **study-n_experts3-rank4**" in table
    assert "| model.n_experts | model.rank | valid | demo.msa.mae | 95 % CI of the mean | params | GFLOPs/utt | experiment |" in table
    assert "| 3 | 8 | 1.7 | 0.1528 | – | 2,400 | 0.003 | study-n_experts3-rank8 |" in table  # one seed: no interval
    assert (repo / "reports" / "study" / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (repo / "params.yaml").read_text() == before  # the workspace is as it was
    shown = json.loads(sh(repo, sys.executable, "-m", "dvc", "exp", "show", "--json").strip().splitlines()[-1])
    runs = {rev["name"]: sorted(rev["data"]["params"]["params.yaml"]["data"]["runs"])
            for e in shown[-1]["experiments"] for rev in e["revs"]}
    assert runs == {f"study-n_experts{n}-rank{r}": ["main"] for n in (1, 3) for r in (4, 8)}  # main alone

    second = mmolre(repo, "study", "--grid", "model.n_experts=1,3", "--grid", "model.rank=4,8")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "study: 4 points, 4 already run or queued on this commit, 0 to run" in second.stderr
    assert json.loads((repo / "reports" / "study" / "study.json").read_text()) == study
    names = sh(repo, sys.executable, "-m", "dvc", "exp", "ls", "--name-only").split()
    assert len(names) == 4


def test_a_bad_grid_value_is_one_line_and_queues_nothing(tmp_path, capsys, monkeypatch):
    from mmolre.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))))
    assert main(["study", "--grid", "model.rank=4,64"]) == 2
    assert capsys.readouterr().err == ("mmolre study: error: grid point {'model.rank': 64}: params model: rank=64 "
                                       "must be <= d_model=32 (a low-rank expert)\n")
    assert main(["study", "--grid", "model.rank"]) == 2
    assert "--grid 'model.rank': expected key=v1,v2,..." in capsys.readouterr().err
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / "reports").exists()


def test_a_set_value_is_a_one_value_key_of_every_point(tmp_path, monkeypatch):
    import mmolre.study
    from mmolre.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))))
    calls = []
    monkeypatch.setattr(mmolre.study, "study", lambda *args: calls.append(args))
    assert main(["study", "--grid", "model.rank=4,8", "--set", "model.dropout=0.2", "--seeds", "1,2"]) == 0
    params, grid, seeds, jobs, metric = calls[0][:5]
    assert calls[0][-1] is None  # no --sample: the whole grid
    assert grid == {"model.dropout": [0.2], "model.rank": [4, 8]} and seeds == [1, 2] and metric == "demo.msa.mae"
    assert point_name("study", {"model.dropout": 0.2, "model.rank": 4}, seeds) == "study-dropout0.2-rank4-s1_2"


def test_draws_are_seeded_distinct_and_every_point_when_there_are_few():
    ranges = {"model.rank": [4, 8, 16], "train.lr": [1e-4, 5e-4]}
    drawn = sample_points(ranges, 4, seed=7)
    assert drawn == sample_points(ranges, 4, seed=7) and len({json.dumps(p) for p in drawn}) == 4
    assert drawn != sample_points(ranges, 4, seed=8)
    assert len(sample_points(ranges, 10, seed=7)) == 6  # all six when ten are asked
    tfn = field_ranges("tfn")
    assert tfn["model.field_settings.text_out"] == [32, 64, 128, 256] and "model.field_settings.weight_decay" not in tfn
    assert folded({"model.arch": "tfn", "model.field_settings.text_out": 64, "model.field_settings.batch_size": 32}) == \
        {"model.arch": "tfn", "model.field_settings": {"text_out": 64, "batch_size": 32}}


def test_a_search_over_mults_ranges_draws_its_points_without_listing_the_product():
    """MMSA's MulT ranges hold 2,125,764,000 points: a search names its 50 draws, seeded, never the product."""
    ranges = field_ranges("mult")
    named = named_points(ranges, None, "tune", {"draws": 50, "seed": 1111})
    assert len(named) == 50 and named == named_points(ranges, None, "tune", {"draws": 50, "seed": 1111})
    assert all(name.startswith("tune-") and set(point) == set(ranges) for name, point in named.items())
    assert list(named_points({"model.rank": [4, 8]}, None, "s", None)) == ["s-rank4", "s-rank8"]


@pytest.mark.slow
def test_a_random_search_chooses_on_validation_and_reports_one_test_score(tmp_path):
    repo = study_repo(tmp_path)
    args = ["study", "--sample", "3", "--grid", "model.n_experts=1,2,3,4", "--grid", "model.rank=2,4,6", "--seed", "3",
            "--jobs", "2", "--name", "search"]
    first = mmolre(repo, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "study: 3 points, 0 already run or queued on this commit, 3 to run" in first.stderr
    study = json.loads((repo / "reports" / "study" / "study.json").read_text())
    drawn = sample_points({"model.n_experts": [1, 2, 3, 4], "model.rank": [2, 4, 6]}, 3, 3)
    assert [{k: p[k] for k in ("model.n_experts", "model.rank")} for p in study["points"]] == drawn
    valid = {p["experiment"]: p["valid"]["value"] for p in study["points"]}
    assert study["chosen"]["experiment"] == min(valid, key=valid.get) and study["mode"] == "sample"
    assert all("demo.msa.mae" not in p for p in study["points"])  # no test score but the chosen point's
    n, r = study["chosen"]["model.n_experts"], study["chosen"]["model.rank"]
    assert study["chosen"]["demo.msa.mae"] == pytest.approx(1 / (n * r) + 0.1111)
    text = (repo / "reports" / "study" / "study.md").read_text()
    assert "the only test score this search reports" in text and not (repo / "reports/study/study.png").exists()
    second = mmolre(repo, *args)
    assert "study: 3 points, 3 already run or queued on this commit, 0 to run" in second.stderr


def test_on_the_demo_test_labels_change_nothing_in_the_choice(tiny_demo, tmp_path):
    """Four points drawn from the ranges are trained on the demo's features, and again on a copy whose test labels
    are NaN: the valid scores the study reads, and so its choice, are the same."""
    import shutil as sh_util

    import h5py
    import numpy as np

    from mmolre.features import FeatureFile
    from mmolre.study import SELECT, chosen, valid_score
    from mmolre.train import train

    blind = tmp_path / "blind" / tiny_demo["h5"].parent.name
    sh_util.copytree(tiny_demo["h5"].parent, blind)
    with h5py.File(blind / tiny_demo["h5"].name, "r+") as f:
        test = f["meta/split"].asstr()[:] == "test"
        for name in ("sentiment", "emotions"):
            values = f[f"meta/{name}"][:]
            values[test] = np.nan
            f[f"meta/{name}"][:] = values
    original, copy = FeatureFile(tiny_demo["h5"]), FeatureFile(blind / tiny_demo["h5"].name)
    assert not np.isnan(original.sentiment[original.indices("test")]).any()
    assert np.isnan(copy.sentiment[copy.indices("test")]).all() and len(copy.indices("test"))
    choices = []
    for root in (tiny_demo["features"], blind.parent):
        rows = []
        for k, point in enumerate(sample_points({"model.rank": [2, 4, 8], "model.dropout": [0.0, 0.3]}, 4, 1)):
            params = {**tiny_demo["params"], "model": {**tiny_demo["params"]["model"], "rank": point["model.rank"],
                                                       "dropout": point["model.dropout"]}}
            train(params, "main", root, tmp_path / f"models{k}", tmp_path / f"curves{k}")
            files = {"reports/train/main/metrics.json": json.loads((tmp_path / f"curves{k}/main/metrics.json").read_text())}
            rows.append({"experiment": str(k), "valid": dict(zip(("key", "value"), valid_score(files, SELECT, str(k))))})
        choices.append((rows, chosen(rows)))
    assert choices[0] == choices[1]
