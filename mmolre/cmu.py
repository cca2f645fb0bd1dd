"""CMU-MOSI and CMU-MOSEI: where the files are, how they are laid out, how they become utterance tables.

Sources (read with the search tool; no SDK code is used):
- URLs of the label sequences: CMU-MultiComp-Lab/CMU-MultimodalSDK,
  mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py and .../CMU_MOSEI/cmu_mosei.py.
- Raw archives (audio, segmented transcripts, MOSI's raw label table): the SDK's raw_datasets folder
  on the same host.
- Standard folds: the SDK's cmu_mosi_std_folds.py and cmu_mosei_std_folds.py (branch main), shipped
  as package data in mmolre/folds/ (source file and commit in their header), so no step needs the
  network for folds. `parse_sdk_folds` reads an SDK-format fold module as data (never executed).
- Computational sequences (.csd) are HDF5: <root>/data/<video>/features (T x D) and intervals (T x 2).

How labels meet segments (checked against the real files; docs/cmu-data.md):
- MOSI: by segment number, never by time rank (segment numbers are not in time order in some
  videos, e.g. VbQk4H8hgr0 and d6hH302o4v8). The authoritative table is the raw corpus's
  Raw/Labels/OpinionLevelSentiment.csv (start, end, video, segment number, label; no header);
  without it, row k of a video in the label .csd is segment k + 1 (its stored order follows
  segment numbers). Every joined segment's WAV length is checked against its label interval.
- MOSEI: label rows are matched to transcript segments by their times (transcript times equal the
  label intervals; rows are not in time order, and some start before 0 s).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmolre import EMOTIONS, SPLITS, MmolreError
from mmolre.files import audio_duration

HOST = "http://immortal.multicomp.cs.cmu.edu"
SOURCES = {  # file name -> official URL
    "mosi": {"CMU_MOSI.zip": f"{HOST}/raw_datasets/CMU_MOSI.zip",
             "CMU_MOSI_Opinion_Labels.csd": f"{HOST}/CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd"},
    "mosei": {"CMU_MOSEI.zip": f"{HOST}/raw_datasets/CMU_MOSEI.zip",
              "CMU_MOSEI_Labels.csd": f"{HOST}/CMU-MOSEI/labels/CMU_MOSEI_Labels.csd"},
}
# Split sizes to compare with, train / valid / test, and what each one counts.
REFERENCE_COUNTS = {
    "mosi": {"the SDK folds on the raw label table": (1284, 229, 686),
             "MMSA's aligned release": (1284, 229, 686)},
    "mosei": {"the SDK folds on CMU_MOSEI_Labels.csd, 399 more segments in no fold": (16327, 1871, 4662),
              "MMSA's aligned release": (16326, 1871, 4659)},
}
# Archive members needed (text + audio + MOSI's label table): everything else (video) stays packed.
NEEDED = {"mosi": re.compile(r"(^|/)Raw/(Audio/WAV_16000/Segmented/[^/]+\.wav$|Transcript/Segmented/[^/]+$"
                             r"|Labels/OpinionLevelSentiment\.csv$)"),
          "mosei": re.compile(r"(^|/)Raw/(Audio/Full/WAV_16000/[^/]+\.wav$|Transcript/Segmented/Combined/[^/]+$)")}
MARKUP = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>|\{[^}]*\}")


@dataclass
class CorpusTable:
    """What a corpus reader found: usable rows, segments left out (reason -> ids), rows that broke a
    cross-check (utterance_id, column, rule, value; failed or quarantined by `prepare`), and notes."""
    table: pd.DataFrame
    dropped: dict[str, list[str]] = field(default_factory=dict)
    invalid: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def standard_folds(corpus: str) -> dict[str, list[str]]:
    """The SDK's standard folds of `corpus` (mosi | mosei), from the package data in mmolre/folds/."""
    folds = {split: [] for split in SPLITS}
    text = resources.files("mmolre").joinpath(f"folds/{corpus}.txt").read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            split, video = line.split()
            folds[split].append(video)
    return folds


def parse_sdk_folds(path: Path) -> dict[str, list[str]]:
    """The three lists of an SDK fold module (cmu_mosei_std_folds.py), read as data, never executed."""
    names = {"standard_train_fold": "train", "standard_valid_fold": "valid", "standard_test_fold": "test"}
    folds = {}
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", "") in names:
            folds[names[node.targets[0].id]] = ast.literal_eval(node.value)
    if set(folds) != set(names.values()):
        raise MmolreError(f"{path}: expected standard_train_fold, standard_valid_fold, standard_test_fold lists")
    return {split: folds[split] for split in SPLITS}


def parts(dataset: str) -> list[str]:
    """The corpora a data.dataset value stands for."""
    return ["mosi", "mosei"] if dataset == "cmu" else [dataset]


def clean_transcript(text: str) -> str:
    """Drop annotation markup ((laughter), [noise], <sil>, {..}) and extra spaces."""
    return re.sub(r"\s+", " ", MARKUP.sub(" ", text)).strip()


def read_csd(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video id -> (features (T, D), intervals (T, 2)) of a computational sequence."""
    try:
        with h5py.File(path, "r") as f:
            root = f[next(iter(f.keys()))]
            return {video: (group["features"][:], group["intervals"][:]) for video, group in root["data"].items()}
    except (OSError, KeyError, StopIteration) as e:
        raise MmolreError(f"{path}: not a computational sequence (.csd) with <root>/data/<video>/"
                          f"{{features,intervals}} ({e})") from None


def split_of(folds: dict[str, list[str]]) -> dict[str, str]:
    return {video: split for split, videos in folds.items() for video in videos}


def find_dir(root: Path, relative: str) -> Path:
    """The folder `relative` (e.g. Raw/Audio/Full/WAV_16000) wherever the archive put it under root."""
    hits = sorted(p for p in root.rglob(relative.split("/")[-1]) if p.is_dir() and p.as_posix().endswith(relative))
    if not hits:
        raise MmolreError(f"{root}: no folder {relative} (is the archive complete?)")
    return hits[0]


def find_file(root: Path, relative: str) -> Path | None:
    """The file `relative` wherever the archive put it under root, or None."""
    hits = sorted(p for p in root.rglob(relative.split("/")[-1]) if p.is_file() and p.as_posix().endswith(relative))
    return hits[0] if hits else None


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


def mosei_transcript(path: Path) -> list[tuple[str, float, float, str]]:
    """(clip, start, end, text) of a Raw/Transcript/Segmented/Combined/<video>.txt file
    (`VIDEO___CLIP___START___END___TEXT` lines)."""
    segments = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split("___", 4)
            if len(fields) == 5:
                try:
                    segments.append((fields[1], float(fields[2]), float(fields[3]), clean_transcript(fields[4])))
                except ValueError:
                    continue
    return segments


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
        wav = audio_dir / f"{video}.wav"
        seconds = audio_duration(wav)  # one header read per video, not per segment
        segments = mosei_transcript(text_dir / f"{video}.txt")
        for i in order:
            start, end = map(float, intervals[i])
            label_id = f"{video}[{start:.2f}-{end:.2f}]"
            if seconds is None:
                out.dropped["no audio file"].append(label_id)
                continue
            gaps = [max(abs(s[1] - start), abs(s[2] - end)) if s[3] else np.inf for s in segments]
            if not gaps or min(gaps) > tolerance_s:
                out.dropped["no transcript segment within tolerance"].append(label_id)
                continue
            clip, seg_start, seg_end, text = segments[int(np.argmin(gaps))]
            utterance = f"{video}_{clip}"
            if seg_start < 0:
                negative.append(utterance)
            if seg_end > seconds + tolerance_s:
                out.invalid.append({"utterance_id": utterance, "column": "end_s",
                                    "rule": f"label interval ends after the audio ({seconds:.2f} s)",
                                    "value": seg_end})
            rows.append({"utterance_id": utterance, "video_id": video, "dataset": "mosei",
                         "split": splits[video], "start_s": max(seg_start, 0.0), "end_s": seg_end,
                         "audio_path": wav.relative_to(raw_root).as_posix(), "text": text,
                         "sentiment": float(features[i, 0]),
                         **{e: float(features[i, 1 + j]) for j, e in enumerate(EMOTIONS)}})
    if negative:
        out.notes.append(f"{len(negative)} segment(s) start before 0 s; their audio is cut from 0 s "
                         f"(e.g. {', '.join(negative[:3])})")
    out.table = pd.DataFrame(rows)
    return out


def count_report(dataset: str, corpus: CorpusTable) -> list[str]:
    """Lines comparing the split sizes with the references and saying where segments went."""
    table = corpus.table
    got = tuple(int((table.split == s).sum()) if len(table) else 0 for s in SPLITS)
    lines = [f"{dataset}: train/valid/test = {got[0]}/{got[1]}/{got[2]}"]
    for name, standard in REFERENCE_COUNTS[dataset].items():
        diff = "same" if got == standard else "/".join(f"{g - s:+d}" for g, s in zip(got, standard))
        lines.append(f"  {name}: {standard[0]}/{standard[1]}/{standard[2]} ({diff})")
    lines += [f"  note: {note}" for note in corpus.notes]
    if any(corpus.dropped.values()) or corpus.invalid:
        lines.append("  segments left out, by reason:")
    for reason, ids in corpus.dropped.items():
        if ids:
            lines.append(f"    {reason}: {len(ids)} (e.g. {', '.join(ids[:3])})")
    if corpus.invalid:
        lines.append(f"    failed a cross-check (see prepare's error or rejected.csv): {len(corpus.invalid)} "
                     f"(e.g. {', '.join(v['utterance_id'] for v in corpus.invalid[:3])})")
    return lines
