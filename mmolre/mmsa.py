"""CMU-MOSI / CMU-MOSEI from the MMSA toolkit's raw layout, the copy most researchers already hold.

The layout: `label.csv` (video_id, clip_id, text, label, label_T, label_A, label_V, annotation,
mode) beside `Raw/<video_id>/<clip_id>.mp4`. `import_mmsa` decodes each clip's audio track with
PyAV (FFmpeg, bundled in its wheel) to 16 kHz mono WAV under `<dataset folder>/MMSA/`, and
`mmsa_table` turns label.csv into the utterance table: `label` is the sentiment, `mode` the split
(MMSA's split is the standard one). MMSA's release has no emotion labels, so a corpus imported this
way trains and scores sentiment only (the emotion columns stay empty).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from mmolre import EMOTIONS, SPLITS, MmolreError
from mmolre.cmu import CorpusTable, clean_transcript
from mmolre.files import audio_duration

FOLDER = "MMSA"  # under data/raw/<dataset>[/<corpus>]: label.csv, WAV_16000/<video>_<clip>.wav, undecodable.csv
CORPUS_FOLDERS = {"mosi": "MOSI", "mosei": "MOSEI"}  # MMSA's names, for data.dataset=cmu
LABEL_COLUMNS = ["video_id", "clip_id", "text", "label", "mode"]


def read_labels(path: Path) -> pd.DataFrame:
    """label.csv with ids as strings; names the file and the missing columns when it is not MMSA's."""
    if not path.is_file():
        raise MmolreError(f"{path}: no label.csv (expected the MMSA layout: label.csv beside Raw/<video_id>/"
                          "<clip_id>.mp4)")
    table = pd.read_csv(path, dtype={"video_id": str, "clip_id": str}, keep_default_na=False, na_values=[""])
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise MmolreError(f"{path}: missing column(s) {missing}; MMSA's label.csv has "
                          "video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode")
    return table


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of a media file as mono float32 at `sample_rate`."""
    import av  # only this importer needs FFmpeg

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MmolreError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise MmolreError(f"{path}: cannot decode ({e})") from None
    if not chunks:
        raise MmolreError(f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks)


def import_mmsa(source: Path, target: Path, sample_rate: int = 16000) -> None:
    """Copy label.csv and decode every clip's audio into target/MMSA/. A clip that cannot be decoded
    is listed in undecodable.csv (and reported by `prepare`), never dropped silently."""
    labels = read_labels(source / "label.csv")
    out = target / FOLDER
    (out / "WAV_16000").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "label.csv", out / "label.csv")
    failed = []
    for row in tqdm(labels.itertuples(index=False), total=len(labels), desc=f"decode {source.name}", unit="clip"):
        clip = source / "Raw" / row.video_id / f"{row.clip_id}.mp4"
        try:
            audio = decode_audio(clip, sample_rate)
        except MmolreError as e:
            failed.append({"utterance_id": f"{row.video_id}_{row.clip_id}", "file": str(clip), "reason": str(e)})
            continue
        sf.write(out / "WAV_16000" / f"{row.video_id}_{row.clip_id}.wav", audio, sample_rate, subtype="PCM_16")
    if failed:
        pd.DataFrame(failed).to_csv(out / "undecodable.csv", index=False)
        print(f"download: {len(failed)} of {len(labels)} clips could not be decoded (listed in "
              f"{out / 'undecodable.csv'}), e.g. {failed[0]['reason']}")


def mmsa_table(folder: Path, raw_root: Path, corpus: str) -> CorpusTable:
    """The utterance table of a corpus imported by `import_mmsa` (sentiment only)."""
    labels = read_labels(folder / FOLDER / "label.csv")
    undecodable = folder / FOLDER / "undecodable.csv"
    unreadable = set(pd.read_csv(undecodable).utterance_id) if undecodable.is_file() else set()
    out = CorpusTable(pd.DataFrame(), {"audio could not be decoded (undecodable.csv)": [], "no audio file": [],
                                       "split (mode) not train/valid/test": []},
                      notes=[f"from the MMSA raw layout ({FOLDER}/label.csv): splits from its `mode` column, "
                             "sentiment only (MMSA has no emotion labels)"])
    rows = []
    for row in labels.itertuples(index=False):
        utterance = f"{row.video_id}_{row.clip_id}"
        wav = folder / FOLDER / "WAV_16000" / f"{utterance}.wav"
        seconds = audio_duration(wav)
        reason = ("split (mode) not train/valid/test" if row.mode not in SPLITS else
                  "audio could not be decoded (undecodable.csv)" if utterance in unreadable else
                  "no audio file" if seconds is None else None)
        if reason:
            out.dropped[reason].append(utterance)
            continue
        rows.append({"utterance_id": utterance, "video_id": row.video_id, "dataset": corpus,
                     "split": row.mode, "start_s": 0.0, "end_s": seconds,
                     "audio_path": wav.relative_to(raw_root).as_posix(),
                     "text": clean_transcript(str(row.text)) if isinstance(row.text, str) else "",
                     "sentiment": float(row.label), **{e: np.nan for e in EMOTIONS}})
    out.table = pd.DataFrame(rows)
    return out
