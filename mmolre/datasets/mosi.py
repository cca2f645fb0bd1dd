"""CMU-MOSI (Zadeh et al., 2016): 2,199 opinion segments of 93 videos, sentiment in [-3, 3].

From the raw archive (withdrawn by CMU in 2023) with the label sequence, or from the MMSA release
(`data.mmsa_root`, datasets/mmsa.py), which has everything MOSI labels (sentiment).

How labels meet segments (checked against the real files; docs/cmu-data.md): by segment number, never
by time rank (segment numbers are not in time order in some videos, e.g. VbQk4H8hgr0 and d6hH302o4v8).
The authoritative table is the raw corpus's Raw/Labels/OpinionLevelSentiment.csv (start, end, video,
segment number, label; no header); without it, row k of a video in the label .csd is segment k + 1 (its
stored order follows segment numbers). Every joined segment's WAV length is checked against its label
interval.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mmolre import EMOTIONS, MmolreError
from mmolre.datasets import VIDEO_COLUMNS, CorpusTable, mmsa, sdk
from mmolre.datasets.sdk import clean_transcript, find_dir, find_file, read_csd, split_of, standard_folds
from mmolre.files import audio_duration
from mmolre.params import PrepareParams, build, keeps_video

CORPORA = ("mosi",)
EXTRA_COLUMNS = VIDEO_COLUMNS  # from the MMSA release with data.keep_video; else empty
MMSA_FOLDER = "MOSI"  # its folder in MMSA's release (for data.dataset=cmu)
FILES = {"CMU_MOSI.zip": "raw_datasets/CMU_MOSI.zip",  # file name -> path on the official host
         "CMU_MOSI_Opinion_Labels.csd": "CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd"}
ARCHIVE_NAMES = tuple(FILES)
# Archive members needed (text + audio + the label table): everything else (video) stays packed.
NEEDED = {"CMU_MOSI.zip": re.compile(r"(^|/)Raw/(Audio/WAV_16000/Segmented/[^/]+\.wav$|Transcript/Segmented/[^/]+$"
                                     r"|Labels/OpinionLevelSentiment\.csv$)")}
REFERENCE_COUNTS = {"the SDK folds on the raw label table": (1284, 229, 686),  # train / valid / test
                    "MMSA's aligned release": (1284, 229, 686)}


def download(params: dict, target: Path, downloads: Path, archives=(), mmsa_root: str | None = None) -> None:
    """data/raw/mosi/: the MMSA release when `mmsa_root` (or data.mmsa_root) is set, else the raw archive's
    audio, transcripts and label table plus the label sequence."""
    mmsa_root = mmsa_root or params["data"].get("mmsa_root")
    if mmsa_root:
        sdk.check_archive_names(archives, (), "mosi from the MMSA release (which holds all its labels)")
        mmsa.import_mmsa(Path(mmsa_root), target, keeps_video(params))
        return
    sdk.check_archive_names(archives, FILES, "mosi")
    cached, manifest, pending = sdk.get_files(FILES, params["data"], downloads, archives, NEEDED)
    sdk.unpack(cached, manifest, pending, target, NEEDED)


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    """MOSI's rows, from whichever layout `download` wrote."""
    if (folder / mmsa.FOLDER).is_dir():
        corpus = mmsa.mmsa_table(folder, raw_root, "mosi")
    else:
        corpus = mosi_table(folder, raw_root, build(PrepareParams, params, "prepare").duration_tolerance_s)
    corpus.notes += sdk.source_notes(folder)
    corpus.report = sdk.count_report("mosi", corpus, REFERENCE_COUNTS)
    return [corpus]


def mosi_labels(folder: Path) -> tuple[pd.DataFrame, str]:
    """MOSI's label table (video, segment, start, end, sentiment), and which source it came from.

    Raw/Labels/OpinionLevelSentiment.csv when the archive has it; otherwise the label .csd, whose
    rows per video are stored in segment-number order (row k = segment k + 1)."""
    csv = find_file(folder, "Raw/Labels/OpinionLevelSentiment.csv")
    if csv is not None:
        try:
            table = pd.read_csv(csv, header=None, names=["start", "end", "video", "segment", "sentiment"],
                                dtype={"video": str})
            table["segment"] = table.segment.astype(int)
        except (ValueError, pd.errors.ParserError) as e:
            raise MmolreError(f"{csv}: expected rows `start,end,video,segment number,label` ({e})") from None
        return table, f"{csv.relative_to(folder).as_posix()} (the raw corpus's label table)"
    rows = [{"video": video, "segment": k + 1, "start": float(iv[0]), "end": float(iv[1]), "sentiment": float(f[0])}
            for video, (features, intervals) in read_csd(folder / "CMU_MOSI_Opinion_Labels.csd").items()
            for k, (f, iv) in enumerate(zip(features, intervals, strict=True))]
    return (pd.DataFrame(rows, columns=["video", "segment", "start", "end", "sentiment"]),
            "CMU_MOSI_Opinion_Labels.csd in stored row order (Raw/Labels/OpinionLevelSentiment.csv not found)")


def mosi_transcript(path: Path) -> dict[int, str]:
    """Segment number -> cleaned text of a Raw/Transcript/Segmented/<video>.annotprocessed file."""
    lines = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            match = re.match(r"^\s*(\d+)_(?:DELIM_)?(.*)$", line)
            if match:
                lines[int(match.group(1))] = clean_transcript(match.group(2))
    return lines


def mosi_table(folder: Path, raw_root: Path, tolerance_s: float = 0.25) -> CorpusTable:
    """One row per MOSI opinion segment: segment k of a video is `<video>_<k>.wav` and transcript line
    `k_DELIM_...`, joined by number. A WAV whose length differs from its label interval by more than
    `tolerance_s` is an invalid row (a mislinked segment, or a truncated file)."""
    labels, source = mosi_labels(folder)
    audio_dir = find_dir(folder, "Raw/Audio/WAV_16000/Segmented")
    text_dir = find_dir(folder, "Raw/Transcript/Segmented")
    splits = split_of(standard_folds("mosi"))
    out = CorpusTable(pd.DataFrame(), {"not in the standard folds": [], "no transcript line": [], "no audio file": []},
                      notes=[f"labels from {source}"])
    zero_length, rows = [], []
    for video, segments in labels.groupby("video", sort=True):
        lines = mosi_transcript(text_dir / f"{video}.annotprocessed")
        for label in segments.sort_values("segment", kind="stable").itertuples(index=False):
            utterance = f"{video}_{label.segment}"
            wav = audio_dir / f"{utterance}.wav"
            seconds = audio_duration(wav) if video in splits and lines.get(label.segment) else None
            reason = ("not in the standard folds" if video not in splits else
                      "no transcript line" if not lines.get(label.segment) else
                      "no audio file" if seconds is None else None)
            if reason:
                out.dropped[reason].append(utterance)
                continue
            interval = label.end - label.start
            if interval <= 0:
                zero_length.append(utterance)
            elif abs(seconds - interval) > tolerance_s:
                out.invalid.append({"utterance_id": utterance, "column": "end_s",
                                    "rule": f"audio length differs from the label interval "
                                            f"[{label.start:.3f}, {label.end:.3f}] s by more than {tolerance_s} s",
                                    "value": round(seconds, 3)})
            rows.append({"utterance_id": utterance, "video_id": video, "dataset": "mosi", "split": splits[video],
                         "start_s": 0.0, "end_s": seconds, "audio_path": wav.relative_to(raw_root).as_posix(),
                         "text": lines[label.segment], "sentiment": float(label.sentiment),
                         **{e: np.nan for e in EMOTIONS}})
    if zero_length:
        out.notes.append(f"{len(zero_length)} segment(s) with a zero-length label interval, kept with their own "
                         f"WAV (its length cannot be cross-checked): {', '.join(zero_length[:5])}")
    out.table = pd.DataFrame(rows)
    return out
