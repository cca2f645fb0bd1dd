"""params.yaml loading, --set overrides, and the CLI's messages."""

import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml

from mmolre import MmolreError
from mmolre.cli import main
from mmolre.params import build, load_params, set_param

from conftest import ROOT


def test_set_parses_yaml_values_and_refuses_unknown_keys():
    params = load_params(ROOT / "params.yaml", ["train.lr=0.002", "runs.main.modalities=[text]"])
    assert params["train"]["lr"] == 0.002 and params["runs"]["main"]["modalities"] == ["text"]
    with pytest.raises(MmolreError, match="unknown key"):
        set_param(params, "train.lrr=1")
    with pytest.raises(MmolreError, match="no section 'nope'"):
        set_param(params, "nope.x=1")
    with pytest.raises(MmolreError, match="expected key=value"):
        set_param(params, "train.lr")


def test_build_names_the_unknown_key():
    @dataclass
    class Section:
        a: int = 1

    assert build(Section, {"s": {"a": 3}}, "s").a == 3
    with pytest.raises(MmolreError, match="s.b is not a known key"):
        build(Section, {"s": {"b": 3}}, "s")


def test_every_stage_has_help():
    out = subprocess.run([sys.executable, "-m", "mmolre", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for stage in ("download", "prepare", "featurize", "train", "evaluate", "report"):
        assert stage in out.stdout
    out = subprocess.run([sys.executable, "-m", "mmolre", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "--run" in out.stdout and "--set" in out.stdout and "early stopping" in out.stdout


@pytest.mark.parametrize("dataset, first_file", [("mosi", "CMU_MOSI.zip"), ("mosei", "CMU_MOSEI.zip")])
def test_unreachable_corpus_fails_fast_with_what_to_do(tmp_path, capsys, monkeypatch, dataset, first_file):
    import socket
    import time

    monkeypatch.chdir(ROOT)
    with socket.socket() as s:  # a mirror nobody serves
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    code = main(["download", "--set", f"data.dataset={dataset}", "--set", f"data.mirror=http://127.0.0.1:{port}",
                 "--raw-root", str(tmp_path / "raw"), "--downloads", str(tmp_path / "downloads")])
    assert code == 2 and time.perf_counter() - started < 20
    err = capsys.readouterr().err
    assert f"mmolre download: error: {first_file}: CMU no longer distributes the raw archives" in err
    assert f"http://127.0.0.1:9/raw_datasets/{first_file}" in err  # the official host first (conftest: closed)
    assert f"http://127.0.0.1:{port}/{first_file} is unreachable" in err and len(err.strip().splitlines()) == 1
    assert "--from-archive" in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()


def test_missing_input_says_which_stage_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["prepare", "--raw-root", str(tmp_path / "raw"), "--out-root", str(tmp_path / "p")]) == 2
    assert "run `mmolre download` first" in capsys.readouterr().err


@pytest.mark.parametrize("setting, words", [
    ("train.epochs=abc", "params train.epochs='abc': Input should be a valid integer"),
    ("train.lr=-0.001", "params train.lr=-0.001: Input should be greater than 0"),
    ("model.dropout=1.0", "params model.dropout=1.0: Input should be less than 1"),
    ("model.rank=256", "params model: rank=256 must be <= d_model=128 (a low-rank expert)"),
    ("model.n_heads=3", "params model: n_heads=3 must divide d_model=128"),
    ("data.dataset=imdb", "params data.dataset='imdb': Input should be 'demo', 'mosi', 'mosei' or 'cmu' (the datasets of mmolre/datasets/)"),
    ("model.variant=nope", "params model.variant='nope': Input should be 'mmolre', 'no_shared'"),
    ("train.device=tpu", "params train.device='tpu': Input should be 'auto', 'cpu' or 'cuda'"),
    ("runs.main.modalities=[video]", "params runs.main.modalities.0='video': Input should be 'text' or 'audio'"),
])
def test_bad_params_are_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, monkeypatch, setting, words):
    monkeypatch.chdir(ROOT)
    code = main(["train", "--set", setting, "--features-root", str(tmp_path / "f"), "--models-root",
                 str(tmp_path / "m"), "--curves-root", str(tmp_path / "c")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[0].startswith(f"mmolre train: error: {words}"), err
    assert len(lines) == 1, err
    assert not list(tmp_path.iterdir())


def test_unknown_key_in_the_params_file_is_named(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["evaluate", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmolre evaluate: error: params train.learning_rate: unknown key; train takes [")
    assert "'lr'" in err and len(err.splitlines()) == 1


def test_schemas_cover_the_stage_configs_key_for_key():
    """The stages build their configs from the section schemas; the demo and model dataclasses name the same keys."""
    import dataclasses

    from mmolre.datasets.demo import DemoConfig
    from mmolre.evaluate import EvaluateConfig
    from mmolre.featurize import FeaturizeConfig
    from mmolre.model import MMoLREConfig
    from mmolre.params import SECTIONS
    from mmolre.prepare import PrepareConfig
    from mmolre.train import TrainConfig

    for section, config in (("prepare", PrepareConfig), ("featurize", FeaturizeConfig), ("train", TrainConfig),
                            ("evaluate", EvaluateConfig)):
        assert config is SECTIONS[section], section
    assert set(SECTIONS["demo"].model_fields) == {f.name for f in dataclasses.fields(DemoConfig)}
    assert set(SECTIONS["model"].model_fields) <= {f.name for f in dataclasses.fields(MMoLREConfig)}
    assert yaml.safe_load((ROOT / "params.yaml").read_text()).keys() == set(SECTIONS) | {"runs"}


def test_values_reach_the_stages_converted_by_the_schema():
    """YAML (and `dvc exp run -S`) write 1e-07 without a dot, which PyYAML reads as a string."""
    from mmolre.params import build
    from mmolre.train import TrainConfig

    params = load_params(ROOT / "params.yaml", ["train.lr=1e-07", "train.epochs=3.0"])
    assert params["train"]["lr"] == "1e-07"
    cfg = build(TrainConfig, params, "train")
    assert cfg.lr == 1e-07 and isinstance(cfg.lr, float) and cfg.epochs == 3 and isinstance(cfg.epochs, int)
