"""Your own corpus: a CSV manifest, `mmolre download --set data.dataset=custom --from-archive PATH/manifest.csv`.

Columns (by name; others are ignored):
- `audio`: the recording (any format FFmpeg reads: wav, flac, mp3, m4a, mp4, ...), relative to the
  manifest's folder or absolute; decoded to 16 kHz mono WAV on download;
- `text`: what was said;
- `id` (optional; default the row number), `speaker` and `video` (optional: the recording session; an
  utterance's group, kept in one split);
- `split` (train / valid / test), or else splits drawn by speaker (by video, by id without one):
  CUSTOM_SPLIT of the groups, in a seeded order (data.seed) [ours];
- labels in the label space `data.label_space` (default cmu; mmolre/label_spaces.py), any of them
  optional, an empty cell meaning "not labelled": cmu: `sentiment` in [-3, 3] and the six emotion
  intensities (happy, sad, anger, surprise, disgust, fear) in [0, 3]; sims: `sentiment` in [-1, 1];
  meld: `sentiment` as negative / neutral / positive (or -1, 0, 1) and `emotion` as a MELD class;
  iemocap4 / iemocap6: `emotion` as a code (neu, hap, ...); the *_vad spaces add valence, arousal,
  dominance in [1, 5].
Every row is validated like any corpus (prepare names the bad row and rule); an unreadable recording is
named in counts.txt.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from mmolre import SPLITS, MmolreError
from mmolre.datasets import CorpusTable, chosen_label_space
from mmolre.files import audio_duration, decode_audio, read_text
from mmolre.label_spaces import DEFAULT, LABEL_SPACES, SENTIMENT_CLASSES, label_columns

CORPORA = ("custom",)
LABEL_SPACE_CHOICES = tuple(LABEL_SPACES)
CUSTOM_SPLIT = (0.7, 0.15, 0.15)  # [ours] train / valid / test share of the speakers when there is no `split`
FOLDER = "custom"  # data/raw/custom/custom/: manifest.csv, WAV_16000/<id>.wav, undecodable.csv


def read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MmolreError(f"{path}: no such manifest (a CSV with columns audio, text[, id, split, speaker, labels])")
    table = pd.read_csv(io.StringIO(read_text(path, "manifest")), dtype=str, keep_default_na=False)
    missing = [c for c in ("audio", "text") if c not in table.columns]
    if missing:
        raise MmolreError(f"{path}: missing column(s) {missing}; a manifest has audio, text and optionally id, "
                          "split, speaker, video and label columns")
    if "id" not in table:
        table["id"] = [str(i) for i in range(len(table))]
    duplicated = table.id[table.id.duplicated()]
    if len(duplicated):
        raise MmolreError(f"{path}: id {duplicated.iloc[0]!r} appears more than once; ids must be unique")
    return table


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    """data/raw/custom/custom/: the manifest and each recording as 16 kHz WAV (undecodable ones listed)."""
    if len(archives) != 1:
        raise MmolreError("custom: pass the manifest once: `mmolre download --set data.dataset=custom "
                          "--from-archive PATH/manifest.csv`")
    manifest = Path(archives[0])
    table = read_manifest(manifest)
    out = target / FOLDER
    (out / "WAV_16000").mkdir(parents=True)
    shutil.copyfile(manifest, out / "manifest.csv")
    failed = []
    for row in tqdm(table.itertuples(index=False), total=len(table), desc="decode custom", unit="file"):
        source = Path(row.audio) if Path(row.audio).is_absolute() else manifest.parent / row.audio
        try:
            sf.write(out / "WAV_16000" / f"{row.id}.wav", decode_audio(source, 16000), 16000, subtype="PCM_16")
        except MmolreError as e:
            failed.append({"id": row.id, "reason": str(e)})
    if failed:
        pd.DataFrame(failed).to_csv(out / "undecodable.csv", index=False)
        print(f"download: {len(failed)} of {len(table)} recordings could not be decoded (listed in "
              f"{out / 'undecodable.csv'})")


def groups_split(groups: pd.Series, seed: int) -> pd.Series:
    """split of each row by its group: CUSTOM_SPLIT of the groups in a seeded order, at least one each."""
    names = np.array(sorted(set(groups)))
    if len(names) < 3:
        raise MmolreError(f"custom: {len(names)} speaker(s)/recording group(s) cannot make train, valid and test; "
                          "give the manifest a `split` column")
    np.random.default_rng(seed).shuffle(names)
    valid, test = (max(1, round(share * len(names))) for share in CUSTOM_SPLIT[1:])
    of = {g: "valid" if k < valid else "test" if k < valid + test else "train" for k, g in enumerate(names)}
    return groups.map(of)


def label_values(table: pd.DataFrame, space: str) -> tuple[pd.DataFrame, list[tuple[int, str, str]]]:
    """The label columns of `space` from the manifest (absent or empty: NaN), and the cells that are not
    labels at all (row, column, text): a number that does not parse, never silently NaN."""
    out, unreadable = pd.DataFrame(index=table.index), []
    sa = LABEL_SPACES[space].get("sa")
    names = dict(zip(SENTIMENT_CLASSES, sa.values)) if sa is not None and sa.kind == "classes" else {}
    for column in label_columns(space):
        raw = table[column].str.strip() if column in table else pd.Series("", index=table.index)
        if column == "emotion":
            out[column] = raw.str.lower().where(raw != "", None)
            continue
        named = raw.str.lower().map(lambda v: names.get(v, v)) if column == "sentiment" else raw
        out[column] = pd.to_numeric(named.replace("", np.nan), errors="coerce").astype(float)
        unreadable += [(i, column, raw[i]) for i in table.index[(raw != "") & out[column].isna()]]
    return out, unreadable


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    table = read_manifest(folder / FOLDER / "manifest.csv")
    undecodable = folder / FOLDER / "undecodable.csv"
    unreadable = dict(pd.read_csv(undecodable, dtype=str).values) if undecodable.is_file() else {}
    by = next((c for c in ("video", "speaker") if c in table and (table[c] != "").all()), "id")
    group = table[by]
    split = table.split.str.strip() if "split" in table else groups_split(group, int(params["data"]["seed"]))
    wav = [folder / FOLDER / "WAV_16000" / f"{i}.wav" for i in table.id]
    rows = pd.DataFrame({"utterance_id": [f"{g}_{i}" if g != i else f"{i}_0" for g, i in zip(group, table.id)],
                         "video_id": group.values, "dataset": "custom", "split": split.values, "start_s": 0.0,
                         "end_s": [audio_duration(p) for p in wav],
                         "audio_path": [p.relative_to(raw_root).as_posix() for p in wav], "text": table.text.str.strip()})
    space = chosen_label_space(params, DEFAULT, LABEL_SPACE_CHOICES)
    labels, unreadable_labels = label_values(table, space)
    rows = pd.concat([rows, labels], axis=1)
    out = CorpusTable(pd.DataFrame(), {"recording could not be decoded (undecodable.csv)": []},
                      split_from="user" if "split" in table else "mmolre",
                      notes=[f"from the manifest: {len(table)} rows; splits "
                             + ("from its `split` column" if "split" in table else
                                f"drawn by {by} ({CUSTOM_SPLIT})")])
    out.invalid = [{"utterance_id": rows.utterance_id[i], "column": column, "rule": "not a label of the space "
                    f"{space} (mmolre/datasets/custom.py lists them)", "value": text}
                   for i, column, text in unreadable_labels if table.id[i] not in unreadable]
    keep = [i not in unreadable for i in table.id]
    out.dropped["recording could not be decoded (undecodable.csv)"] = [f"{i}: {unreadable[i]}" for i in table.id
                                                                        if i in unreadable]
    out.table = rows[keep].reset_index(drop=True)
    out.report = [f"custom: train/valid/test = " + "/".join(str(int((out.table.split == s).sum())) for s in SPLITS),
                  *[f"  note: {n}" for n in out.notes],
                  *[f"  left out: {u}" for u in out.dropped["recording could not be decoded (undecodable.csv)"]]]
    return [out]
