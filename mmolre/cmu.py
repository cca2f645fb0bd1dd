"""CMU-MOSI and CMU-MOSEI: where the files are, how they are laid out, how they become utterance tables.

Sources (read with the search tool; no SDK code is used):
- URLs of the label sequences: CMU-MultiComp-Lab/CMU-MultimodalSDK,
  mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py and .../CMU_MOSEI/cmu_mosei.py.
- Raw archives (audio, segmented transcripts): the SDK's raw_datasets folder on the same host.
- Standard folds: MOSEI from the SDK's .../CMU_MOSEI/cmu_mosei_std_folds.py (downloaded and parsed
  as data); MOSI from the SDK's former CMU_MOSI standard folds (52 / 10 / 31 videos), embedded below.
- Computational sequences (.csd) are HDF5: <root>/data/<video>/features (T x D) and intervals (T x 2).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmolre import EMOTIONS, MmolreError
from mmolre.files import audio_duration

HOST = "http://immortal.multicomp.cs.cmu.edu"
SDK = "https://raw.githubusercontent.com/CMU-MultiComp-Lab/CMU-MultimodalSDK/master"
SOURCES = {  # file name -> official URL
    "mosi": {"CMU_MOSI.zip": f"{HOST}/raw_datasets/CMU_MOSI.zip",
             "CMU_MOSI_Opinion_Labels.csd": f"{HOST}/CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd"},
    "mosei": {"CMU_MOSEI.zip": f"{HOST}/raw_datasets/CMU_MOSEI.zip",
              "CMU_MOSEI_Labels.csd": f"{HOST}/CMU-MOSEI/labels/CMU_MOSEI_Labels.csd",
              "cmu_mosei_std_folds.py":
                  f"{SDK}/mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSEI/cmu_mosei_std_folds.py"},
}
# What the field reports for the aligned benchmark (MMSA), train / valid / test.
STANDARD_COUNTS = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}
# Archive members needed (text + audio only): everything else (video) stays packed.
NEEDED = {"mosi": re.compile(r"(^|/)Raw/(Audio/WAV_16000/Segmented/|Transcript/Segmented/)"),
          "mosei": re.compile(r"(^|/)Raw/(Audio/Full/WAV_16000/|Transcript/Segmented/Combined/)")}
MOSI_FOLDS = {
    "train": ["2iD-tVS8NPw", "8d-gEyoeBzc", "Qr1Ca94K55A", "Ci-AH39fi3Y", "8qrpnFRGt2A", "Bfr499ggo-0",
              "QN9ZIUWUXsY", "9T9Hf74oK10", "7JsX8y1ysxY", "1iG0909rllw", "Oz06ZWiO20M", "BioHAh1qJAQ",
              "9c67fiY0wGQ", "Iu2PFX3z_1s", "Nzq88NnDkEk", "Clx4VXItLTE", "9J25DZhivz8", "Af8D0E4ZXaw",
              "TvyZBvOMOTc", "W8NXH0Djyww", "8OtFthrtaJM", "0h-zjBukYpk", "Vj1wYRQjB-o", "GWuJjcEuzt8",
              "BI97DNYfe5I", "PZ-lDQFboO8", "1DmNV9C1hbY", "OQvJTdtJ2H4", "I5y0__X72p0", "9qR7uwkblbs",
              "G6GlGvlkxAQ", "6_0THN4chvY", "Njd1F0vZSm4", "BvYR0L6f2Ig", "03bSnISJMiM", "Dg_0XKD0Mf4",
              "5W7Z1C_fDaE", "VbQk4H8hgr0", "G-xst2euQUc", "MLal-t_vJPM", "BXuRRbG0Ugk", "LSi-o-IrDMs",
              "Jkswaaud0hk", "2WGyTLYerpo", "6Egk_28TtTM", "Sqr0AcuoNnk", "POKffnXeBds", "73jzhE8R1TQ",
              "OtBXNcAL_lE", "HEsqda8_d0Q", "VCslbP0mgZI", "IumbAb8q2dM"],
    "valid": ["WKA5OygbEKI", "c5xsKMxpXnc", "atnd_PF-Lbs", "bvLlb-M3UXU", "bOL9jKpeJRs", "_dI--eQ6qVU",
              "ZAIRrfG22O0", "X3j2zQgwYgE", "aiEXnCPZubE", "ZUXBRvtny7o"],
    "test": ["tmZoasNr4rU", "zhpQhgha_KU", "lXPQBPVc5Cw", "iiK8YX8oH1E", "tStelxIAHjw", "nzpVDcQ0ywM",
             "etzxEpPuc6I", "cW1FSBF59ik", "d6hH302o4v8", "k5Y_838nuGo", "pLTX3ipuDJI", "jUzDDGyPkXU",
             "f_pcplsH_V0", "yvsjCA6Y5Fc", "nbWiPyCm4g0", "rnaNMUZpvvg", "wMbj6ajWbic", "cM3Yna7AavY",
             "yDtzw_Y-7RU", "vyB00TXsimI", "dq3Nf_lMPnE", "phBUpBr1hSo", "d3_k5Xpfmik", "v0zCBqDeKcE",
             "tIrG4oNLFzE", "fvVhgmXxadc", "ob23OKe5a9Q", "cXypl4FnoZo", "vvZ4IcEtiZc", "f9O3YtZ2VfI",
             "c7UH_rxdZv4"],
}
MARKUP = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>|\{[^}]*\}")


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


def mosei_folds(path: Path) -> dict[str, list[str]]:
    """The three lists of the SDK's fold file, read as data (the file is never executed)."""
    names = {"standard_train_fold": "train", "standard_valid_fold": "valid", "standard_test_fold": "test"}
    folds = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", "") in names:
            folds[names[node.targets[0].id]] = ast.literal_eval(node.value)
    if set(folds) != set(names.values()):
        raise MmolreError(f"{path}: expected standard_train_fold, standard_valid_fold, standard_test_fold lists")
    return folds


def split_of(folds: dict[str, list[str]]) -> dict[str, str]:
    return {video: split for split, videos in folds.items() for video in videos}


def find_dir(root: Path, relative: str) -> Path:
    """The folder `relative` (e.g. Raw/Audio/Full/WAV_16000) wherever the archive put it under root."""
    hits = sorted(p for p in root.rglob(relative.split("/")[-1]) if p.is_dir() and p.as_posix().endswith(relative))
    if not hits:
        raise MmolreError(f"{root}: no folder {relative} (is the archive complete?)")
    return hits[0]


def mosi_table(folder: Path, raw_root: Path) -> tuple[pd.DataFrame, dict]:
    """One row per MOSI opinion segment. Segment k of a video is the k-th label interval in time
    order (1-based), its audio Raw/Audio/WAV_16000/Segmented/<video>_<k>.wav, its text line k
    of Raw/Transcript/Segmented/<video>.annotprocessed (`k_DELIM_TEXT`)."""
    labels = read_csd(folder / "CMU_MOSI_Opinion_Labels.csd")
    audio_dir = find_dir(folder, "Raw/Audio/WAV_16000/Segmented")
    text_dir = find_dir(folder, "Raw/Transcript/Segmented")
    splits = split_of(MOSI_FOLDS)
    rows, dropped = [], {"not in the standard folds": [], "no transcript line": [], "no audio file": []}
    for video, (features, intervals) in sorted(labels.items()):
        lines = {}
        transcript = text_dir / f"{video}.annotprocessed"
        if transcript.is_file():
            for line in transcript.read_text(errors="replace").splitlines():
                match = re.match(r"^\s*(\d+)_(?:DELIM_)?(.*)$", line)
                if match:
                    lines[int(match.group(1))] = clean_transcript(match.group(2))
        for k, i in enumerate(np.argsort(intervals[:, 0], kind="stable"), start=1):
            utterance = f"{video}_{k}"
            wav = audio_dir / f"{utterance}.wav"
            seconds = audio_duration(wav) if video in splits and lines.get(k) else None
            reason = ("not in the standard folds" if video not in splits else
                      "no transcript line" if not lines.get(k) else
                      "no audio file" if seconds is None else None)
            if reason:
                dropped[reason].append(utterance)
                continue
            rows.append({"utterance_id": utterance, "video_id": video, "dataset": "mosi", "split": splits[video],
                         "start_s": 0.0, "end_s": seconds, "audio_path": wav.relative_to(raw_root).as_posix(),
                         "text": lines[k], "sentiment": float(features[i, 0]), **{e: np.nan for e in EMOTIONS}})
    return pd.DataFrame(rows), dropped


def mosei_table(folder: Path, raw_root: Path, tolerance_s: float = 0.1) -> tuple[pd.DataFrame, dict]:
    """One row per MOSEI label segment, matched to a transcript segment
    (`VIDEO___CLIP___START___END___TEXT` in Raw/Transcript/Segmented/Combined/<video>.txt) whose start and
    end lie within `tolerance_s`; audio is the video's full WAV cut at those times."""
    labels = read_csd(folder / "CMU_MOSEI_Labels.csd")
    splits = split_of(mosei_folds(folder / "cmu_mosei_std_folds.py"))
    audio_dir = find_dir(folder, "Raw/Audio/Full/WAV_16000")
    text_dir = find_dir(folder, "Raw/Transcript/Segmented/Combined")
    rows = []
    dropped = {"not in the standard folds": [], "no audio file": [], "no transcript segment within tolerance": []}
    for video, (features, intervals) in sorted(labels.items()):
        wav = audio_dir / f"{video}.wav"
        has_audio = audio_duration(wav) is not None  # one header read per video, not per segment
        segments = []
        transcript = text_dir / f"{video}.txt"
        if transcript.is_file():
            for line in transcript.read_text(errors="replace").splitlines():
                fields = line.split("___", 4)
                if len(fields) == 5:
                    segments.append((fields[1], float(fields[2]), float(fields[3]), clean_transcript(fields[4])))
        for i in np.argsort(intervals[:, 0], kind="stable"):
            start, end = map(float, intervals[i])
            label_id = f"{video}[{start:.2f}-{end:.2f}]"
            if video not in splits:
                dropped["not in the standard folds"].append(label_id)
                continue
            if not has_audio:
                dropped["no audio file"].append(label_id)
                continue
            match = [s for s in segments if abs(s[1] - start) <= tolerance_s and abs(s[2] - end) <= tolerance_s and s[3]]
            if not match:
                dropped["no transcript segment within tolerance"].append(label_id)
                continue
            clip, seg_start, seg_end, text = match[0]
            rows.append({"utterance_id": f"{video}_{clip}", "video_id": video, "dataset": "mosei",
                         "split": splits[video], "start_s": max(seg_start, 0.0), "end_s": seg_end,
                         "audio_path": wav.relative_to(raw_root).as_posix(), "text": text,
                         "sentiment": float(features[i, 0]),
                         **{e: float(features[i, 1 + j]) for j, e in enumerate(EMOTIONS)}})
    return pd.DataFrame(rows), dropped


def count_report(dataset: str, table: pd.DataFrame, dropped: dict) -> list[str]:
    """Lines comparing the split sizes with the field's and saying where segments went."""
    got = [int((table.split == s).sum()) if len(table) else 0 for s in ("train", "valid", "test")]
    standard = STANDARD_COUNTS[dataset]
    lines = [f"{dataset}: train/valid/test = {got[0]}/{got[1]}/{got[2]} "
             f"(the field's aligned benchmark: {standard[0]}/{standard[1]}/{standard[2]})"]
    if tuple(got) != standard:
        lines.append(f"{dataset}: differs from the standard counts by "
                     f"{got[0] - standard[0]:+d}/{got[1] - standard[1]:+d}/{got[2] - standard[2]:+d}; "
                     "segments left out, by reason:")
    for reason, ids in dropped.items():
        if ids:
            lines.append(f"  {reason}: {len(ids)} (e.g. {', '.join(ids[:3])})")
    return lines
