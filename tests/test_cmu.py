"""CMU-MOSI / CMU-MOSEI acquisition and preparation against small corpora in the real layouts,
served over HTTP on 127.0.0.1 (the pipeline's mirror setting), or imported from local archives."""

import hashlib
import io
import json
import zipfile
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mmolre import EMOTIONS, MmolreError
from mmolre.datasets.sdk import clean_transcript, parse_sdk_folds, standard_folds
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


# MOSI in the real layout with the real quirks (docs/cmu-data.md): segment numbers out of time order
# (VbQk4H8hgr0 segment 4 lies between 1 and 2), identical intervals (bOL9jKpeJRs 1/2), a zero-length
# interval (2WGyTLYerpo 2). Every segment's WAV is as long as its interval, its text names its number,
# and its label is unique, so a row joined to the wrong segment shows.
MOSI_SEGMENTS = {  # video -> [(segment, start, end, label)], in segment-number order
    "VbQk4H8hgr0": [(1, 1.0, 2.5, -2.2), (2, 9.0, 10.0, 1.8), (3, 12.0, 15.5, 0.4), (4, 5.0, 6.2, 2.6)],
    "2WGyTLYerpo": [(1, 0.0, 1.1, -1.0), (2, 3.0, 3.0, 0.8)],
    "bOL9jKpeJRs": [(1, 4.0, 6.0, 1.2), (2, 4.0, 6.0, -0.4)],
    "d6hH302o4v8": [(1, 8.0, 9.5, -1.4), (2, 2.0, 3.0, 3.0), (3, 5.0, 5.7, -3.0)],
    "Unfolded001": [(1, 0.0, 1.0, 1.0)],
}
MOSI_ZERO_LENGTH_WAV_S = 0.4  # the zero-length segment's WAV is what the corpus has; it is kept


def mosi_files(folder, with_label_table=True, wav_seconds=None):
    wav_seconds = wav_seconds or {}
    csv_rows, csd = [], {}
    with zipfile.ZipFile(folder / "CMU_MOSI.zip", "w") as z:
        for video, segments in MOSI_SEGMENTS.items():
            lines = []
            for k, start, end, label in segments:
                utterance = f"{video}_{k}"
                seconds = wav_seconds.get(utterance, end - start if end > start else MOSI_ZERO_LENGTH_WAV_S)
                if utterance != "d6hH302o4v8_3":  # no audio file for this one
                    z.writestr(f"Raw/Audio/WAV_16000/Segmented/{utterance}.wav", wav_bytes(seconds))
                lines.append(f"{k}_DELIM_SEGMENT {k} OF {video} (laughter)")
                csv_rows.append(f"{start},{end},{video},{k},{label}")
            z.writestr(f"Raw/Transcript/Segmented/{video}.annotprocessed", "\n".join(lines) + "\n")
            csd[video] = ([[label] for *_, label in segments], [[start, end] for _, start, end, _ in segments])
        if with_label_table:
            z.writestr("Raw/Labels/OpinionLevelSentiment.csv", "\n".join(csv_rows) + "\n")
        z.writestr("Raw/Video/Segmented/VbQk4H8hgr0_1.mp4", b"video we never unpack")
    write_csd(folder / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels", csd)


# MOSEI with real fold ids, rows stored in clip-id string order (10, 13, 2, 3), a segment that starts
# before 0 s, one whose transcript times are off by rounding, one with no transcript, one in no fold.
MOSEI_TRANSCRIPTS = {
    "hh04W3xXa5s": [("2", 1.0, 3.0, "clip two (umm) here"), ("3", 3.5, 5.0, "clip three"),
                    ("10", 6.0, 7.5, "clip ten"), ("13", -0.3, 0.8, "clip thirteen starts early")],
    "188343": [("0", 0.0, 2.0, "a valid clip")],
    "7l3BNtSE0xc": [("3", 4.0, 6.0, "[noise] test clip")],
    "notafold01": [("0", 0.0, 1.0, "in no fold")],
}


def mosei_files(folder):
    with zipfile.ZipFile(folder / "CMU_MOSEI.zip", "w") as z:
        for video in MOSEI_TRANSCRIPTS:
            z.writestr(f"Raw/Audio/Full/WAV_16000/{video}.wav", wav_bytes(10.0))
        for video, clips in MOSEI_TRANSCRIPTS.items():
            z.writestr(f"Raw/Transcript/Segmented/Combined/{video}.txt",
                       "".join(f"{video}___{c}___{s}___{e}___{t}\n" for c, s, e, t in clips))
        z.writestr("Raw/Video/Full/hh04W3xXa5s.mp4", np.random.default_rng(0).bytes(1_000_000))  # never fetched
    labels = lambda *rows: np.array(rows, dtype=np.float32)
    write_csd(folder / "CMU_MOSEI_Labels.csd", "All Labels", {
        # stored in clip-id string order: 10, 13, 2, 3, then a segment with no transcript
        "hh04W3xXa5s": (labels([0.5, 0, 0, 0, 0, 0, 1.0], [-1.0, 0, 0, 2.0, 0, 0, 0],
                               [1.0, 2.0, 0, 0, 0.33, 0, 0], [-2.0, 0, 1.5, 0.5, 0, 0, 0], [0.2, 0, 0, 0, 0, 0, 0]),
                        [[6.0, 7.5], [-0.3, 0.8], [1.02, 2.98], [3.5, 5.0], [8.0, 9.0]]),
        "188343": (labels([0.0, 0, 0, 0, 0, 0, 1.0]), [[0.0, 2.0]]),
        "7l3BNtSE0xc": (labels([-0.3, 0, 0.67, 0, 0, 0, 0]), [[4.0, 6.0]]),
        "notafold01": (labels([1.0, 0, 0, 0, 0, 0, 0]), [[0.0, 1.0]]),
    })


def params_for(dataset, mirror=None, on_invalid="fail"):
    return {"data": {"dataset": dataset, "seed": 1, "mirror": mirror, "mmsa_root": None},
            "prepare": {"on_invalid": on_invalid, "duration_tolerance_s": 0.25}}


def test_mosei_from_a_mirror_matches_unsorted_rows_and_negative_starts(server, tmp_path, capsys):  # noqa: F811
    served, base = server
    mosei_files(served)
    raw = download(params_for("mosei", base), tmp_path / "raw", tmp_path / "downloads")
    assert (raw / "Raw/Audio/Full/WAV_16000/7l3BNtSE0xc.wav").is_file() and not (raw / "Raw/Video").exists()
    manifest = json.loads((raw / "MANIFEST.json").read_text())
    assert set(manifest) == {"CMU_MOSEI.zip", "CMU_MOSEI_Labels.csd"}  # folds ship with mmolre
    assert manifest["CMU_MOSEI.zip"]["source"] == f"{base}/CMU_MOSEI.zip"
    out = prepare(params_for("mosei"), tmp_path / "raw", tmp_path / "prepared")
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert sorted(table.index) == sorted(["hh04W3xXa5s_2", "hh04W3xXa5s_3", "hh04W3xXa5s_10", "hh04W3xXa5s_13",
                                          "188343_0", "7l3BNtSE0xc_3"])
    expected = {"hh04W3xXa5s_10": (6.0, 7.5, "clip ten", [0.5, 0, 0, 0, 0, 0, 1.0]),
                "hh04W3xXa5s_13": (0.0, 0.8, "clip thirteen starts early", [-1.0, 0, 0, 2.0, 0, 0, 0]),
                "hh04W3xXa5s_2": (1.0, 3.0, "clip two here", [1.0, 2.0, 0, 0, 0.33, 0, 0]),
                "hh04W3xXa5s_3": (3.5, 5.0, "clip three", [-2.0, 0, 1.5, 0.5, 0, 0, 0])}
    for utterance, (start, end, text, labels) in expected.items():
        row = table.loc[utterance]
        assert (row.split, row.start_s, row.end_s, row.text) == ("train", start, end, text)
        assert [row.sentiment, *row[list(EMOTIONS)]] == pytest.approx(labels)
    assert table.loc["hh04W3xXa5s_2"].audio_path == "mosei/Raw/Audio/Full/WAV_16000/hh04W3xXa5s.wav"
    assert table.loc["188343_0"].split == "valid" and table.loc["7l3BNtSE0xc_3"].text == "test clip"
    counts = (out / "counts.txt").read_text()
    assert counts in capsys.readouterr().out.replace("prepare: ", "")  # printed as written
    assert counts.startswith("mosei: train/valid/test = 4/1/1\n")
    assert "the SDK folds on CMU_MOSEI_Labels.csd, 399 more segments in no fold: 16327/1871/4662 (-16323/-1870/-4661)" in counts
    assert "MMSA's aligned release: 16326/1871/4659 (-16322/-1870/-4658)" in counts
    assert "1 segment(s) start before 0 s; their audio is cut from 0 s (e.g. hh04W3xXa5s_13)" in counts
    assert "no transcript segment within tolerance: 1 (e.g. hh04W3xXa5s[8.00-9.00])" in counts
    assert "not in the standard folds: 1 (e.g. notafold01[0.00-1.00])" in counts


def mosi_table_of(tmp_path, on_invalid="fail", **files):
    mine = tmp_path / "mine"
    mine.mkdir(parents=True, exist_ok=True)
    mosi_files(mine, **files)
    download(params_for("mosi"), tmp_path / "raw", tmp_path / "downloads",
             [mine / "CMU_MOSI.zip", mine / "CMU_MOSI_Opinion_Labels.csd"])
    return prepare(params_for("mosi", on_invalid=on_invalid), tmp_path / "raw", tmp_path / "prepared")


def assert_every_mosi_label_on_its_own_segment(table):
    for video, segments in MOSI_SEGMENTS.items():
        for k, start, end, label in segments:
            utterance = f"{video}_{k}"
            if utterance not in table.index:
                continue
            row = table.loc[utterance]
            assert row.text == f"SEGMENT {k} OF {video}" and row.sentiment == pytest.approx(label), utterance
            assert row.end_s == pytest.approx(end - start if end > start else MOSI_ZERO_LENGTH_WAV_S, abs=1e-3)


@pytest.mark.parametrize("with_label_table", [True, False])
def test_mosi_joins_by_segment_number_not_time_order(tmp_path, capsys, with_label_table):
    out = mosi_table_of(tmp_path, with_label_table=with_label_table)
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert not (tmp_path / "raw/mosi/Raw/Video").exists()  # only audio, transcripts and labels are unpacked
    assert_every_mosi_label_on_its_own_segment(table)
    assert table.loc["VbQk4H8hgr0_4"].sentiment == pytest.approx(2.6)  # the time-rank rule gave it 1.8
    assert table.loc[["bOL9jKpeJRs_1", "bOL9jKpeJRs_2"]].sentiment.tolist() == pytest.approx([1.2, -0.4])
    assert len(table) == 10 and table.happy.isna().all()
    assert table.groupby("split").size().to_dict() == {"train": 6, "valid": 2, "test": 2}
    counts = (out / "counts.txt").read_text()
    source = ("Raw/Labels/OpinionLevelSentiment.csv (the raw corpus's label table)" if with_label_table else
              "CMU_MOSI_Opinion_Labels.csd in stored row order (Raw/Labels/OpinionLevelSentiment.csv not found)")
    assert f"note: labels from {source}" in counts
    assert "1 segment(s) with a zero-length label interval, kept with their own WAV" in counts
    assert "2WGyTLYerpo_2" in counts
    assert "no audio file: 1 (e.g. d6hH302o4v8_3)" in counts and "not in the standard folds: 1" in counts
    assert "the SDK folds on the raw label table: 1284/229/686 (-1278/-227/-684)" in counts


def test_mosi_audio_that_disagrees_with_its_interval_fails_or_is_quarantined(tmp_path):
    wrong = {"VbQk4H8hgr0_4": 2.4}  # interval 1.2 s: a mislinked or truncated file
    with pytest.raises(MmolreError) as err:
        mosi_table_of(tmp_path, wav_seconds=wrong)
    assert ("(utterance_id='VbQk4H8hgr0_4'): end_s: audio length differs from the label interval "
            "[5.000, 6.200] s by more than 0.25 s (got 2.4)") in str(err.value)
    assert not (tmp_path / "prepared/mosi").exists()
    out = mosi_table_of(tmp_path / "q", on_invalid="quarantine", wav_seconds=wrong)
    rejected = pd.read_csv(out / "rejected.csv")
    assert rejected.utterance_id.tolist() == ["VbQk4H8hgr0_4"]
    assert "audio length differs from the label interval" in rejected.reasons[0]
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert "VbQk4H8hgr0_4" not in table.index and len(table) == 9
    assert_every_mosi_label_on_its_own_segment(table)


def test_shipped_folds_are_the_sdk_files_byte_for_byte():
    """Written back in the SDK module's own layout, the shipped lists hash to the SDK files' SHA-256
    (recorded in their headers), and parsing such a module as data gives the same lists."""
    order = {"mosi": ("train", "valid", "test"), "mosei": ("train", "test", "valid")}
    tail = {"mosi": "\n", "mosei": "\n\n"}
    sizes = {"mosi": (52, 10, 31), "mosei": (2249, 300, 678)}
    for corpus in ("mosi", "mosei"):
        folds = standard_folds(corpus)
        assert tuple(len(folds[s]) for s in ("train", "valid", "test")) == sizes[corpus]
        assert len(set().union(*map(set, folds.values()))) == sum(sizes[corpus])  # no video in two folds
        module = "\n\n".join(f"standard_{s}_fold={folds[s]!r}" for s in order[corpus]) + tail[corpus]
        header = (resources.files("mmolre") / f"folds/{corpus}.txt").read_text()
        assert f"(SHA-256 {hashlib.sha256(module.encode()).hexdigest()})" in header
    # a fold module is read as data, never run: the trailing statement would fail if it were
    assert parse_sdk_folds_text("standard_train_fold=['a']\nstandard_valid_fold=['b']\n"
                                "standard_test_fold=['c', 'd']\nraise SystemExit('executed')\n") == \
        {"train": ["a"], "valid": ["b"], "test": ["c", "d"]}
    with pytest.raises(MmolreError, match="expected standard_train_fold"):
        parse_sdk_folds_text("standard_train_fold=['a']\n")


def parse_sdk_folds_text(text):
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "folds.py"
        path.write_text(text)
        return parse_sdk_folds(path)


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
    assert table.groupby("dataset").size().to_dict() == {"mosi": 10, "mosei": 6}
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
        f["All Labels/data/7l3BNtSE0xc/features"][0, 0] = 3.0
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
    with pytest.raises(MmolreError, match="mosi takes files named"):
        download(params_for("mosi"), tmp_path / "raw", tmp_path / "downloads", [tmp_path / "mosi.zip"])
    assert clean_transcript("  so (umm) I [noise] liked <sil> it {laugh}  ") == "so I liked it"


def test_mosei_needed_members_only_through_the_download_stage(server, tmp_path):  # noqa: F811
    served, base = server
    RangeHandler.mode = "full"
    mosei_files(served)
    raw = download(params_for("mosei", base), tmp_path / "raw", tmp_path / "downloads")
    zip_bytes, label_bytes = (served / "CMU_MOSEI.zip").stat().st_size, (served / "CMU_MOSEI_Labels.csd").stat().st_size
    assert RangeHandler.sent - label_bytes < zip_bytes - 1_000_000  # the video stayed on the server
    assert not (tmp_path / "downloads/CMU_MOSEI.zip").exists()
    assert (raw / "Raw/Audio/Full/WAV_16000/hh04W3xXa5s.wav").is_file() and not (raw / "Raw/Video").exists()
    entry = json.loads((raw / "MANIFEST.json").read_text())["CMU_MOSEI.zip"]
    assert entry["members"] == 8 and entry["verified"] == "CRC-32 per member"
    requests = len(RangeHandler.requests)
    download(params_for("mosei", base), tmp_path / "raw", tmp_path / "downloads")  # complete: no network
    assert len(RangeHandler.requests) == requests


def write_mp4(path, seconds: float, rate: int = 44100) -> None:
    """An mp4 like MMSA's clips: an AAC audio track (44.1 kHz, resampled on import) and a video track."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i:i + 1024], format="flt", layout="mono")
            frame.sample_rate = rate
            container.mux(audio.encode(frame))
        for _ in range(int(seconds * 10)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))


def test_mmsa_layout_is_imported_with_audio_decoded_from_mp4(tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    mmsa = tmp_path / "MOSI"
    clips = [("2iD-tVS8NPw", "1", "i loved it", 2.4, "train", 1.0), ("2iD-tVS8NPw", "2", "it was bad", -1.2, "train", 0.6),
             ("WKA5OygbEKI", "3", "okay", 0.0, "valid", 0.8), ("tmZoasNr4rU", "12", "great", 3.0, "test", 1.5)]
    rows = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
    for video, clip, text, label, mode, seconds in clips:
        write_mp4(mmsa / "Raw" / video / f"{clip}.mp4", seconds)
        rows.append(f"{video},{clip},{text},{label},,,,Positive,{mode}")
    rows.append("tmZoasNr4rU,13,broken clip,1.0,,,,Positive,test")
    (mmsa / "Raw/tmZoasNr4rU/13.mp4").write_bytes(b"not an mp4 at all")
    (mmsa / "label.csv").write_text("\n".join(rows) + "\n")

    monkeypatch.chdir(ROOT)
    code = main(["download", "--set", "data.dataset=mosi", "--from-mmsa", str(mmsa), "--raw-root", str(tmp_path / "raw")])
    assert code == 0
    assert "1 of 5 clips could not be decoded" in capsys.readouterr().out
    out = prepare(params_for("mosi"), tmp_path / "raw", tmp_path / "prepared")
    table = pd.read_parquet(out / "utterances.parquet").set_index("utterance_id")
    assert list(table.index) == ["2iD-tVS8NPw_1", "2iD-tVS8NPw_2", "WKA5OygbEKI_3", "tmZoasNr4rU_12"]
    assert table.split.tolist() == [c[4] for c in clips] and table.sentiment.tolist() == [c[3] for c in clips]
    assert table.text.tolist() == [c[2] for c in clips] and table[list(EMOTIONS)].isna().all().all()
    assert table.end_s.tolist() == pytest.approx([c[5] for c in clips], abs=0.05)  # AAC priming/padding
    wav = tmp_path / "raw" / table.audio_path.iloc[0]
    assert sf.info(str(wav)).samplerate == 16000 and sf.info(str(wav)).channels == 1
    counts = (out / "counts.txt").read_text()
    assert "sentiment only (MMSA has no emotion labels)" in counts
    assert "audio could not be decoded (undecodable.csv): 1 (e.g. tmZoasNr4rU_13)" in counts


def test_a_bad_first_archive_never_locks_out_a_good_one(tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    mosi_files(good)
    data = (good / "CMU_MOSI.zip").read_bytes()
    (bad / "CMU_MOSI.zip").write_bytes(data[: len(data) // 2])  # a cut-off download
    downloads = tmp_path / "downloads"
    monkeypatch.chdir(ROOT)
    args = lambda folder: ["download", "--set", "data.dataset=mosi", "--raw-root", str(tmp_path / "raw"),
                           "--downloads", str(downloads), "--from-archive", str(folder / "CMU_MOSI.zip"),
                           "--from-archive", str(good / "CMU_MOSI_Opinion_Labels.csd")]
    assert main(args(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmolre download: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "CMU_MOSI.zip" in err and "nothing was recorded" in err
    manifest = json.loads((downloads / "MANIFEST.json").read_text()) if (downloads / "MANIFEST.json").exists() else {}
    assert "CMU_MOSI.zip" not in manifest and not (tmp_path / "raw" / "mosi").exists()
    assert main(args(good)) == 0  # the good copy is accepted, and only now recorded
    manifest = json.loads((downloads / "MANIFEST.json").read_text())
    assert manifest["CMU_MOSI.zip"]["size"] == len(data)


def test_an_archive_with_a_bad_crc_is_one_line(tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    mosi_files(tmp_path)
    with zipfile.ZipFile(tmp_path / "CMU_MOSI.zip") as z:
        member = z.getinfo("Raw/Audio/WAV_16000/Segmented/VbQk4H8hgr0_1.wav")
    data = bytearray((tmp_path / "CMU_MOSI.zip").read_bytes())
    data[member.header_offset + 30 + len(member.filename) + 200] ^= 0xFF  # stored member: the CRC catches it
    (tmp_path / "CMU_MOSI.zip").write_bytes(bytes(data))
    monkeypatch.chdir(ROOT)
    code = main(["download", "--set", "data.dataset=mosi", "--raw-root", str(tmp_path / "raw"), "--downloads",
                 str(tmp_path / "downloads"), "--from-archive", str(tmp_path / "CMU_MOSI.zip"),
                 "--from-archive", str(tmp_path / "CMU_MOSI_Opinion_Labels.csd")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "corrupt archive (Bad CRC-32 for file 'Raw/Audio/WAV_16000/Segmented/VbQk4H8hgr0_1.wav')" in err


def test_mmsas_mode_split_that_crosses_videos_is_reported_not_refused(tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main
    from mmolre.report import data_section

    mmsa = tmp_path / "SIMS-like"  # clips of one video in train and test, as a clip-level split puts them
    clips = [("v1", "1", "train"), ("v1", "2", "test"), ("v2", "1", "valid"), ("v3", "1", "test")]
    rows = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
    for video, clip, mode in clips:
        write_mp4(mmsa / "Raw" / video / f"{clip}.mp4", 0.6)
        rows.append(f"{video},{clip},some words,0.5,,,,Positive,{mode}")
    (mmsa / "label.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(ROOT)
    assert main(["download", "--set", "data.dataset=mosi", "--from-mmsa", str(mmsa),
                 "--raw-root", str(tmp_path / "raw")]) == 0
    said = capsys.readouterr().out
    assert (f"download: {mmsa / 'label.csv'}: warning: this release's split is not video-independent: 1 video(s) "
            "span train/valid/test (v1); results on it are not speaker-independent") in said
    manifest = json.loads((tmp_path / "raw/mosi/MANIFEST.json").read_text())["label.csv"]
    assert manifest["split"] == {"video_independent": False, "videos_in_several_splits": 1, "first": ["v1"]}
    assert manifest["sha256"] == hashlib.sha256((mmsa / "label.csv").read_bytes()).hexdigest()
    out = prepare(params_for("mosi"), tmp_path / "raw", tmp_path / "prepared")
    assert "prepare: warning: this release's split is not video-independent" in capsys.readouterr().out
    counts = (out / "counts.txt").read_text()
    assert "split overlap: this release's split is not video-independent: 1 video(s) span train/valid/test" in counts
    assert "  v1: test, train\n" in counts and "source: label.csv from file:" in counts
    assert ("**This release's split is not video-independent:** 1 video(s) span train/valid/test; results on it "
            "are not speaker-independent.") in data_section(out / "counts.txt")
