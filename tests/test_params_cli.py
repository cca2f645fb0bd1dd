"""params.yaml loading, --set overrides, and the CLI's messages."""

import subprocess
import sys
from dataclasses import dataclass

import pytest

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
    assert f"mmolre download: error: http://127.0.0.1:{port}/{first_file} is unreachable" in err
    assert "--from-archive" in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()


def test_missing_input_says_which_stage_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["prepare", "--raw-root", str(tmp_path / "raw"), "--out-root", str(tmp_path / "p")]) == 2
    assert "run `mmolre download` first" in capsys.readouterr().err
