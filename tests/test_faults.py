"""Fault injection: each fault from a clean state, asserting a clear one-line error (exit 2, no
traceback) or a correct resume, and that nothing half-written is left under an output's name.
(The project path with spaces and two `dvc repro` at once are in test_pipeline.py, whose
repository lives under a folder whose name has a space.)"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from mmolre.cli import main

from conftest import ROOT


@pytest.fixture()
def project(tiny_demo, tmp_path):
    """A copy of the tiny demo's raw, prepared and feature folders with its params file; `args(stage)`
    gives the CLI arguments that point a stage at them."""
    folders = {name: tmp_path / name for name in ("raw", "prepared", "features")}
    for name, folder in folders.items():
        shutil.copytree(tiny_demo[name], folder)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_demo["params"]))
    h5 = folders["features"] / tiny_demo["h5"].relative_to(tiny_demo["features"])
    roots = {"download": ["--raw-root", folders["raw"]],
             "prepare": ["--raw-root", folders["raw"], "--out-root", folders["prepared"]],
             "featurize": ["--prepared-root", folders["prepared"], "--raw-root", folders["raw"],
                           "--out-root", folders["features"]],
             "train": ["--run", "main", "--features-root", folders["features"], "--models-root", tmp_path / "models",
                       "--curves-root", tmp_path / "curves"],
             "evaluate": ["--features-root", folders["features"], "--models-root", tmp_path / "models",
                          "--reports", tmp_path / "reports"]}
    args = lambda stage, *extra: [stage, "--params", str(params), *map(str, roots.get(stage, [])), *extra]
    return {"root": tmp_path, "h5": h5, "params": params, "args": args, **folders}


def one_line_error(capsys, code: int, stage: str) -> str:
    """The stage failed with exit 2 and one line `mmolre <stage>: error: ...`, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.match(line)]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"mmolre {stage}: error: ") and "Traceback" not in err, err
    return lines[0]


PROGRESS = re.compile(r"^(Loading weights|featurize \S+|train \S+):\s+\d+%")  # tqdm's lines, not messages


def poke(h5: Path, modality: str, utterance: int, value: float) -> str:
    """Write `value` into one frame of one utterance; returns that utterance's id."""
    with h5py.File(h5, "a") as f:
        start = f[modality]["offsets"][utterance]
        f[modality]["values"][start + 1, 3] = value
        return f["meta/utterance_id"].asstr()[utterance]


@pytest.mark.parametrize("modality, value, words, store", [
    ("text", np.nan, "1 non-finite value(s) (NaN/Inf) in frame(s) [1]", "memory"),
    ("audio", np.inf, "1 non-finite value(s) (NaN/Inf) in frame(s) [1]", "memory"),
    ("audio", -np.inf, "1 non-finite value(s) (NaN/Inf) in frame(s) [1]", "lazy"),
    ("text", 2e4, "|value| up to 2e+04 exceeds 10000", "lazy")])
def test_non_finite_features_stop_train_and_validate_naming_the_utterance(project, capsys, modality, value, words,
                                                                         store):
    """train scans the in-memory store's values (where they are) or the file's (lazy): the same verdict."""
    bad = poke(project["h5"], modality, 7, value)
    err = one_line_error(capsys, main(project["args"]("train", "--set", f"train.feature_store={store}")), "train")
    assert f"utterance {bad!r} ({modality}): {words}" in err
    assert not (project["root"] / "models").exists()
    err = one_line_error(capsys, main(["validate", str(project["h5"])]), "validate")
    assert f"utterance {bad!r} ({modality})" in err


def test_validate_prints_the_statistics_of_a_sound_file(project, capsys):
    assert main(["validate", str(project["h5"])]) == 0
    out = capsys.readouterr().out
    with h5py.File(project["h5"]) as f:
        text = f["text/values"][:].astype(np.float64)
        frames = int(f["audio/offsets"][-1])
    assert "36 utterances (train 24, valid 6, test 6)" in out
    assert f"text: 384-d, {len(text)} frames" in out and f"audio: 42-d, {frames} frames" in out
    assert f"values mean {text.mean():.4g}, std {text.std():.4g}, min {text.min():.4g}, max {text.max():.4g}" in out
    assert "OK: every value finite" in out


def test_truncated_feature_file_is_refused(project, capsys):
    data = project["h5"].read_bytes()
    project["h5"].write_bytes(data[: len(data) // 2])
    err = one_line_error(capsys, main(["validate", str(project["h5"])]), "validate")
    assert "not a readable mmolre feature file" in err and "truncated" in err
    one_line_error(capsys, main(project["args"]("train")), "train")


def test_feature_file_with_broken_offsets_or_labels_is_refused(project, capsys):
    with h5py.File(project["h5"], "a") as f:
        f["meta/sentiment"][4] = 7.5
        bad = f["meta/utterance_id"].asstr()[4]
    err = one_line_error(capsys, main(["validate", str(project["h5"])]), "validate")
    assert f"utterance {bad!r} has sentiment [7.5] outside [-3.0, 3.0]" in err
    with h5py.File(project["h5"], "a") as f:
        f["meta/sentiment"][4] = 0.0
        f["audio/offsets"][5] = f["audio/offsets"][3]
    err = one_line_error(capsys, main(["validate", str(project["h5"])]), "validate")
    assert "audio/offsets decrease at utterance" in err


def test_encoder_returning_nan_fails_featurize_or_is_quarantined(project, capsys, monkeypatch):
    from mmolre import encoders

    def nan_for_one(self, waves):
        out = [self.frames(w).numpy() for w in waves]
        for k, w in enumerate(waves):
            if abs(len(w) - target) < 1:
                out[k][0, 0] = np.nan
        return out

    table = pd.read_parquet(project["prepared"] / "demo" / "utterances.parquet")
    bad = table.utterance_id.iloc[5]
    target = len(encoders.load_audio(project["raw"] / table.audio_path.iloc[5], 0, table.end_s.iloc[5], 16000, 20))
    monkeypatch.setattr(encoders.FbankProsodyEncoder, "encode", nan_for_one)
    shutil.rmtree(project["features"])
    err = one_line_error(capsys, main(project["args"]("featurize")), "featurize")
    assert f"utterance {bad!r} (audio): 1 non-finite value(s)" in err and "featurize.on_invalid=quarantine" in err
    assert not list(project["features"].rglob("*.h5"))
    assert main(project["args"]("featurize", "--set", "featurize.on_invalid=quarantine")) == 0
    rejected = pd.read_csv(project["h5"].with_name(project["h5"].stem + ".rejected.csv"))
    assert rejected.utterance_id.tolist() == [bad] and rejected.modality.tolist() == ["audio"]
    assert main(["validate", str(project["h5"])]) == 0
    with h5py.File(project["h5"]) as f:
        ids = f["meta/utterance_id"].asstr()[:].tolist()
        assert f["video/times"].shape[0] == f["video/values"].shape[0] > 0  # its frame times left with it
    assert len(ids) == len(table) - 1 and bad not in ids


def test_silent_and_very_short_audio_give_finite_features(tmp_path):
    import soundfile as sf

    from mmolre.encoders import FbankProsodyEncoder, load_audio
    from mmolre.features import block_problem

    encoder = FbankProsodyEncoder(16000, 4)
    for name, samples in (("silence", np.zeros(16000)), ("short", 0.3 * np.ones(160)), ("one", np.ones(1) * 0.1)):
        sf.write(tmp_path / f"{name}.wav", samples.astype(np.float32), 16000, subtype="PCM_16")
        wave = load_audio(tmp_path / f"{name}.wav", 0.0, 10.0, 16000, 20.0)
        assert len(wave) >= 1600  # padded to 0.1 s
        assert block_problem(encoder.encode([wave])[0], 42) is None, name


@pytest.mark.parametrize("damage, rule", [("truncated", "audio file truncated"),
                                          ("not audio", "audio file missing or unreadable")])
def test_damaged_wav_in_the_raw_data_is_named_by_prepare(project, capsys, damage, rule):
    table = pd.read_csv(project["raw"] / "demo" / "utterances.csv")
    wav = project["raw"] / "demo" / "audio" / f"{table.utterance_id[2]}.wav"
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"this is not audio" * 100)
    shutil.rmtree(project["prepared"])
    code = main(project["args"]("prepare"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"(utterance_id='{table.utterance_id[2]}'): audio_path: {rule}" in err
    assert not project["prepared"].exists()


def test_empty_transcript_and_out_of_range_label_fail_or_are_quarantined(project, capsys):
    table = pd.read_csv(project["raw"] / "demo" / "utterances.csv", keep_default_na=False)
    table.loc[1, "text"] = ""
    table.loc[4, "sentiment"] = 4.5
    table.to_csv(project["raw"] / "demo" / "utterances.csv", index=False)
    shutil.rmtree(project["prepared"])
    code = main(project["args"]("prepare"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "text: must be non-empty" in err and "sentiment: must lie in [-3, 3] (got 4.5)" in err
    assert main(project["args"]("prepare", "--set", "prepare.on_invalid=quarantine")) == 0
    rejected = pd.read_csv(project["prepared"] / "demo" / "rejected.csv")
    assert rejected.utterance_id.tolist() == [table.utterance_id[1], table.utterance_id[4]]


def run_cli(args: list, log: Path) -> subprocess.Popen:
    """The stage in a child process that takes SIGINT as a user's Ctrl-C: a shell that starts the suite in the
    background (`... &`) starts it with SIGINT ignored, and the child would inherit that."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mmolre", *map(str, args)], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, "the process ended before the moment to interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_featurize_killed_mid_run_resumes_to_the_same_bytes(project, sig):
    from mmolre.featurize import featurize

    params = yaml.safe_load(project["params"].read_text())
    params["featurize"]["batch_size"] = 1  # windows of 8 utterances: several chunks to interrupt between
    project["params"].write_text(yaml.safe_dump(params))
    reference = featurize(params, project["prepared"], project["raw"], project["root"] / "reference")
    shutil.rmtree(project["features"])
    process = run_cli(project["args"]("featurize"), project["root"] / "log")
    wait_for(lambda: list(project["features"].rglob("000000.npz")), process)
    process.send_signal(sig)
    code = process.wait(60)
    log = (project["root"] / "log").read_text()
    assert not project["h5"].exists(), log[-2000:]  # nothing under the output's name
    if sig == signal.SIGINT:
        assert code == 130 and "interrupted" in log and "Traceback" not in log
    assert main(project["args"]("featurize")) == 0
    assert project["h5"].read_bytes() == reference.read_bytes()
    assert not list(project["features"].rglob("*.npz"))


@pytest.mark.slow
def test_train_killed_mid_run_leaves_no_model(project):
    params = yaml.safe_load(project["params"].read_text())
    params["train"].update(epochs=500, patience=500)
    project["params"].write_text(yaml.safe_dump(params))
    process = run_cli(project["args"]("train"), project["root"] / "log")
    wait_for(lambda: re.search(r"\b[1-9]\d*/500\b", (project["root"] / "log").read_text()), process)
    process.kill()
    process.wait(60)
    assert not list(project["root"].rglob("model.safetensors*"))


def test_read_only_reports_folder_is_one_line(project, capsys, monkeypatch, tiny_demo):
    assert main(project["args"]("train")) == 0
    capsys.readouterr()
    reports = project["root"] / "reports"
    reports.mkdir()
    if os.geteuid() == 0:  # root writes through a read-only mode: make the OS refuse as it would refuse a user
        import mmolre.files

        def refuse(source, target):
            raise PermissionError(13, "Permission denied", str(target))

        monkeypatch.setattr(mmolre.files.os, "replace", refuse)
    else:
        reports.chmod(0o555)
    params = yaml.safe_load(project["params"].read_text())
    params["runs"] = {"main": params["runs"]["main"]}
    project["params"].write_text(yaml.safe_dump(params))
    err = one_line_error(capsys, main(project["args"]("evaluate")), "evaluate")
    assert "Permission denied" in err and str(reports) in err


def test_malicious_pickle_as_model_is_refused_without_running_it(project, capsys, tmp_path, tiny_demo):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    assert main(project["args"]("train")) == 0
    capsys.readouterr()
    folder = project["root"] / "models" / "main"
    (folder / "model.safetensors").write_bytes(pickle.dumps(Payload()))  # a pickle under the weights' name
    wav = next((project["raw"] / "demo" / "audio").glob("*.wav"))
    err = one_line_error(capsys, main(["predict", "--model", str(folder), "--audio", str(wav), "--text", "hi"]),
                         "predict")
    assert "model.safetensors: not loadable" in err
    pickled = tmp_path / "model.pt"  # an old-style pickled checkpoint given as the model
    pickled.write_bytes(pickle.dumps(Payload()))
    err = one_line_error(capsys, main(["predict", "--model", str(pickled), "--audio", str(wav), "--text", "hi"]),
                         "predict")
    assert "pickled checkpoints are never loaded" in err
    params = yaml.safe_load(project["params"].read_text())
    params["runs"] = {"main": params["runs"]["main"]}
    project["params"].write_text(yaml.safe_dump(params))
    one_line_error(capsys, main(project["args"]("evaluate")), "evaluate")
    assert not marker.exists()


def test_training_stops_at_the_first_non_finite_loss_naming_its_batch(project, capsys, monkeypatch):
    from mmolre.features import FeatureFile
    from mmolre.model import MMoLRE

    forward, calls, seen = MMoLRE.forward, [], {}

    def diverging(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if self.training and len(calls) == 3:  # the third training step
            seen["sentiment"] = kwargs["sentiment"].clone()
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MMoLRE, "forward", diverging)
    err = one_line_error(capsys, main(project["args"]("train")), "train")
    assert "loss is nan at epoch 1, step 3; batch utterances " in err and "nothing was saved" in err
    named = err.split("batch utterances ")[1].split(";")[0].replace(" ...", "").split(", ")
    features = FeatureFile(project["h5"])
    labels = dict(zip(features.utterance_id, features.sentiment))
    assert [labels[u] for u in named] == pytest.approx(seen["sentiment"].tolist()[:8])  # that batch's utterances
    assert not list(project["root"].rglob("model.safetensors*"))
