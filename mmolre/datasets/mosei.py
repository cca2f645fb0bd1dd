"""CMU-MOSEI (Zadeh et al., ACL 2018): 23,259 labelled segments of 3,837 videos, sentiment in [-3, 3] and six
emotion intensities in [0, 3].

From the raw archive (withdrawn by CMU in 2023: full-length audio cut at the segments' times) with the
label sequence, or from the MMSA release (`data.mmsa_root`) joined to the label sequence for the emotions
(datasets/mmsa.py, `match_clips`). Raw archive: label rows are matched to transcript segments by their
times (transcript times equal the label intervals; rows are not in time order, and some start before
0 s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmolre import EMOTIONS
from mmolre.datasets import VIDEO_COLUMNS, CorpusTable, mmsa, sdk
from mmolre.datasets.sdk import combined_transcript, find_dir, read_csd, split_of, standard_folds
from mmolre.files import audio_duration
from mmolre.params import PrepareParams, build, keeps_video

CORPORA = ("mosei",)
EXTRA_COLUMNS = VIDEO_COLUMNS  # from the MMSA release with data.keep_video; else empty
MMSA_FOLDER = "MOSEI"  # its folder in MMSA's release (for data.dataset=cmu)
LABELS = "CMU_MOSEI_Labels.csd"
WORDS = "CMU_MOSEI_TimestampedWords.csd"
FILES = {"CMU_MOSEI.zip": "raw_datasets/CMU_MOSEI.zip",  # file name -> path on the official host
         LABELS: f"CMU-MOSEI/labels/{LABELS}", WORDS: f"CMU-MOSEI/language/{WORDS}"}
ARCHIVE_FILES = {name: FILES[name] for name in ("CMU_MOSEI.zip", LABELS)}
# With the MMSA release: the labels are needed, the word timings and the raw archive's transcripts are
# evidence used when the user has them (never fetched for that alone).
MMSA_FILES = {LABELS: FILES[LABELS]}
MMSA_EVIDENCE = (WORDS, "CMU_MOSEI.zip")
ARCHIVE_NAMES = tuple(FILES)
NEEDED = {"CMU_MOSEI.zip": re.compile(r"(^|/)Raw/(Audio/Full/WAV_16000/[^/]+\.wav$|Transcript/Segmented/Combined/[^/]+$)")}
TRANSCRIPTS_ONLY = {"CMU_MOSEI.zip": re.compile(r"(^|/)Raw/Transcript/Segmented/Combined/[^/]+$")}
REFERENCE_COUNTS = {"the SDK folds on CMU_MOSEI_Labels.csd, 399 more segments in no fold": (16327, 1871, 4662),
                    "MMSA's aligned release": (16326, 1871, 4659)}


def download(params: dict, target: Path, downloads: Path, archives=(), mmsa_root: str | None = None) -> None:
    """data/raw/mosei/: the raw archive's audio and transcripts plus the label sequence, or the MMSA release
    (`mmsa_root` or data.mmsa_root) plus the label sequence and whatever evidence the user has for the join."""
    data = params["data"]
    mmsa_root = mmsa_root or data.get("mmsa_root")
    if not mmsa_root:
        sdk.check_archive_names(archives, ARCHIVE_FILES, "mosei")
        cached, manifest, pending = sdk.get_files(ARCHIVE_FILES, data, downloads, archives, NEEDED)
        sdk.unpack(cached, manifest, pending, target, NEEDED)
        return
    sdk.check_archive_names(archives, (*MMSA_FILES, *MMSA_EVIDENCE), "mosei from the MMSA release")
    files = {**MMSA_FILES, **{n: FILES[n] for n in MMSA_EVIDENCE
                              if n in {Path(a).name for a in archives} or (downloads / n).exists()}}
    cached, manifest, pending = sdk.get_files(files, data, downloads, archives)
    mmsa.import_mmsa(Path(mmsa_root), target, keeps_video(params))
    sdk.unpack(cached, manifest, pending, target, TRANSCRIPTS_ONLY)


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    """MOSEI's rows, from whichever layout `download` wrote."""
    if (folder / mmsa.FOLDER).is_dir():
        tolerance = build(PrepareParams, params, "prepare").mmsa_duration_tolerance_s
        corpus = mmsa.mmsa_table(folder, raw_root, "mosei", mmsa.Evidence.of(folder, LABELS, WORDS, tolerance))
    else:
        corpus = mosei_table(folder, raw_root)
    corpus.notes += sdk.source_notes(folder)
    corpus.report = sdk.count_report("mosei", corpus, REFERENCE_COUNTS)
    return [corpus]


def closest_segment(segments: list[tuple], start: float, end: float, tolerance_s: float) -> tuple | None:
    """The transcript segment (clip, start, end, text) whose start and end lie closest to the label row's,
    within `tolerance_s`; None when none does."""
    gaps = [max(abs(s[1] - start), abs(s[2] - end)) if s[3] else np.inf for s in segments]
    if not gaps or min(gaps) > tolerance_s:
        return None
    return segments[int(np.argmin(gaps))]


def label_values(features: np.ndarray) -> dict[str, float]:
    """A Labels.csd row: sentiment, then the six emotions' intensities."""
    return {"sentiment": float(features[0]), **{e: float(features[1 + j]) for j, e in enumerate(EMOTIONS)}}


@dataclass
class VideoRows:
    """The label rows of one video in the folds, each matched to its transcript segment."""
    video: str
    split: str
    wav: Path
    raw_root: Path
    tolerance_s: float
    negative: list[str] = field(default_factory=list)  # segments that start before 0 s

    def rows(self, features: np.ndarray, intervals: np.ndarray, order: np.ndarray, transcript: Path,
             out: CorpusTable) -> list[dict]:
        """Rows in time order (`intervals` sorted, `order` their rows in `features`); drops and invalid
        rows recorded in `out`."""
        seconds = audio_duration(self.wav)  # one header read per video, not per segment
        segments = combined_transcript(transcript)
        rows = []
        for i, (start, end) in zip(order, intervals.tolist()):
            label_id = f"{self.video}[{start:.2f}-{end:.2f}]"
            if seconds is None:
                out.dropped["no audio file"].append(label_id)
                continue
            segment = closest_segment(segments, start, end, self.tolerance_s)
            if segment is None:
                out.dropped["no transcript segment within tolerance"].append(label_id)
                continue
            clip, seg_start, seg_end, text = segment
            utterance = f"{self.video}_{clip}"
            if seg_start < 0:
                self.negative.append(utterance)
            if seg_end > seconds + self.tolerance_s:
                out.invalid.append({"utterance_id": utterance, "column": "end_s",
                                    "rule": f"label interval ends after the audio ({seconds:.2f} s)", "value": seg_end})
            rows.append({"utterance_id": utterance, "video_id": self.video, "dataset": "mosei", "split": self.split,
                         "start_s": max(seg_start, 0.0), "end_s": seg_end,
                         "audio_path": self.wav.relative_to(self.raw_root).as_posix(), "text": text,
                         **label_values(features[i])})
        return rows


def mosei_table(folder: Path, raw_root: Path, tolerance_s: float = 0.1) -> CorpusTable:
    """One row per MOSEI label segment, matched to the transcript segment (`<video>.txt`) whose start
    and end lie closest and within `tolerance_s`; audio is the video's full WAV cut at those times.
    Label rows may come in any order; a segment starting before 0 s is cut from 0 s; one that ends
    after its audio (+ `tolerance_s`) is an invalid row."""
    labels = read_csd(folder / "CMU_MOSEI_Labels.csd")
    splits = split_of(standard_folds("mosei"))
    audio_dir = find_dir(folder, "Raw/Audio/Full/WAV_16000")
    text_dir = find_dir(folder, "Raw/Transcript/Segmented/Combined")
    out = CorpusTable(pd.DataFrame(), {"not in the standard folds": [], "no audio file": [],
                                       "no transcript segment within tolerance": []})
    rows, negative = [], []
    for video, (features, intervals) in sorted(labels.items()):
        order = np.lexsort((intervals[:, 1], intervals[:, 0]))  # rows are not stored in time order
        if video not in splits:
            out.dropped["not in the standard folds"] += [f"{video}[{s:.2f}-{e:.2f}]" for s, e in intervals[order]]
            continue
        video_rows = VideoRows(video, splits[video], audio_dir / f"{video}.wav", raw_root, tolerance_s)
        rows += video_rows.rows(features, intervals[order], order, text_dir / f"{video}.txt", out)
        negative += video_rows.negative
    if negative:
        out.notes.append(f"{len(negative)} segment(s) start before 0 s; their audio is cut from 0 s "
                         f"(e.g. {', '.join(negative[:3])})")
    out.table = pd.DataFrame(rows)
    return out
