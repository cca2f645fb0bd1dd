"""Processed feature files (MMSA's and MulT's pickles): read without running anything, every utterance's own
frames, labels and split checked against the arrays, the refusals, MOSEI's emotions, a trimodal run on them."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from mmolre import EMOTIONS, MmolreError
from mmolre.cli import main
from mmolre.datasets import processed
from mmolre.datasets.pickles import RefusedPickle, safe_load
from mmolre.download import download
from mmolre.features import FeatureFile
from mmolre.fetch import sha256
from mmolre.featurize import featurize
from mmolre.evaluate import evaluate
from mmolre.prepare import prepare
from mmolre.report import render
from mmolre.train import train

from conftest import ROOT
from processed_forms import SPLIT_VIDEOS, mmsa_file, mult_file, write
from test_cmu import write_csd


def params_for(tiny_params, dataset: str, path, **data) -> dict:
    params = {**tiny_params, "data": {**tiny_params["data"], "dataset": dataset, "processed": str(path), **data},
              "featurize": {**tiny_params["featurize"], "on_invalid": "fail"}}
    return params


def imported(tmp_path, params) -> dict:
    """download + prepare + featurize of a processed file: the roots, the table and the feature file."""
    roots = {k: tmp_path / k for k in ("raw", "prepared", "features", "downloads")}
    download(params, roots["raw"], roots["downloads"])
    prepare(params, roots["raw"], roots["prepared"])
    h5 = featurize(params, roots["prepared"], roots["raw"], roots["features"])
    dataset = params["data"]["dataset"]
    return {**roots, "h5": FeatureFile(h5), "table": pd.read_parquet(roots["prepared"] / dataset / "utterances.parquet"),
            "counts": (roots["prepared"] / dataset / "counts.txt").read_text()}


def assert_frames(features: FeatureFile, expected: dict) -> None:
    """Every utterance's split and frames (stored as float16) are exactly those of the arrays."""
    index = {u: i for i, u in enumerate(features.utterance_id)}
    assert len(index) == sum(len(rows) for rows in expected.values())
    for split, rows in expected.items():
        for utterance, frames in rows.items():
            i = index[utterance]
            assert features.split[i] == split
            for m, want in frames.items():
                got = features.get(m, i)
                assert got.shape == want.shape, (utterance, m)
                np.testing.assert_array_equal(got, want.astype(np.float16), err_msg=f"{utterance} {m}")


def glove_fet_file() -> tuple[dict, dict]:
    """MMSA-FET's output with GloVe text: no text_bert, the text zero-padded at the end (its steps end at the last
    non-zero one)."""
    data, expected = mmsa_file("mosi", fet=True)
    for split, rows in expected.items():
        steps = data[split].pop("text_bert")[:, 1, :].sum(1).astype(int)
        for k, n in enumerate(steps):
            data[split]["text"][k, n:] = 0.0
    return data, expected


CASES = {  # name -> (dataset, builder, protocol)
    "mmsa mosi unaligned, arrays, protocol 4": ("mosi", lambda: mmsa_file("mosi"), 4),
    "mmsa mosei unaligned, lists, protocol 2": ("mosei", lambda: mmsa_file("mosei", lists=True), 2),
    "mmsa mosi aligned, protocol 5": ("mosi", lambda: mmsa_file("mosi", aligned=True), 5),
    "mmsa-fet float64 with config, protocol 5": ("mosi", lambda: mmsa_file("mosi", fet=True), 5),
    "mmsa-fet glove text without text_bert": ("mosi", glove_fet_file, 4),
    "mult mosei, protocol 5": ("mosei", lambda: mult_file("mosei"), 5),
    "mult mosi, bytes ids, protocol 2": ("mosi", lambda: mult_file("mosi"), 2),
}


@pytest.mark.parametrize("case", CASES)
def test_each_utterance_gets_exactly_its_own_frames_split_and_label(case, tmp_path, tiny_params):
    dataset, build, protocol = CASES[case]
    data, expected = build()
    path = write(tmp_path / "some_name.pkl", data, protocol)
    out = imported(tmp_path, params_for(tiny_params, dataset, path))
    assert_frames(out["h5"], expected)
    table = out["table"].set_index("utterance_id")
    key = "regression_labels" if case.startswith("mmsa") else "labels"
    for split in SPLIT_VIDEOS:
        ids = list(expected[split])
        np.testing.assert_allclose(table.loc[ids, "sentiment"], np.asarray(data[split][key], float).reshape(len(ids)))
        assert set(table.loc[ids, "video_id"]) == set(SPLIT_VIDEOS[split])
    assert out["h5"].attrs["text_encoder"] == ("glove-840b-300d" if case.startswith("mult") else "mmsa-bert-base-uncased")
    assert out["h5"].attrs["audio_encoder"] == "covarep" and out["h5"].attrs["video_encoder"] == "facet"
    assert "-inf set to 0 (as the reference loaders do): text 0, audio " in out["counts"]
    assert "unknown copy" in out["counts"]
    if case.startswith("mmsa"):
        assert table.loc["-3g5yACwYnA_1", "text"] == data["train"]["raw_text"][0].strip()


def test_sims_keeps_its_unimodal_labels_and_zero_padded_clip_ids(tmp_path, tiny_params):
    data, expected = mmsa_file("sims")
    out = imported(tmp_path, params_for(tiny_params, "sims", write(tmp_path / "unaligned_39.pkl", data)))
    assert_frames(out["h5"], expected)
    table = out["table"].set_index("utterance_id")
    ids = list(expected["train"])
    assert ids[0] == "-3g5yACwYnA_0001"
    for m in "TAV":
        np.testing.assert_allclose(table.loc[ids, f"label_{m}"], data["train"][f"regression_labels_{m}"])
    assert out["h5"].attrs["text_encoder"] == "mmsa-bert-base-chinese"


def test_mult_iemocap_reads_its_four_classes_without_ids(tmp_path, tiny_params):
    data, expected = mult_file("iemocap")
    out = imported(tmp_path, params_for(tiny_params, "iemocap", write(tmp_path / "iemocap_data.pkl", data)))
    table, features = out["table"], out["h5"]
    assert features.label_space == "iemocap4"
    for split, rows in expected.items():
        ids = [f"{split}_{k:06d}" for k in rows]
        want = [processed.MULT_IEMOCAP[int(np.argmax(data[split]["labels"][k, :, 1]))] for k in rows]
        assert table.set_index("utterance_id").loc[ids, "emotion"].tolist() == want
    assert_frames(features, {split: {f"{split}_{k:06d}": f for k, f in rows.items()} for split, rows in expected.items()})
    assert "ids are absent or repeated" in out["counts"]
    assert "MulT's IEMOCAP (MulT#6): 2717/789/938" in out["counts"]


def test_a_known_release_is_verified_in_the_manifest_counts_and_report(tmp_path, tiny_params, monkeypatch):
    data, _ = mmsa_file("mosi")
    path = write(tmp_path / "aligned.pkl", data)
    monkeypatch.setitem(processed.KNOWN_RELEASES, sha256(path), ("mosi", "MMSA MOSI/Processed/unaligned_50.pkl"))
    out = imported(tmp_path, params_for(tiny_params, "mosi", path))
    verified = "verified MMSA MOSI/Processed/unaligned_50.pkl"
    manifest = json.loads((out["raw"] / "mosi" / "MANIFEST.json").read_text())
    assert manifest["aligned.pkl"]["release"] == verified and manifest["aligned.pkl"]["sha256"] == sha256(path)
    assert verified in out["counts"]
    assert json.loads(out["h5"].attrs["processed"])["release"] == verified
    with pytest.raises(MmolreError, match="a mosi file: set data.dataset=mosi, not mosei"):
        download(params_for(tiny_params, "mosei", path), tmp_path / "raw2", tmp_path / "downloads")
    assert not (tmp_path / "raw2").exists()


def python2_spelling(blob: bytes) -> bytes:
    """A protocol-2 pickle as numpy 1 wrote it: `numpy.core` for numpy 2's `numpy._core` (GLOBAL lines)."""
    return blob.replace(b"cnumpy._core.", b"cnumpy.core.")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_restricted_unpickler_reads_what_pickle_reads(tmp_path, protocol):
    data = {"train": {"x": np.arange(12, dtype=np.float64).reshape(2, 3, 2), "id": ["a$_$1", "b$_$2"],
                      "lengths": [np.int64(3), 2], "s": np.array(["u", "v"]), "o": np.array(["w", None], dtype=object),
                      "t": (1.5, b"bytes")}}
    blob = pickle.dumps(data, protocol=protocol)
    blob = python2_spelling(blob) if protocol == 2 else blob
    if protocol == 2:
        assert b"cnumpy.core.multiarray\n_reconstruct" in blob
    (tmp_path / "f.pkl").write_bytes(blob)
    got = safe_load(tmp_path / "f.pkl")["train"]
    np.testing.assert_array_equal(got["x"], data["train"]["x"])
    assert got["id"] == data["train"]["id"] and got["lengths"] == [3, 2] and got["t"] == (1.5, b"bytes")
    assert got["s"].tolist() == ["u", "v"] and got["o"].tolist() == ["w", None]


class CreatesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def refused_download(tmp_path, tiny_params, capsys, obj, monkeypatch) -> str:
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4) if not isinstance(obj, bytes) else obj)
    monkeypatch.chdir(ROOT)
    code = main(["download", "--set", "data.dataset=mosi", "--from-processed", str(path),
                 "--raw-root", str(tmp_path / "raw"), "--downloads", str(tmp_path / "downloads")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "raw").exists(), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_pickle_that_would_create_a_file_is_refused_and_nothing_runs(tmp_path, tiny_params, capsys, monkeypatch):
    marker = tmp_path / "created_by_the_pickle"
    data, _ = mmsa_file("mosi")
    data["train"]["raw_text"] = CreatesAFile(marker)
    err = refused_download(tmp_path, tiny_params, capsys, data, monkeypatch)
    assert "refused: the pickle calls io.open" in err and "nothing was run" in err
    assert not marker.exists()
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(type("X", (), {"__reduce__": lambda s: (os.system, ("true",))})()))
    with pytest.raises(RefusedPickle, match="the pickle calls posix.system"):  # os.system, for the record
        safe_load(tmp_path / "s.pkl")


def test_torch_tensors_are_refused_with_what_to_do(tmp_path, tiny_params, capsys, monkeypatch):
    import torch

    data, _ = mmsa_file("mosi")
    data["train"]["audio"] = torch.from_numpy(data["train"]["audio"])
    err = refused_download(tmp_path, tiny_params, capsys, data, monkeypatch)
    assert "torch._utils._rebuild_tensor_v2" in err and "re-save it with numpy arrays" in err
    torch.save({"train": {}}, tmp_path / "saved.pt")
    err = refused_download(tmp_path, tiny_params, capsys, (tmp_path / "saved.pt").read_bytes(), monkeypatch)
    assert "a zip archive (torch.save's format)" in err


def test_a_pickle_in_neither_form_is_one_line_naming_what_was_found(tmp_path, tiny_params, capsys, monkeypatch):
    mag = {"train": [(([b"w"], np.zeros((2, 47)), np.zeros((2, 74))), 1.0, "s")], "dev": [], "test": []}
    err = refused_download(tmp_path, tiny_params, capsys, mag, monkeypatch)
    assert "neither MMSA's processed form" in err and "top-level keys ['dev', 'test', 'train']" in err
    assert "train is a list (MAG-BERT's form?)" in err


def test_a_files_own_split_that_crosses_videos_is_reported_and_runs_to_a_report(tmp_path, tiny_params, capsys):
    """MMSA's split keys are the standard split: a video in two of them is said (download, prepare, counts.txt,
    MANIFEST.json, the report), not refused; everything after runs."""
    data, _ = mmsa_file("mosi")  # the test clips cut from a train video (a clip-level split, as CH-SIMS's may be)
    data["test"]["id"] = np.array(["03bSnISJMiM$_$7", "03bSnISJMiM$_$8"])
    params = {**params_for(tiny_params, "mosi", write(tmp_path / "mosi.pkl", data)),
              "runs": {"main": {"modalities": ["text", "audio"]}}, "evaluate": {**tiny_params["evaluate"],
                                                                                 "robustness": False}}
    out = imported(tmp_path, params)
    said = capsys.readouterr().out
    assert ("download: mosi.pkl: warning: this release's split is not video-independent: 1 video(s) span "
            "train/valid/test (03bSnISJMiM); results on it are not speaker-independent") in said
    assert "prepare: warning: this release's split is not video-independent: 1 video(s) span" in said
    assert ("split overlap: this release's split is not video-independent: 1 video(s) span train/valid/test; "
            "results on it are not speaker-independent\n  03bSnISJMiM: test, train\n") in out["counts"]
    manifest = json.loads((out["raw"] / "mosi" / "MANIFEST.json").read_text())["mosi.pkl"]
    assert manifest["split"] == {"video_independent": False, "videos_in_several_splits": 1, "first": ["03bSnISJMiM"]}
    assert set(out["table"].split[out["table"].video_id == "03bSnISJMiM"]) == {"train", "test"}
    train(params, "main", out["features"], tmp_path / "models", tmp_path / "reports" / "train")
    evaluate(params, out["features"], tmp_path / "models", tmp_path / "reports")
    text = render(params, tmp_path / "reports", prepared=out["prepared"])
    assert ("**This release's split is not video-independent:** 1 video(s) span train/valid/test; results on it "
            "are not speaker-independent.") in text


def test_a_files_split_that_keeps_each_video_in_one_split_says_nothing(tmp_path, tiny_params, capsys):
    out = imported(tmp_path, params_for(tiny_params, "mosi", write(tmp_path / "mosi.pkl", mmsa_file("mosi")[0])))
    assert "video-independent" not in capsys.readouterr().out and "split overlap" not in out["counts"]
    manifest = json.loads((out["raw"] / "mosi" / "MANIFEST.json").read_text())["mosi.pkl"]
    assert manifest["split"]["video_independent"] is True


def test_lengths_beyond_the_stored_steps_are_refused_naming_the_row(tmp_path, tiny_params, capsys, monkeypatch):
    data, _ = mmsa_file("mosi")
    data["valid"]["vision_lengths"][1] = 11
    err = refused_download(tmp_path, tiny_params, capsys, data, monkeypatch)
    assert "valid/vision_lengths[1] = 11 is not a length within the 10 steps stored" in err


def test_nan_frames_fail_featurize_naming_the_utterance_or_are_quarantined(tmp_path, tiny_params):
    data, _ = mmsa_file("mosi")
    data["train"]["vision"][2, 0, 3] = np.nan  # inside -3g5yACwYnA... no: the second video's first clip
    bad = data["train"]["id"][2].replace("$_$", "_")
    path = write(tmp_path / "f.pkl", data)
    with pytest.raises(MmolreError, match=f"utterance '{bad}' \\(video\\): 1 non-finite"):
        imported(tmp_path / "a", params_for(tiny_params, "mosi", path))
    params = params_for(tiny_params, "mosi", path)
    params["featurize"]["on_invalid"] = "quarantine"
    out = imported(tmp_path / "b", params)
    assert bad not in set(out["h5"].utterance_id) and len(out["h5"]) == 9
    assert bad in (out["features"] / "mosi" / "processed.rejected.csv").read_text()


def csd_rows(data: dict) -> dict:
    """A label sequence whose rows sit at MulT's intervals, in another order, emotions unique per row."""
    rows = {}
    for split in SPLIT_VIDEOS:
        for k, (video, start, end) in enumerate(data[split]["id"]):
            features = [0.0, *(np.arange(6) / 10 + 0.3 * k + 0.01 * len(rows))]
            rows.setdefault(video, []).insert(0, (features, [float(start), float(end)]))
    return {v: ([f for f, _ in r], [i for _, i in r]) for v, r in rows.items()}


def test_mosei_emotions_for_mults_ids_by_interval(tmp_path, tiny_params):
    data, _ = mult_file("mosei")
    rows = csd_rows(data)
    missing = "c5xsKMxpXnc"
    del rows[missing]  # a video without label rows: its clips are named with the reason
    write_csd(tmp_path / "CMU_MOSEI_Labels.csd", "All Labels", rows)
    params = params_for(tiny_params, "mosei", write(tmp_path / "mosei_senti_data.pkl", data),
                        archives=[str(tmp_path / "CMU_MOSEI_Labels.csd")])
    out = imported(tmp_path, params)
    table = out["table"].set_index("utterance_id")
    for video, (features, intervals) in rows.items():
        for f, (s, e) in zip(features, intervals):
            np.testing.assert_allclose(table.loc[f"{video}_{s:.3f}_{e:.3f}", list(EMOTIONS)], f[1:], rtol=1e-6)
    assert table.loc[table.video_id == missing, list(EMOTIONS)].isna().all().all()
    assert "8 of 10 clips matched to their own row (by interval: 8)" in out["counts"]
    assert f"{missing}_0.000_4.500: no label row: its video is not in the label sequence" in out["counts"]


def test_mosei_emotions_for_mmsas_ids_by_text_against_the_word_timings(tmp_path, tiny_params):
    import h5py

    data, _ = mmsa_file("mosei")
    rows, words = {}, {}
    for split in SPLIT_VIDEOS:
        for k, (i, text) in enumerate(zip(data[split]["id"], data[split]["raw_text"])):
            video = i.split("$_$")[0]
            start = 10.0 * len(rows.get(video, ([], []))[0])
            rows.setdefault(video, ([], []))[0].append([0.0, *(np.arange(6) / 10 + 0.3 * k)])
            rows[video][1].append([start, start + 3])
            said = text.split()
            words.setdefault(video, []).extend((w, start + j * 0.5, start + j * 0.5 + 0.4) for j, w in enumerate(said))
    write_csd(tmp_path / "CMU_MOSEI_Labels.csd", "All Labels", rows)
    with h5py.File(tmp_path / "CMU_MOSEI_TimestampedWords.csd", "w") as f:
        for video, said in words.items():
            group = f.require_group("words/data").create_group(video)
            group["features"] = np.array([[w.encode()] for w, _, _ in said], dtype="S32")
            group["intervals"] = np.array([[s, e] for _, s, e in said])
    params = params_for(tiny_params, "mosei", write(tmp_path / "unaligned_50.pkl", data),
                        archives=[str(tmp_path / n) for n in ("CMU_MOSEI_Labels.csd", "CMU_MOSEI_TimestampedWords.csd")])
    out = imported(tmp_path, params)
    table = out["table"].set_index("utterance_id")
    for video, (features, _) in rows.items():
        clips = [i for s in SPLIT_VIDEOS for i in data[s]["id"] if i.startswith(f"{video}$_$")]
        for clip, f in zip(clips, features):
            np.testing.assert_allclose(table.loc[clip.replace("$_$", "_"), list(EMOTIONS)], f[1:], rtol=1e-6)
    assert "10 of 10 clips matched to their own row (by word timings: 10)" in out["counts"]


def test_mosei_from_mmsa_without_word_timings_says_how_to_get_emotions(tmp_path, tiny_params):
    data, _ = mmsa_file("mosei")
    write_csd(tmp_path / "CMU_MOSEI_Labels.csd", "All Labels", {"03bSnISJMiM": ([[0.0] * 7], [[0.0, 1.0]])})
    params = params_for(tiny_params, "mosei", write(tmp_path / "f.pkl", data),
                        archives=[str(tmp_path / "CMU_MOSEI_Labels.csd")])
    out = imported(tmp_path, params)
    assert "no emotions: MMSA's ids carry no times; give CMU_MOSEI_TimestampedWords.csd" in out["counts"]
    assert out["table"][list(EMOTIONS)].isna().all().all()


@pytest.mark.slow
def test_the_cli_stages_after_from_processed_train_a_trimodal_run_and_predict_refuses_new_recordings(
        tmp_path, tiny_params, capsys, monkeypatch):
    """As a user types it: download --from-processed, then prepare, featurize and train with only the dataset set."""
    import soundfile as sf
    import yaml

    data, expected = mmsa_file("mosi")
    pkl = write(tmp_path / "f.pkl", data, 5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    dataset = ["--set", "data.dataset=mosi"]
    assert main(["download", *dataset, "--from-processed", str(pkl)]) == 0
    for stage in (["prepare"], ["featurize"], ["train", "trimodal"]):
        assert main([*stage, *dataset]) == 0, capsys.readouterr().err
    assert_frames(FeatureFile(tmp_path / "data/features/mosi/processed.h5"), expected)
    config = json.loads((tmp_path / "models/trimodal/config.json").read_text())
    assert config["model"]["dims"] == {"text": 768, "audio": 5, "video": 20}
    assert config["model"]["modalities"] == ["text", "audio", "video"]
    assert config["features"]["video_encoder"] == "facet" and json.loads(config["features"]["processed"])["form"] == "mmsa"
    sf.write(tmp_path / "x.wav", np.zeros(16000, np.float32), 16000)
    capsys.readouterr()
    code = main(["predict", "--model", "models/trimodal", "--audio", "x.wav", "--text", "hello"])
    err = capsys.readouterr().err
    assert code == 2 and "trained on the features of a processed file (MMSA processed, unaligned" in err
    assert "they cannot be computed from a new recording" in err and len(err.strip().splitlines()) == 1


def test_the_report_sets_the_runs_beside_mmsas_table_only_on_mmsas_features(tiny_params):
    from mmolre.report import standard_section

    msa = {"acc2_has0": 80.0, "f1_has0": 79.5, "acc2_non0": 81.0, "f1_non0": 80.5, "acc7": 35.0, "acc5": 40.0,
           "mae": 0.9, "corr": 0.7, "mae_std": 0.01}
    three = ["text", "audio", "video"]
    tiny_params = {**tiny_params, "runs": {**tiny_params["runs"], "tfn": {"arch": "tfn", "modalities": three},
                                           "lmf64": {"arch": "lmf", "modalities": three, "field_settings": {"batch_size": 16}},
                                           "fusion_tfn": {"arch": "fusion_tfn", "modalities": three}}}
    runs = {run: {"mosi": {"msa": msa}} for run in ("main", "text_only", "tfn", "lmf64", "fusion_tfn")}
    source = {"form": "mmsa", "file": "unaligned_50.pkl", "description": "MMSA processed, unaligned",
              "release": "verified MMSA MOSI/Processed/unaligned_50.pkl"}
    lines = standard_section(runs, tiny_params, {"dataset": "mosi", "processed": json.dumps(source)})
    text = "\n".join(lines)
    assert lines[2].startswith("MMSA trains each model from seeds 1111, 1112, 1113, 1114, 1115 and publishes their mean")
    assert "one run per model" not in text and "results/result-stat.md at commit a94e65d" in text
    beside, _, variants = text.partition("## Fusion-only variants (mosi)")
    assert "## Beside MMSA's table (mosi, MMSA's processed features)" in beside
    assert "| **main** (mmolre, text+audio; 1 seed) | unaligned_50.pkl | 80.0 | 81.0 | 79.5 | 80.5 | 35.0 | 40.0 | 0.900 ± 0.010 | 0.700 |" in beside
    assert "| **tfn** (tfn, text+audio+video; 1 seed) | unaligned_50.pkl |" in beside
    # MMSA's rows of the models run at MMSA's presets only: TFN; LMF is run with another batch size
    assert "| MMSA tfn | unaligned_50.pkl | 78.0 | 79.1 | 78.0 | 79.1 | 34.5 | 39.4 | 0.947 | 0.673 |" in beside
    assert "MMSA cenet" not in text and "MMSA lmf" not in text and "fusion_tfn" not in beside.split("| model |")[1]
    assert "| **fusion_tfn** (fusion_tfn, text+audio+video; 1 seed) | unaligned_50.pkl |" in variants
    assert "View: each utterance's own frames." in beside
    assert standard_section(runs, tiny_params, {"dataset": "mosi", "processed": json.dumps({**source, "form": "mult"})}) == []
    assert standard_section(runs, tiny_params, {"dataset": "demo"}) == []


def test_a_run_that_is_mmsas_model_on_the_same_file_is_placed_against_its_seeds(tiny_params, monkeypatch):
    from mmolre import report as report_module

    msa = {"mae": 0.91, "mae_std": 0.01, "mae_ci95": 0.0248, "mae_seeds": [0.90, 0.92, 0.91]}
    spec = type("Spec", (), {"arch": "tfn", "modalities": ("text", "audio", "video")})
    published = report_module.mmsa_published("mosi")
    lines = report_module.placement_lines({"tfn": {"mosi": {"msa": msa}}}, {"tfn": spec}, published, "mosi",
                                          "unaligned_50.pkl")
    # MMSA's TFN MAE 0.9473 against our mean 0.91 and std 0.01: (0.9473 - 0.91) / 0.01 = 3.7 stds above
    assert "| tfn | MAE | 0.947 | 0.910 ± 0.010 | 3.7 of our stds above our mean |" in "\n".join(lines)
    assert report_module.placement_lines({"tfn": {"mosi": {"msa": msa}}}, {"tfn": spec}, published, "mosi",
                                         "aligned_50.pkl")[0].startswith("No run here")


def test_make_standard_runs_both_corpora_in_both_views_with_the_fields_models_and_the_variants_over_five_seeds():
    import subprocess

    out = subprocess.run(["make", "-n", "standard", "PROCESSED=/data/MMSA", "JOBS=2"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "MAKEFLAGS": ""})
    text = out.stdout.replace("\\\n", "")
    assert "for corpus in mosi mosei; do for view in own loader; do" in text, out.stdout + out.stderr
    [command] = [line for line in text.splitlines() if "dvc exp run --queue" in line]
    assert "-n standard-$corpus-$view -S data.dataset=$corpus -S data.processed_view=$view" in command
    assert "-S data.processed=/data/MMSA/$(echo $corpus | tr a-z A-Z)/Processed/unaligned_50.pkl" in command
    seeds = "modalities:[text,audio,video],seeds:[1111,1112,1113,1114,1115]"
    for arch in ("lf_dnn", "tfn", "lmf", "mult", "misa", "late_fusion", "fusion_tfn", "fusion_lmf", "fusion_mult",
                 "fusion_misa"):
        assert f"'+runs.{arch}={{arch:{arch},{seeds}}}'" in command
    assert f"'runs.main={{{seeds}}}'" in command
    assert any(line.startswith("HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 dvc queue start --jobs 2")
               for line in text.splitlines())


def test_a_dataset_without_processed_files_is_refused_before_the_file_is_read(tmp_path, tiny_params, monkeypatch):
    def never(path):
        raise AssertionError("the pickle was read")

    monkeypatch.setattr(processed, "safe_load", never)
    path = write(tmp_path / "f.pkl", mmsa_file("mosi")[0])
    with pytest.raises(MmolreError, match="read for iemocap, mosei, mosi, sims, sims2, not data.dataset=meld"):
        download(params_for(tiny_params, "meld", path), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw").exists()
