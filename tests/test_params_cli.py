"""params.yaml loading, --set overrides, and the CLI's messages."""

import importlib
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
    for stage in ("download", "prepare", "featurize", "train", "evaluate", "report", "predict", "publish"):
        assert stage in out.stdout
    out = subprocess.run([sys.executable, "-m", "mmolre", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "--run" in out.stdout and "--set" in out.stdout and "early stopping" in out.stdout


def test_the_commands_are_entry_points_so_a_new_one_leaves_cli_py_unchanged():
    """Every stage imports cli.py: a command list there would make a new command rerun every stage."""
    import tomllib

    from mmolre.cli import commands

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["mmolre.commands"]
    assert commands() == declared  # the installed metadata is the file's (else: make setup)
    cli = (ROOT / "mmolre" / "cli.py").read_text()
    assert not [name for name in declared if f'"{name}"' in cli or f"'{name}'" in cli]
    for module in declared.values():
        imported = importlib.import_module(module)
        assert callable(imported.add_arguments) and callable(imported.run), module


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
    ("data.dataset=imdb", "params data.dataset='imdb': Input should be 'demo', 'mosi', 'mosei', 'cmu', 'sims', 'sims2', "
                          "'meld', 'iemocap' or 'custom' (the datasets of mmolre/datasets/)"),
    ("data.test_session=6", "params data.test_session=6: Input should be less than or equal to 5"),
    ("train.device=tpu", "params train.device='tpu': Input should be 'auto', 'cpu' or 'cuda'"),
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


# Every rule of MMoLREConfig (mmolre/model_config.py), each set through `mmolre train --set`: the model's own
# message, once, before anything is read or written.
MODEL_RULES = [
    (["model.variant=nope"], "model", "variant='nope': choose one of mmolre, no_shared, no_specific, full_rank, "
                                      "hard_sharing, msa_only, mer_only"),
    (["model.expert=lowrank_mlp"], "model", "expert='lowrank_mlp': choose one of lowrank_conv, lowrank_linear"),
    (["model.router=switch"], "model", "router='switch': choose one of dense, topk, top_p"),
    (["runs.main.modalities=[smell]"], "runs.main", "modalities='smell': choose one of text, audio, video"),
    (["runs.main.modalities=[]"], "runs.main", "modalities=[]: a non-empty subset of text, audio, video"),
    (["model.n_heads=3"], "model", "n_heads=3 must divide d_model=128"),
    (["model.rank=[8, 16]"], "model", "rank=[8, 16] needs one rank per shared expert (n_experts=4)"),
    (["model.rank=256"], "model", "rank=256 must be <= d_model=128 (a low-rank expert)"),
    (["model.variant=no_shared", "model.router=topk", "model.top_k=5"], "model",
     "top_k=5: a mixture has 1 expert(s) with n_experts=4 and variant=no_shared; choose 1 <= top_k <= 1"),
]


@pytest.mark.parametrize("settings, section, rule", MODEL_RULES, ids=[r[2].split(":")[0].split(" ")[0] for r in MODEL_RULES])
def test_each_model_rule_is_one_line_from_params_validation(tmp_path, capsys, monkeypatch, settings, section, rule):
    """The same sentence the model's config raises, prefixed with the section, exit 2, nothing written."""
    from mmolre.model_config import MMoLREConfig
    from mmolre.runs import run_spec

    monkeypatch.chdir(ROOT)
    args = [a for setting in settings for a in ("--set", setting)]
    code = main(["train", *args, "--features-root", str(tmp_path / "f"), "--models-root", str(tmp_path / "m"),
                 "--curves-root", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"mmolre train: error: params {section}: {rule}\n"
    assert not list(tmp_path.iterdir())
    spec = {**load_params(ROOT / "params.yaml", settings)["model"], "modalities": ["text", "audio"]}
    if section == "runs.main":
        spec |= load_params(ROOT / "params.yaml", settings)["runs"]["main"]
    spec.pop("seeds", None)
    with pytest.raises(ValueError) as raised:
        MMoLREConfig(**spec)
    assert str(raised.value) == rule  # one set of rules, one message
    with pytest.raises(MmolreError, match="^params"):
        run_spec(load_params(ROOT / "params.yaml", settings), "main")


def test_the_model_rules_of_a_run_cover_every_run(tmp_path, capsys, monkeypatch):
    """A rule broken by two runs' overrides is two lines, one per run; the valid runs say nothing."""
    monkeypatch.chdir(ROOT)
    code = main(["train", "--set", "runs.text_only={modalities: [text], variant: no_specific, router: topk, top_k: 5}",
                 "--set", "runs.audio_only={modalities: [audio, audio]}"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "mmolre train: error: params runs.text_only: top_k=5: a mixture has 4 expert(s) with n_experts=4 and "
        "variant=no_specific; choose 1 <= top_k <= 4",
        "params runs.audio_only: modalities=['audio', 'audio']: a non-empty subset of text, audio, video"]


def test_schema_and_dataclasses_name_the_same_keys():
    """The params model section takes keys of the model's config; the demo section is the demo's config."""
    import dataclasses

    from mmolre.datasets.demo import DemoConfig
    from mmolre.model_config import MMoLREConfig
    from mmolre.params import MODEL_SECTIONS, SECTIONS
    from mmolre.runs import ModelParams

    assert set(SECTIONS["demo"].model_fields) == {f.name for f in dataclasses.fields(DemoConfig)}
    assert set(ModelParams.model_fields) <= {f.name for f in dataclasses.fields(MMoLREConfig)}
    assert yaml.safe_load((ROOT / "params.yaml").read_text()).keys() == set(SECTIONS) | set(MODEL_SECTIONS)


def test_values_reach_the_stages_converted_by_the_schema():
    """YAML (and `dvc exp run -S`) write 1e-07 without a dot, which PyYAML reads as a string."""
    from mmolre.params import TrainParams

    params = load_params(ROOT / "params.yaml", ["train.lr=1e-07", "train.epochs=3.0"])
    assert params["train"]["lr"] == "1e-07"
    cfg = build(TrainParams, params, "train")
    assert cfg.lr == 1e-07 and isinstance(cfg.lr, float) and cfg.epochs == 3 and isinstance(cfg.epochs, int)
