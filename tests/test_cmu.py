"""CMU-MOSI / CMU-MOSEI acquisition and preparation against small corpora in the real layouts,
served over HTTP on 127.0.0.1 (the pipeline's mirror setting), or imported from local archives."""

import io
import json
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mmolre import MmolreError
from mmolre.cmu import clean_transcript
from mmolre.download import download
from mmolre.prepare import prepare

from test_fetch import RangeHandler, server  # noqa: F401  (the HTTP server fixture)


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_csd(path, root_name: str, videos: dict) -> None:
    """A computational sequence in the SDK layout: <root>/data/<video>/{features,intervals} + <root>/metadata."""
    with h5py.File(path, "w") as f:
        root = f.create_group(root_name)
        for video, (features, intervals) in videos.items():
            group = root.create_group("data").create_group(video) if "data" not in root else root["data"].create_group(video)
            group["features"] = np.asarray(features, dtype=np.float32)
            group["intervals"] = np.asarray(intervals, dtype=np.float64)
        root.create_group("metadata").attrs["root name"] = root_name


def mosi_files(folder):
    with zipfile.ZipFile(folder / "CMU_MOSI.zip", "w") as z:
        for utterance in ("2iD-tVS8NPw_1", "2iD-tVS8NPw_2", "WKA5OygbEKI_1", "tmZoasNr4rU_1", "Unfolded001_1"):
            z.writestr(f"Raw/Audio/WAV_16000/Segmented/{utterance}.wav", wav_bytes(0.5))
        z.writestr("Raw/Transcript/Segmented/2iD-tVS8NPw.annotprocessed",
                   "1_DELIM_I LOVED THIS MOVIE (laughter)\n2_DELIM_BUT THE END <sil> WAS BAD\n")
        z.writestr("Raw/Transcript/Segmented/WKA5OygbEKI.annotprocessed", "1_DELIM_IT WAS OKAY\n")
        z.writestr("Raw/Transcript/Segmented/tmZoasNr4rU.annotprocessed", "1_DELIM_GREAT\n2_DELIM_NO AUDIO FOR ME\n")
        z.writestr("Raw/Transcript/Segmented/Unfolded001.annotprocessed", "1_DELIM_NOT IN ANY FOLD\n")
        z.writestr("Raw/Video/Segmented/2iD-tVS8NPw_1.mp4", b"video we never unpack")
    write_csd(folder / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels", {
        "2iD-tVS8NPw": ([[-1.5], [2.4]], [[10.0, 12.5], [2.0, 4.0]]),  # time order: the 2.4 segment is clip 1
        "WKA5OygbEKI": ([[0.0]], [[1.0, 3.0]]),
        "tmZoasNr4rU": ([[1.2], [-0.6]], [[0.5, 1.5], [2.0, 3.0]]),  # clip 2 has no audio file
        "Unfolded001": ([[1.0]], [[0.0, 1.0]]),
    })


def mosei_files(folder):
    with zipfile.ZipFile(folder / "CMU_MOSEI.zip", "w") as z:
        for video in ("_26JmJnPKfM", "abc-def", "zz9"):
            z.writestr(f"Raw/Audio/Full/WAV_16000/{video}.wav", wav_bytes(10.0))
        z.writestr("Raw/Transcript/Segmented/Combined/_26JmJnPKfM.txt",
                   "_26JmJnPKfM___0___1.0___3.0___hello (umm) there\n_26JmJnPKfM___1___3.5___5.0___second one\n")
        z.writestr("Raw/Transcript/Segmented/Combined/abc-def.txt", "abc-def___0___0.0___2.0___a valid clip\n")
        z.writestr("Raw/Transcript/Segmented/Combined/zz9.txt", "zz9___3___4.0___6.0___[noise] test clip\n")
    labels = lambda *rows: np.array(rows, dtype=np.float32)
    write_csd(folder / "CMU_MOSEI_Labels.csd", "All Labels", {
        "_26JmJnPKfM": (labels([1.0, 2.0, 0, 0, 0.33, 0, 0], [-2.0, 0, 1.5, 0.5, 0, 0, 0], [0.5, 0, 0, 0, 0, 0, 0]),
                        [[1.02, 2.98], [3.5, 5.0], [8.0, 9.0]]),  # rounding off by .02; the last has no text
        "abc-def": (labels([0.0, 0, 0, 0, 0, 0, 1.0]), [[0.0, 2.0]]),
        "zz9": (labels([-0.3, 0, 0.67, 0, 0, 0, 0]), [[4.0, 6.0]]),
    })
    (folder / "cmu_mosei_std_folds.py").write_text(
        "standard_train_fold=['_26JmJnPKfM']\nstandard_valid_fold=['abc-def']\nstandard_test_fold=['zz9']\n"
        "print('never executed')\n")


def params_for(dataset, mirror=None):
    return {"data": {"dataset": dataset, "seed": 1, "mirror": mirror}, "prepare": {"on_invalid": "fail"}}


def test_mosei_from_a_mirror_gives_matched_labelled_segments(server, tmp_path, capsys):  # noqa: F811
    served, base = server
    mosei_files(served)
    raw = download(params_for("mosei", base), tmp_path / "raw", tmp_path / "downloads")
    assert (raw / "Raw/Audio/Full/WAV_16000/zz9.wav").is_file()
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert set(manifest) == {"CMU_MOSEI.zip", "CMU_MOSEI_Labels.csd", "cmu_mosei_std_folds.py"}
    assert manifest["CMU_MOSEI.zip"]["source"] == f"{base}/CMU_MOSEI.zip"
    out = prepare(params_for("mosei"), tmp_path / "raw", tmp_path / "prepared")
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert list(table.index) == ["_26JmJnPKfM_0", "_26JmJnPKfM_1", "abc-def_0", "zz9_3"]
    row = table.loc["_26JmJnPKfM_0"]
    assert (row.split, row.start_s, row.end_s, row.text) == ("train", 1.0, 3.0, "hello there")
    assert row.audio_path == "mosei/Raw/Audio/Full/WAV_16000/_26JmJnPKfM.wav"
    assert [row.sentiment, row.happy, row.sad, row.anger, row.surprise] == pytest.approx([1.0, 2.0, 0, 0, 0.33])
    assert table.loc["_26JmJnPKfM_1"].sad == pytest.approx(1.5) and table.loc["abc-def_0"].fear == 1.0
    assert table.loc["zz9_3"].split == "test" and table.loc["zz9_3"].text == "test clip"
    printed = capsys.readouterr().out
    assert "mosei: train/valid/test = 2/1/1 (the field's aligned benchmark: 16326/1871/4659)" in printed
    assert "no transcript segment within tolerance: 1 (e.g. _26JmJnPKfM[8.00-9.00])" in printed
    assert (out / "counts.txt").read_text().startswith("mosei: train/valid/test = 2/1/1")


def test_mosi_from_archives_follows_time_order_folds_and_reports_what_is_missing(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    mosi_files(mine)
    download(params_for("mosi"), tmp_path / "raw", tmp_path / "downloads",
             [mine / "CMU_MOSI.zip", mine / "CMU_MOSI_Opinion_Labels.csd"])
    assert not (tmp_path / "raw/mosi/Raw/Video").exists()  # only audio and transcripts are unpacked
    out = prepare(params_for("mosi"), tmp_path / "raw", tmp_path / "prepared")
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert list(table.index) == ["2iD-tVS8NPw_1", "2iD-tVS8NPw_2", "WKA5OygbEKI_1", "tmZoasNr4rU_1"]
    assert table.loc["2iD-tVS8NPw_1"].sentiment == pytest.approx(2.4)  # the earlier interval is clip 1
    assert table.loc["2iD-tVS8NPw_1"].text == "I LOVED THIS MOVIE"
    assert table.loc["2iD-tVS8NPw_2"].text == "BUT THE END WAS BAD"
    assert table.split.tolist() == ["train", "train", "valid", "test"]
    assert table.end_s.tolist() == pytest.approx([0.5] * 4) and table.happy.isna().all()
    printed = capsys.readouterr().out
    assert "no audio file: 1 (e.g. tmZoasNr4rU_2)" in printed and "not in the standard folds: 1" in printed


def test_cmu_joint_setting_end_to_end(server, tmp_path, tiny_params):  # noqa: F811
    """Both corpora tagged by dataset; one model trained on both; metrics per corpus."""
    from mmolre.evaluate import evaluate
    from mmolre.featurize import featurize
    from mmolre.train import train

    served, base = server
    mosi_files(served)
    mosei_files(served)
    download(params_for("cmu", base), tmp_path / "raw", tmp_path / "downloads")
    table = pd.read_parquet(prepare(params_for("cmu"), tmp_path / "raw", tmp_path / "prepared") / "utterances.parquet")
    assert table.groupby("dataset").size().to_dict() == {"mosi": 4, "mosei": 4}
    assert table[table.dataset == "mosi"].audio_path.str.startswith("cmu/mosi/Raw/").all()
    assert table[table.dataset == "mosei"].happy.notna().all() and table[table.dataset == "mosi"].happy.isna().all()

    params = {**tiny_params, "data": {**tiny_params["data"], "dataset": "cmu"},
              "train": {**tiny_params["train"], "epochs": 1}, "runs": {"main": {"modalities": ["text", "audio"]}}}
    featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "curves")
    metrics = evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")["main"]
    assert set(metrics) == {"mosi", "mosei"}
    assert set(metrics["mosi"]) == {"msa"} and set(metrics["mosei"]) == {"msa", "mer"}


def test_cut_download_resumes_and_corruption_is_caught(server, tmp_path):  # noqa: F811
    served, base = server
    mosei_files(served)
    zip_bytes = (served / "CMU_MOSEI.zip").read_bytes()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "CMU_MOSEI.zip.part").write_bytes(zip_bytes[: len(zip_bytes) // 2])
    download(params_for("mosei", base), tmp_path / "raw", downloads)
    assert f"bytes={len(zip_bytes) // 2}-" in RangeHandler.requests
    assert (downloads / "CMU_MOSEI.zip").read_bytes() == zip_bytes

    with h5py.File(downloads / "CMU_MOSEI_Labels.csd", "a") as f:  # tampered after the first success
        f["All Labels/data/zz9/features"][0, 0] = 3.0
    with pytest.raises(MmolreError, match="CMU_MOSEI_Labels.csd: SHA-256 .* does not match"):
        download(params_for("mosei", base), tmp_path / "raw", downloads)
    assert not (downloads / "CMU_MOSEI_Labels.csd").exists()  # moved aside: never taken as complete
    download(params_for("mosei", base), tmp_path / "raw", downloads)  # fetched again, verifies again


def test_unsafe_archive_is_refused(server, tmp_path):  # noqa: F811
    served, base = server
    mosei_files(served)
    with zipfile.ZipFile(served / "CMU_MOSEI.zip", "a") as z:
        z.writestr("Raw/Audio/Full/WAV_16000/../../../../escape.wav", b"x")
    with pytest.raises(MmolreError, match="refusing member"):
        download(params_for("mosei", base), tmp_path / "raw", tmp_path / "downloads")
    assert not (tmp_path / "raw" / "mosei").exists() and not list(tmp_path.rglob("escape.wav"))


def test_wrong_archive_name_and_markup_cleaning(tmp_path):
    (tmp_path / "mosi.zip").write_bytes(b"x")
    with pytest.raises(MmolreError, match="needs files named"):
        download(params_for("mosi"), tmp_path / "raw", tmp_path / "downloads", [tmp_path / "mosi.zip"])
    assert clean_transcript("  so (umm) I [noise] liked <sil> it {laugh}  ") == "so I liked it"
