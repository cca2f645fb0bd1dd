"""Corpora beyond CMU in their real layouts (CH-SIMS, MELD, IEMOCAP, a manifest of your own): what each reader
finds, the quirks named in counts.txt, the splits, and each label space trained end to end on tiny encoders."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from sklearn.metrics import balanced_accuracy_score, f1_score
from test_cmu import write_mp4

from mmolre import MmolreError
from mmolre.download import download
from mmolre.evaluate import evaluate
from mmolre.features import FeatureFile
from mmolre.featurize import featurize
from mmolre.label_spaces import IEMOCAP_4, MELD_EMOTIONS
from mmolre.predict import load_predictor, predict_table, read_inputs
from mmolre.prepare import prepare
from mmolre.report import report
from mmolre.train import train


def params_for(tiny_params: dict, dataset: str, **data) -> dict:
    return {**tiny_params, "data": {**tiny_params["data"], "dataset": dataset, **data},
            "train": {**tiny_params["train"], "epochs": 2},
            "runs": {"main": {"modalities": ["text", "audio"]}}}


def prepared_table(params: dict, tmp_path, **download_args) -> tuple[pd.DataFrame, str]:
    download(params, tmp_path / "raw", tmp_path / "downloads", **download_args)
    out = prepare(params, tmp_path / "raw", tmp_path / "prepared")
    counts = (out / "counts.txt").read_text() if (out / "counts.txt").is_file() else ""
    return pd.read_parquet(out / "utterances.parquet"), counts


def train_and_evaluate(params: dict, tmp_path) -> tuple[dict, pd.DataFrame]:
    """featurize, train `main`, evaluate: its metrics and its test predictions."""
    featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "reports" / "train")
    metrics = evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")["main"]
    return metrics, pd.read_csv(tmp_path / "reports" / "predictions" / "main_test.csv")


def write_wav(path, seconds: float, pitch: float = 220.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), 16000, subtype="PCM_16")


# --- CH-SIMS -------------------------------------------------------------------------------------------

SIMS = [("video_0001", "0001", "我很喜欢", 0.8, 1.0, 0.6, 0.8, "train"),
        ("video_0001", "0002", "太糟糕了", -0.6, -0.8, -0.4, -0.2, "train"),
        ("video_0002", "0001", "还可以吧", 0.0, 0.2, 0.0, -0.2, "train"),
        ("video_0002", "0002", "非常难过", -1.0, -1.0, -0.8, -1.0, "train"),
        ("video_0003", "0001", "挺好的", 0.4, 0.6, 0.2, 0.4, "valid"),
        ("video_0003", "0002", "不太好", -0.2, -0.4, 0.0, 0.0, "valid"),
        ("video_0004", "0001", "真棒", 1.0, 1.0, 0.8, 0.6, "test"),
        ("video_0004", "0002", "一般", -0.4, 0.0, -0.6, -0.4, "test")]


@pytest.fixture(scope="module")
def sims_root(tmp_path_factory):
    """MMSA's SIMS layout with the columns in another order than MOSI's (read by name), zero-padded clip ids."""
    root = tmp_path_factory.mktemp("sims")
    rows = ["video_id,clip_id,text,label,annotation,mode,label_T,label_A,label_V"]
    for k, (video, clip, text, label, lt, la, lv, mode) in enumerate(SIMS):
        write_mp4(root / "Raw" / video / f"{clip}.mp4", 0.8 + 0.1 * k)
        rows.append(f"{video},{clip},{text},{label},Positive,{mode},{lt},{la},{lv}")
    (root / "label.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_sims_keeps_its_unimodal_labels_and_trains_with_mmsas_metrics(sims_root, tmp_path, tiny_params):
    params = params_for(tiny_params, "sims", mmsa_root=str(sims_root))
    table, counts = prepared_table(params, tmp_path)
    assert table.utterance_id.tolist() == [f"{v}_{c}" for v, c, *_ in SIMS]
    assert table.sentiment.tolist() == [row[3] for row in SIMS] and table.split.tolist() == [row[7] for row in SIMS]
    assert table[["label_T", "label_A", "label_V"]].values.tolist() == [list(row[4:7]) for row in SIMS]
    assert table.text.iloc[0] == "我很喜欢" and "emotion" not in table and "happy" not in table
    assert "sims: train/valid/test = 4/2/2" in counts and "CH-SIMS (the paper's split): 1368/456/457" in counts

    metrics, predictions = train_and_evaluate(params, tmp_path)
    assert "## sims: sentiment" in report(params, tmp_path / "reports").read_text()
    assert FeatureFile(next((tmp_path / "features" / "sims").glob("*.h5"))).label_space == "sims"
    assert list(metrics) == ["sims"] and list(metrics["sims"]) == ["msa"]
    assert set(metrics["sims"]["msa"]) == {"acc2", "acc3", "acc5", "f1", "mae", "corr"}
    pred = np.clip(predictions.sentiment_pred, -1, 1)
    assert metrics["sims"]["msa"]["mae"] == pytest.approx(np.mean(np.abs(pred - predictions.sentiment)), rel=1e-5)
    pairs = json.loads((tmp_path / "reports/eval/comparisons.json").read_text())["pairs"]  # robustness: SIMS's own
    assert {p["metric"] for p in pairs} == {"msa.mae", "msa.corr", "msa.acc2", "msa.f1"}
    full = next(p for p in pairs if p["a"] == "main, audio absent" and p["metric"] == "msa.mae")
    assert full["b_value"] == pytest.approx(metrics["sims"]["msa"]["mae"], rel=1e-5)


def test_sims_v2_reads_the_same_layout_under_its_own_name(sims_root, tmp_path, tiny_params):
    table, counts = prepared_table(params_for(tiny_params, "sims2", mmsa_root=str(sims_root)), tmp_path)
    assert set(table.dataset) == {"sims2"} and len(table) == len(SIMS) and "label_V" in table
    assert "sims2: train/valid/test = 4/2/2" in counts and "CH-SIMS v2 (supervised part): 2722/647/1034" in counts


def test_sims_without_the_mmsa_release_is_one_line_naming_it(tmp_path, tiny_params):
    with pytest.raises(MmolreError, match=r"sims: comes from the MMSA release only: `mmolre download --from-mmsa"):
        download(params_for(tiny_params, "sims"), tmp_path / "raw")


# --- MELD ----------------------------------------------------------------------------------------------

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
# (Sr No., text, speaker, emotion, sentiment, dialogue, utterance, start, end) per split; Sr No. repeats and
# jumps back, utterance ids have a gap, times have one-digit hours and two-digit fractions, one start == end
MELD_ROWS = {
    "train": [(1, "Oh my God, he\x92s lost it.", "Rachel", "surprise", "negative", 0, 0, "00:16:16,059", "00:16:17,820"),
              (2, "Okay.", "Ross", "neutral", "neutral", 0, 2, "0:16:18,000", "0:16:19,100"),
              (2, "That is so great!", "Monica", "joy", "positive", 1, 0, "00:06:47,28", "00:06:49,10"),
              (1, "I hate this.", "Joey", "anger", "negative", 1, 1, "00:07:01,000", "00:07:02,500"),
              (5, "Leave me alone.", "Chandler", "sadness", "negative", 125, 3, "00:01:00,000", "00:01:01,000"),
              (6, "Ew, gross.", "Phoebe", "disgust", "negative", 2, 0, "00:02:00,000", "00:02:01,000"),
              (7, "Ew, gross.", "Phoebe", "disgust", "negative", 2, 0, "00:02:00,000", "00:02:01,000")],
    "dev": [(1, "Hey, how\x92re you?", "Joey", "neutral", "neutral", 0, 0, "00:01:00,000", "00:01:01,000"),
            (2, "Wow!", "Ross", "surprise", "positive", 0, 1, "00:01:02,000", "00:01:03,000"),
            (3, "No way.", "Rachel", "fear", "negative", 110, 7, "00:01:04,000", "00:01:05,000")],
    "test": [(1, "I\x92m fine.", "Monica", "neutral", "neutral", 0, 0, "00:03:00,000", "00:03:00,000"),
             (2, "Great news!", "Ross", "joy", "positive", 38, 4, "00:03:02,000", "00:03:04,000"),
             (3, "Why?", "Joey", "anger", "negative", 220, 0, "00:04:00,000", "00:04:01,500")],
}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


def meld_csv(split: str, old: bool) -> bytes:
    """A split's CSV: newer copies UTF-8 with CRLF and ’, older ones LF with U+0092."""
    lines = [HEADER] + [f'{n},"{text if old else text.replace(chr(0x92), chr(0x2019))}",{who},{emo},{sent},{d},{u},'
                        f'3,5,"{start}","{end}"' for n, text, who, emo, sent, d, u, start, end in MELD_ROWS[split]]
    return ("\n".join(lines) + "\n" if old else "\r\n".join(lines) + "\r\n").encode("utf-8")


def meld_clips(folder, split: str) -> None:
    """The split's clips as MELD ships them: dia125_utt3 corrupt, dia110_utt7 missing, an unannotated extra,
    a test clip with the `final_videos_test` prefix."""
    for k, (*_, d, u, _start, _end) in enumerate(MELD_ROWS[split]):
        if (split, d, u) == ("dev", 110, 7):
            continue
        prefix = "final_videos_test" if (split, d) == ("test", 0) else ""
        path = folder / CLIP_DIRS[split] / f"{prefix}dia{d}_utt{u}.mp4"
        if (split, d, u) == ("train", 125, 3):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
        else:
            write_mp4(path, 0.6 + 0.1 * k)
    if split == "dev":
        write_mp4(folder / CLIP_DIRS[split] / "dia0_utt9.mp4", 0.5)


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def meld_archive(tmp_path_factory):
    """MELD.Raw.tar.gz as distributed: MELD.Raw/ with the CSVs (the older variant) and train/dev/test.tar.gz."""
    root = tmp_path_factory.mktemp("meld")
    with tarfile.open(root / "MELD.Raw.tar.gz", "w:gz") as outer:
        for split in CLIP_DIRS:
            meld_clips(root / split, split)
            inner = root / f"{split}.tar.gz"
            with tarfile.open(inner, "w:gz") as archive:
                archive.add(root / split / CLIP_DIRS[split], arcname=CLIP_DIRS[split])
            outer.add(inner, arcname=f"MELD.Raw/{split}.tar.gz")
            add_bytes(outer, f"MELD.Raw/{split}_sent_emo.csv", meld_csv(split, old=True))
    return root


def test_meld_from_the_archive_keys_labels_and_names_every_quirk(meld_archive, tmp_path, tiny_params, capsys,
                                                                 monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    params = params_for(tiny_params, "meld")
    monkeypatch.chdir(ROOT)
    where = ["--set", "data.dataset=meld", "--raw-root", str(tmp_path / "raw")]
    assert main(["download", *where, "--from-archive", str(meld_archive / "MELD.Raw.tar.gz")]) == 0
    assert main(["prepare", *where, "--out-root", str(tmp_path / "prepared")]) == 2
    assert re.search(r"row \d+ \(utterance_id='train_dia125_utt3'\): audio_path: clip could not be decoded",
                     capsys.readouterr().err)
    quarantine = {**params, "prepare": {**params["prepare"], "on_invalid": "quarantine"}}
    prepare(quarantine, tmp_path / "raw", tmp_path / "prepared")
    table = pd.read_parquet(tmp_path / "prepared" / "meld" / "utterances.parquet").set_index("utterance_id")
    counts = (tmp_path / "prepared" / "meld" / "counts.txt").read_text()
    rejected = pd.read_csv(tmp_path / "prepared" / "meld" / "rejected.csv")
    assert rejected.utterance_id.tolist() == ["train_dia125_utt3"]
    assert list(table.index) == ["train_dia0_utt0", "train_dia0_utt2", "train_dia1_utt0", "train_dia1_utt1",
                                 "train_dia2_utt0", "dev_dia0_utt0", "dev_dia0_utt1", "test_dia0_utt0",
                                 "test_dia38_utt4", "test_dia220_utt0"]
    assert table.loc["train_dia0_utt0", "text"] == "Oh my God, he\u2019s lost it."  # U+0092 read as ’
    assert table.loc["train_dia1_utt0", ["emotion", "sentiment"]].tolist() == ["joy", 1.0]
    assert table.loc["train_dia1_utt1", ["emotion", "sentiment", "speaker"]].tolist() == ["anger", -1.0, "Joey"]
    assert table.loc["train_dia0_utt2", ["dialogue_id", "utterance_index"]].tolist() == [0, 1]  # utt 1 is a gap
    assert table.groupby("split").size().to_dict() == {"train": 5, "valid": 2, "test": 3}
    assert table.loc["test_dia0_utt0", "video_id"] == "test_dia0"  # dialogue ids repeat across splits
    assert "corrupt clip (could not be decoded; an invalid row): train_dia125_utt3:" in counts
    assert "no clip in the archive: 1 (e.g. dev_dia110_utt7)" in counts
    assert "duplicate (split, Dialogue_ID, Utterance_ID): 1 (e.g. train_dia2_utt0)" in counts
    assert "clips without a CSV row (unannotated extras), not used: 1: dev_dia0_utt9" in counts
    assert "known wrongly cut clips (MELD issue #20), kept: test_dia220_utt0, test_dia38_utt4" in counts
    assert "1 row(s) with empty StartTime/EndTime" in counts and "test_dia0_utt0" in counts


def test_meld_unpacked_in_another_layout_reads_the_same(meld_archive, tmp_path, tiny_params):
    """The newer CSVs (CRLF, ’) inside each split's folder, the clips unpacked: the same utterance table."""
    folder = tmp_path / "MELD"
    for split in CLIP_DIRS:
        shutil.copytree(meld_archive / split, folder / split)
        (folder / split / f"{split}_sent_emo.csv").write_bytes(meld_csv(split, old=False))
    params = params_for(tiny_params, "meld", archives=[str(folder)])
    params["prepare"] = {**params["prepare"], "on_invalid": "quarantine"}
    table, _ = prepared_table(params, tmp_path / "unpacked")
    from_archive = params_for(tiny_params, "meld", archives=[str(meld_archive / "MELD.Raw.tar.gz")])
    from_archive["prepare"] = params["prepare"]
    expected, _ = prepared_table(from_archive, tmp_path / "archive")
    pd.testing.assert_frame_equal(table.drop(columns=["audio_path", "end_s"]),
                                  expected.drop(columns=["audio_path", "end_s"]))


def test_meld_keeps_each_clip_as_video_with_keep_video(meld_archive, tmp_path, tiny_params):
    """From the archive (streamed, each clip copied as it passes): video_path per annotated clip, the clip's
    bytes; none for the corrupt clip (its audio failed: an invalid row, quarantined)."""
    params = params_for(tiny_params, "meld", archives=[str(meld_archive / "MELD.Raw.tar.gz")], keep_video=True)
    params["prepare"] = {**params["prepare"], "on_invalid": "quarantine"}
    table, counts = prepared_table(params, tmp_path)
    videos = tmp_path / "raw" / "meld" / "MELD" / "Video"
    assert table.set_index("utterance_id").video_path["train_dia1_utt1"] == "meld/MELD/Video/train/dia1_utt1.mp4"
    for row in table.itertuples():
        split = {"valid": "dev"}.get(row.split, row.split)
        source = next((meld_archive / split / CLIP_DIRS[split]).glob(f"*{Path(row.video_path).name}"))
        assert (tmp_path / "raw" / row.video_path).read_bytes() == source.read_bytes()
    assert not (videos / "train" / "dia125_utt3.mp4").exists()
    assert "video: 11 clips kept in Video/ (data.keep_video)" in counts  # the 10 rows and the unannotated extra


def test_meld_trains_its_class_heads_and_reports_weighted_f1(meld_archive, tmp_path, tiny_params):
    params = params_for(tiny_params, "meld", archives=[str(meld_archive / "MELD.Raw.tar.gz")])
    params["prepare"] = {**params["prepare"], "on_invalid": "quarantine"}
    prepared_table(params, tmp_path)
    metrics, predictions = train_and_evaluate(params, tmp_path)
    meld = metrics["meld"]
    assert set(meld) == {"msa", "mer"} and set(meld["mer"]) == {"acc", "ua", "f1", "recall"}
    assert set(meld["mer"]["recall"]) == set(MELD_EMOTIONS)
    assert meld["mer"]["f1"] == pytest.approx(100 * f1_score(predictions.emotion, predictions.emotion_pred,
                                                             average="weighted"), rel=1e-6)
    assert meld["msa"]["acc"] == pytest.approx(100 * np.mean(predictions.sentiment ==
                                                             predictions.sentiment_pred), rel=1e-6)
    assert set(predictions.sentiment) <= {"negative", "neutral", "positive"}
    probabilities = predictions[[f"emotion_{e}_prob" for e in MELD_EMOTIONS]].to_numpy()
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    text = (report(params, tmp_path / "reports")).read_text()
    f1 = f"{meld['mer']['f1']:.1f}"
    assert "## meld: emotions" in text and f"| acc | ua | f1 | recall neutral |" in text and f1 in text
    pairs = json.loads((tmp_path / "reports/eval/comparisons.json").read_text())["pairs"]
    assert {p["metric"] for p in pairs} == {"msa.acc", "msa.f1", "mer.acc", "mer.f1"}
    full = next(p for p in pairs if p["a"] == "main, text absent" and p["metric"] == "mer.f1")
    assert full["b_value"] == pytest.approx(meld["mer"]["f1"], rel=1e-6)  # the full input's: the model's own
    assert "| condition | dataset | sentiment Acc | sentiment F1 | emotion Acc | emotion F1 |" in text
    assert "CMU-MOSEI" not in text  # the field's MOSEI table belongs to the CMU label space
    assert sorted(p.name for p in (tmp_path / "reports" / "figures").iterdir()) == [
        "confusion.png", "curves.png", "routing.png", "scatter.png", "utilization.png"]
    wav = tmp_path / "raw" / "meld" / "MELD" / "WAV_16000" / "test" / "dia38_utt4.wav"
    predicted = predict_table(load_predictor(tmp_path / "models" / "main", torch.device("cpu")),
                              read_inputs(wav, "Great news!", None))[0]
    assert list(predicted["sentiment"]) == ["negative", "neutral", "positive"]
    assert list(predicted["emotions"]) == list(MELD_EMOTIONS)
    assert sum(predicted["emotions"].values()) == pytest.approx(1.0, abs=1e-5)


# --- IEMOCAP -------------------------------------------------------------------------------------------

# session -> (utterance suffix, code, V, A, D, text)
IEMOCAP = {1: [("F000", "neu", 2.5, 2.5, 2.5, "Excuse me."), ("M000", "exc", 4.0, 3.5, 3.0, "That's amazing!"),
               ("F001", "fru", 2.0, 3.0, 3.0, "This again."), ("M001", "ang", 1.5, 4.0, 4.0, "Get out!")],
           2: [("F000", "sad", 1.5, 2.0, 2.0, "I miss her."), ("M000", "hap", 4.5, 3.0, 3.0, "I'm so happy."),
               ("F001", "xxx", 3.0, 3.0, 3.0, "Well."), ("M001", "neu", 3.0, 2.5, 3.0, "Fine.")],
           3: [("F000", "ang", 1.0, 4.5, 4.0, "Stop it."), ("M000", "neu", 3.0, 2.0, 2.5, "Okay then.")],
           4: [("F000", "hap", 4.0, 3.0, 3.0, "Wonderful."), ("M000", "sad", 2.0, 1.5, 2.0, "Sorry.")],
           5: [("F000", "exc", 4.5, 4.0, 3.5, "Yes!"), ("M000", "neu", 3.0, 3.0, 3.0, "Sure.")]}


@pytest.fixture(scope="module")
def iemocap_release(tmp_path_factory):
    """IEMOCAP_full_release: per session one dialog's wavs, its EmoEvaluation file (header, summary lines,
    annotator lines) and its transcription."""
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    for session, rows in IEMOCAP.items():
        dialog = f"Ses0{session}F_impro01"
        evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcript = []
        for k, (suffix, code, v, a, d, text) in enumerate(rows):
            start, end = 1.0 + 3 * k, 2.5 + 3 * k
            write_wav(root / f"Session{session}/sentences/wav/{dialog}/{dialog}_{suffix}.wav", end - start, 200 + 20 * k)
            evaluation += [f"[{start:.4f} - {end:.4f}]\t{dialog}_{suffix}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
                           "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
            transcript.append(f"{dialog}_{suffix} [{start:08.4f}-{end:08.4f}]: {text}")
        (root / f"Session{session}/dialog/EmoEvaluation").mkdir(parents=True)
        (root / f"Session{session}/dialog/EmoEvaluation/{dialog}.txt").write_text("\n".join(evaluation) + "\n")
        (root / f"Session{session}/dialog/transcriptions").mkdir(parents=True)
        (root / f"Session{session}/dialog/transcriptions/{dialog}.txt").write_text("\n".join(transcript) + "\n")
    return root


def test_iemocap_4_class_protocol_merges_excited_and_holds_out_a_session(iemocap_release, tmp_path, tiny_params):
    params = params_for(tiny_params, "iemocap", archives=[str(iemocap_release)], test_session=2)
    table, counts = prepared_table(params, tmp_path)
    table = table.set_index("utterance_id")
    assert table.loc["Ses01F_impro01_M000", "emotion"] == "hap"  # exc counts as hap
    assert "Ses01F_impro01_F001" not in table.index and "Ses02F_impro01_F001" not in table.index  # fru, xxx
    assert set(table.emotion) == set(IEMOCAP_4)
    assert set(table[table.split == "test"].session) == {2}
    assert table.loc["Ses03F_impro01_F000", ["video_id", "speaker"]].tolist() == ["Ses03F_impro01", "Ses03F"]
    assert table[table.split == "valid"].video_id.nunique() == 1 and "valence" not in table
    assert "iemocap: train/valid/test = 6/3/3 (12 utterances; the full release has 5531" in counts  # valid: one dialog
    assert "codes outside it left out: fru 1, xxx 1" in counts


def test_iemocap_6_classes_and_vad_from_the_archive(iemocap_release, tmp_path, tiny_params):
    with tarfile.open(tmp_path / "IEMOCAP_full_release.tar.gz", "w:gz") as archive:
        archive.add(iemocap_release, arcname="IEMOCAP_full_release")
    params = params_for(tiny_params, "iemocap", archives=[str(tmp_path / "IEMOCAP_full_release.tar.gz")],
                        label_space="iemocap6_vad")
    table, counts = prepared_table(params, tmp_path)
    table = table.set_index("utterance_id")
    assert table.loc["Ses01F_impro01_M000", "emotion"] == "exc" and table.loc["Ses01F_impro01_F001", "emotion"] == "fru"
    assert table.loc["Ses01F_impro01_M001", ["valence", "arousal", "dominance"]].tolist() == [1.5, 4.0, 4.0]
    assert "codes outside it left out: xxx 1" in counts
    with pytest.raises(MmolreError, match=r"data.label_space='meld': iemocap is labelled in iemocap4, iemocap6"):
        prepare({**params, "data": {**params["data"], "label_space": "meld"}}, tmp_path / "raw", tmp_path / "p2")


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # sklearn's, on UA's own definition
def test_iemocap_one_fold_trains_and_reports_wa_ua_and_weighted_f1(iemocap_release, tmp_path, tiny_params):
    params = params_for(tiny_params, "iemocap", archives=[str(iemocap_release)], label_space="iemocap4_vad")
    prepared_table(params, tmp_path)
    metrics, predictions = train_and_evaluate(params, tmp_path)
    block = metrics["iemocap"]
    assert set(block) == {"vad", "mer"} and set(block["vad"]) == {"valence", "arousal", "dominance"}
    assert block["mer"]["ua"] == pytest.approx(100 * balanced_accuracy_score(predictions.emotion,
                                                                             predictions.emotion_pred), rel=1e-6)
    assert block["mer"]["acc"] == pytest.approx(100 * np.mean(predictions.emotion == predictions.emotion_pred))
    assert block["vad"]["valence"]["mae"] == pytest.approx(
        np.mean(np.abs(predictions.valence_pred - predictions.valence)), rel=1e-5)
    text = report(params, tmp_path / "reports").read_text()
    assert "## iemocap: valence, arousal, dominance" in text and "| valence mae | valence corr |" in text
    assert "figures/confusion.png" in text and "figures/scatter.png" not in text  # no sentiment: no scatter


# --- your own corpus -----------------------------------------------------------------------------------

def test_a_custom_manifest_trains_in_the_label_space_it_names(tmp_path, tiny_params):
    rows = ["id,audio,text,speaker,sentiment,emotion"]
    labels = [("negative", "anger"), ("positive", "joy"), ("neutral", "neutral"), ("", "sadness"), ("positive", "")]
    for k in range(15):
        write_wav(tmp_path / "clips" / f"c{k}.wav", 0.6 + 0.05 * k, 180 + 10 * k)
        sentiment, emotion = labels[k % 5]
        rows.append(f"c{k},clips/c{k}.wav,utterance number {k},s{k % 5},{sentiment},{emotion}")
    rows.append("broken,clips/missing.wav,no recording,s0,neutral,neutral")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    params = params_for(tiny_params, "custom", archives=[str(tmp_path / "manifest.csv")], label_space="meld")
    table, counts = prepared_table(params, tmp_path)
    table = table.set_index("utterance_id")
    assert table.loc["s3_c3", ["sentiment", "emotion"]].isna().tolist() == [True, False]  # empty: not labelled
    assert table.loc["s1_c1", ["sentiment", "emotion"]].tolist() == [1.0, "joy"]
    assert table.groupby("video_id").split.nunique().max() == 1 and set(table.split) == {"train", "valid", "test"}
    assert "left out: broken: " in counts and "drawn by speaker" in counts
    metrics, _ = train_and_evaluate(params, tmp_path)
    assert set(metrics["custom"]) == {"msa", "mer"} and "f1" in metrics["custom"]["mer"]


def test_a_custom_label_outside_its_space_fails_prepare_naming_the_row(tmp_path, tiny_params):
    write_wav(tmp_path / "a.wav", 0.5)
    (tmp_path / "manifest.csv").write_text("audio,text,split,sentiment\na.wav,hello,train,7\n")
    params = params_for(tiny_params, "custom", archives=[str(tmp_path / "manifest.csv")])
    with pytest.raises(MmolreError, match=r"row 0 \(utterance_id='0_0'\): sentiment: must lie in \[-3, 3\] \(got 7.0\)"):
        prepared_table(params, tmp_path)


def test_a_custom_label_that_is_not_one_is_named_not_dropped(tmp_path, tiny_params):
    write_wav(tmp_path / "a.wav", 0.5)
    (tmp_path / "manifest.csv").write_text("audio,text,split,sentiment\na.wav,hello,train,very good\n")
    params = params_for(tiny_params, "custom", archives=[str(tmp_path / "manifest.csv")], label_space="meld")
    with pytest.raises(MmolreError, match=r"row 0 \(utterance_id='0_0'\): sentiment: not a label of the space meld"):
        prepared_table(params, tmp_path)


MANIFEST = "audio,text,split,sentiment\na.wav,café crème,train,1\n"


@pytest.mark.parametrize("encoding, bom", [("utf-16", True), ("utf-8-sig", True), ("cp1252", False),
                                           ("utf-16-le", False)])
def test_a_manifest_in_another_encoding_is_read_by_its_bom_or_refused_in_one_line(tmp_path, tiny_params, capsys,
                                                                                  monkeypatch, encoding, bom):
    from mmolre.cli import main

    write_wav(tmp_path / "a.wav", 0.5)
    (tmp_path / "manifest.csv").write_bytes(MANIFEST.encode(encoding))  # a spreadsheet export
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    code = main(["download", "--set", "data.dataset=custom", "--set", "data.archives=[manifest.csv]",
                 "--raw-root", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    if bom:  # UTF-16 with its byte-order mark (Excel's "Unicode text"), UTF-8 with one (Excel's "CSV UTF-8")
        assert code == 0, err
        table, _ = prepared_table(params_for(tiny_params, "custom", archives=[str(tmp_path / "manifest.csv")]),
                                  tmp_path / "again")
        assert table.text.tolist() == ["café crème"] and table.sentiment.tolist() == [1.0]
        return
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    looks = "Latin-1 / Windows-1252" if encoding == "cp1252" else "UTF-16 without a byte-order mark"
    source = "cp1252" if encoding == "cp1252" else "utf-16"
    assert f"manifest.csv: the manifest is not UTF-8 (byte 0x" in err and f"it looks like {looks}" in err
    assert f"iconv -f {source} -t utf-8 " in err and not (tmp_path / "raw" / "custom").exists()


def test_an_mmsa_label_file_that_is_not_utf8_is_named_in_one_line(tmp_path):
    from mmolre.datasets.mmsa import read_labels

    (tmp_path / "label.csv").write_bytes("video_id,clip_id,text\nv,1,très bien\n".encode("cp1252"))
    with pytest.raises(MmolreError) as error:
        read_labels(tmp_path / "label.csv")
    assert str(error.value).startswith(f"{tmp_path / 'label.csv'}: the label file is not UTF-8 (byte 0xe8 on line 2)")
    (tmp_path / "label.csv").write_bytes("video_id,clip_id,text\nv,1,très bien\n".encode("utf-16"))
    with pytest.raises(MmolreError, match="missing column"):  # read (its BOM), then checked as MMSA's
        read_labels(tmp_path / "label.csv")


def test_a_manifest_split_that_crosses_speakers_is_refused_unless_kept_on_purpose(tmp_path, tiny_params, capsys,
                                                                                   monkeypatch):
    from mmolre.cli import main

    rows = ["audio,text,speaker,split,sentiment"]
    for k, split in enumerate(["train", "train", "valid", "test", "test"]):
        write_wav(tmp_path / f"c{k}.wav", 0.5)
        rows.append(f"c{k}.wav,utterance {k},{'ann' if k in (0, 3) else f's{k}'},{split},1")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    monkeypatch.chdir(tmp_path)
    custom = ["--set", "data.dataset=custom", "--set", "data.archives=[manifest.csv]"]
    assert main(["download", *custom]) == 0
    capsys.readouterr()
    assert main(["prepare", *custom]) == 2
    err = capsys.readouterr().err
    assert err == ("mmolre prepare: error: custom's utterance table: 1 video(s) have utterances in more than one split "
                   "(ann): the splits must be speaker-independent; fix the split, or set prepare.split_overlap=warn to "
                   "keep it (recorded in counts.txt and the report)\n")
    assert not (tmp_path / "data/prepared/custom").exists()
    assert main(["prepare", *custom, "--set", "prepare.split_overlap=warn"]) == 0
    out = capsys.readouterr().out
    assert "prepare: warning: the split you made (kept: prepare.split_overlap=warn) is not video-independent: 1 " \
           "video(s) span train/valid/test (ann)" in out
    counts = (tmp_path / "data/prepared/custom/counts.txt").read_text()
    assert "split overlap: the split you made (kept: prepare.split_overlap=warn) is not video-independent: 1 " \
           "video(s) span train/valid/test; results on it are not speaker-independent\n  ann: test, train\n" in counts
