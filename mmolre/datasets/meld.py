"""MELD (Poria et al., ACL 2019): utterances of Friends dialogues, each with one of seven emotions and a
sentiment class (label space `meld`).

From the archive as distributed, `MELD.Raw.tar.gz` (about 11 GB; the official README links it:
https://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz), or from the unpacked folder in the
layouts people keep (the split CSVs beside MELD.Raw/ or inside a split folder; the inner train.tar.gz,
dev.tar.gz, test.tar.gz packed or not): `mmolre download --set data.dataset=meld --from-archive PATH`.
Clips are `dia<D>_utt<U>.mp4` in train_splits/, dev_splits_complete/ and output_repeated_splits_test/ (some
test clips carry a `final_videos_test` prefix); their audio is decoded with PyAV to 16 kHz WAV, and with
`data.keep_video` each clip is copied to MELD/Video/<split>/dia<D>_utt<U>.mp4 (the video modality).

The quirks of the real files (the official repository and its issues):
- CSV header `Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,
  EndTime`, UTF-8 with CRLF; read by name. `Sr No.` is neither unique nor monotonic: an utterance is keyed on
  (split, Dialogue_ID, Utterance_ID); dialogue ids repeat across splits, so ids carry the split
  (`train_dia0_utt0`). Utterance ids have gaps: `utterance_index` is the position in the dialogue.
- Older copies store apostrophes as U+0092 (a cp1252 byte leaked into the text); they are read as ’, as in
  newer copies, so both give the same text.
- Times are quoted "00:16:16,059", also "0:10:44,769" and "00:06:47,28"; they locate the clip in the
  episode and are not used to cut anything (each clip is its own file), so a malformed or empty interval
  is named in counts.txt and changes nothing.
- One train clip is corrupt (dia125_utt3): a clip that cannot be decoded is an invalid row (prepare fails
  naming it, or quarantines it with `prepare.on_invalid: quarantine`); one dev clip is missing (dia110_utt7):
  left out; clips without a CSV row (unannotated extras) are not used; two test clips are known to be
  wrongly cut (dia38_utt4, dia220_utt0; MELD issue #20) and are kept. Each is named in counts.txt.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from mmolre import MmolreError
from mmolre.datasets import VIDEO_COLUMNS, CorpusTable, kept_video, sdk, video_note
from mmolre.files import audio_duration, copy_clip, decode_audio, read_text
from mmolre.params import keeps_video

CORPORA = ("meld",)
LABEL_SPACE = "meld"
LABEL_SPACE_CHOICES = ("meld", "meld_emotion")
EXTRA_COLUMNS = {"dialogue_id": int, "utterance_index": int, "speaker": str, **VIDEO_COLUMNS}
SPLITS = {"train": "train", "dev": "valid", "test": "test"}  # MELD's name -> mmolre's
CLIP_FOLDERS = {"train_splits": "train", "dev_splits_complete": "dev", "output_repeated_splits_test": "test"}
CLIP_NAME = re.compile(r"^(?:final_videos_test)?dia(\d+)_utt(\d+)\.mp4$")
COLUMNS = ["Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime"]
SENTIMENT = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
KNOWN_WRONG_CUTS = {("test", 38, 4), ("test", 220, 0)}  # MELD issue #20
REFERENCE_COUNTS = {"MELD's CSVs (train 9989, dev 1109, test 2610)": (9989, 1109, 2610)}
FOLDER = "MELD"  # under data/raw/meld/: <split>_sent_emo.csv, WAV_16000/<split>/dia<D>_utt<U>.wav, Video/, undecodable.csv


@dataclass
class Sink:
    """Where a scan of a MELD archive or folder puts what it finds: split -> CSV bytes, and each clip's audio
    decoded at once into `folder` (an 11 GB archive is never unpacked whole), the clip itself copied into
    `videos` when given; undecodable clips listed."""
    folder: Path
    videos: Path | None = None
    csvs: dict[str, bytes] = field(default_factory=dict)
    clips: int = 0
    failed: list[dict] = field(default_factory=list)
    progress: tqdm = None

    def add_csv(self, name: str, data: bytes, where: str) -> None:
        split = Path(name).name.removesuffix("_sent_emo.csv")
        if split not in SPLITS:
            return
        if split in self.csvs and self.csvs[split] != data:
            raise MmolreError(f"{where}: two different {split}_sent_emo.csv files; keep one of them")
        self.csvs[split] = data

    def add_clip(self, key: tuple[str, int, int], path: Path) -> None:
        """Decode one clip's audio to WAV_16000/<split>/dia<D>_utt<U>.wav, or list it as undecodable."""
        split, dialogue, utterance = key
        self.clips += 1
        self.progress.update()
        try:
            audio = decode_audio(path, 16000)
        except MmolreError as e:
            self.failed.append({"split": split, "dialogue": dialogue, "utterance": utterance,
                                "reason": str(e).split(": ", 1)[-1]})
            return
        (self.folder / split).mkdir(parents=True, exist_ok=True)
        sf.write(self.folder / split / f"dia{dialogue}_utt{utterance}.wav", audio, 16000, subtype="PCM_16")
        if self.videos is not None:
            copy_clip(path, self.videos / split / f"dia{dialogue}_utt{utterance}.mp4")


def clip_key(name: str, split: str | None) -> tuple[str, int, int] | None:
    match = CLIP_NAME.match(Path(name).name)
    return (split, int(match.group(1)), int(match.group(2))) if match and split else None


def split_of_member(name: str, default: str | None = None) -> str | None:
    """The MELD split a clip belongs to, by its folder (or the inner archive it came from)."""
    return next((CLIP_FOLDERS[p] for p in Path(name).parts if p in CLIP_FOLDERS), default)


INNER = {"train.tar.gz": "train", "dev.tar.gz": "dev", "test.tar.gz": "test", "MELD.Raw.tar.gz": None}


def scan_tar(path: Path, sink: Sink, split: str | None = None) -> None:
    """CSVs and clips of a tar (gz) archive, streamed; an inner archive (train.tar.gz, ...) is scanned in turn."""
    with tarfile.open(path) as archive, tempfile.TemporaryDirectory() as tmp:
        for member in archive:
            base = Path(member.name).name
            if not member.isfile() or base.startswith("._"):
                continue
            key = clip_key(base, split_of_member(member.name, split))
            if base.endswith("_sent_emo.csv"):
                sink.add_csv(base, archive.extractfile(member).read(), str(path))
            elif base in INNER or key:
                file = Path(tmp) / base
                with open(file, "wb") as out:
                    shutil.copyfileobj(archive.extractfile(member), out)
                scan_tar(file, sink, INNER[base]) if base in INNER else sink.add_clip(key, file)
                file.unlink()


def scan(path: Path, sink: Sink) -> None:
    """An archive file, or a folder searched through (inner archives included)."""
    if path.is_file():
        return scan_tar(path, sink)
    if not path.is_dir():
        raise MmolreError(f"--from-archive {path}: no such file or folder (MELD.Raw.tar.gz or its unpacked folder)")
    for file in sorted(path.rglob("*")):
        if not file.is_file() or file.name.startswith("._"):
            continue
        if file.name.endswith("_sent_emo.csv"):
            sink.add_csv(file.name, file.read_bytes(), str(path))
        elif file.name in INNER:
            scan_tar(file, sink, INNER[file.name])
        elif key := clip_key(file.name, split_of_member(str(file.relative_to(path)))):
            sink.add_clip(key, file)


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    """data/raw/meld/MELD/: the three CSVs as they are and every clip's audio as 16 kHz WAV."""
    if len(archives) != 1:
        raise MmolreError("meld: pass the archive or its unpacked folder once: `mmolre download --set "
                          "data.dataset=meld --from-archive PATH/MELD.Raw.tar.gz` (the official README links it)")
    out = target / FOLDER
    with tqdm(desc="decode meld", unit="clip") as progress:
        sink = Sink(out / "WAV_16000", out / "Video" if keeps_video(params) else None, progress=progress)
        scan(Path(archives[0]), sink)
    missing = [f"{s}_sent_emo.csv" for s in SPLITS if s not in sink.csvs]
    if missing or not sink.clips:
        raise MmolreError(f"{archives[0]}: not MELD's layout: {', '.join(missing) or 'no'} CSV(s) missing, "
                          f"{sink.clips} clips (dia<D>_utt<U>.mp4 in train_splits/, dev_splits_complete/, "
                          "output_repeated_splits_test/)")
    out.mkdir(parents=True, exist_ok=True)
    for split, data in sink.csvs.items():
        (out / f"{split}_sent_emo.csv").write_bytes(data)
    if sink.failed:
        pd.DataFrame(sink.failed).to_csv(out / "undecodable.csv", index=False)
        print(f"download: {len(sink.failed)} of {sink.clips} clips could not be decoded (listed in "
              f"{out / 'undecodable.csv'})")


def read_split_csv(path: Path) -> pd.DataFrame:
    """A split's CSV with every field as text; U+0092 apostrophes read as ’ (cp1252 copies too; a BOM's
    encoding, e.g. a UTF-16 re-save, is followed)."""
    text = read_text(path, "split CSV", fallback="cp1252")
    table = pd.read_csv(io.StringIO(text.replace("\x92", "\u2019")), dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise MmolreError(f"{path}: missing column(s) {missing}; MELD's header is Sr No.,Utterance,Speaker,"
                          "Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime")
    return table


def episode_seconds(stamp: str) -> float | None:
    """'00:16:16,059' (also one-digit hours, two-digit fractions) -> seconds; None when malformed."""
    match = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d+)", stamp.strip())
    if not match:
        return None
    h, m, s, fraction = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + float(f"0.{fraction}")


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    out = CorpusTable(pd.DataFrame(), {"no clip in the archive": [], "duplicate (split, Dialogue_ID, Utterance_ID)": []})
    undecodable = folder / FOLDER / "undecodable.csv"
    corrupt = ({f"{r.split}_dia{r.dialogue}_utt{r.utterance}": r.reason for r in pd.read_csv(undecodable).itertuples()}
               if undecodable.is_file() else {})
    rows, times = [], {"malformed": [], "empty": []}
    for split in SPLITS:
        table = read_split_csv(folder / FOLDER / f"{split}_sent_emo.csv")
        rows += split_rows(split, table, folder, raw_root, corrupt, out, times)
    out.table = pd.DataFrame(rows)
    out.notes += [*quirk_notes(out.table, folder, corrupt, times), video_note(folder / FOLDER / "Video")]
    out.report = sdk.count_report("meld", out, REFERENCE_COUNTS)
    return [out]


def split_rows(split: str, table: pd.DataFrame, folder: Path, raw_root: Path, corrupt: dict, out: CorpusTable,
               times: dict) -> list[dict]:
    """The utterance rows of one MELD split."""
    table = table.assign(dialogue=table.Dialogue_ID.astype(int), utterance=table.Utterance_ID.astype(int))
    table["utterance_index"] = table.groupby("dialogue").utterance.rank(method="dense").astype(int) - 1
    rows, seen = [], set()
    for row in table.itertuples(index=False):
        utterance_id = f"{split}_dia{row.dialogue}_utt{row.utterance}"
        wav = folder / FOLDER / "WAV_16000" / split / f"dia{row.dialogue}_utt{row.utterance}.wav"
        seconds = audio_duration(wav)
        reason = ("duplicate (split, Dialogue_ID, Utterance_ID)" if utterance_id in seen else
                  "no clip in the archive" if seconds is None and utterance_id not in corrupt else None)
        seen.add(utterance_id)
        if reason:
            out.dropped[reason].append(utterance_id)
            continue
        if utterance_id in corrupt:
            out.invalid.append({"utterance_id": utterance_id, "column": "audio_path",
                                "rule": f"clip could not be decoded ({corrupt[utterance_id]})", "value": str(wav.name)})
        start, end = episode_seconds(row.StartTime), episode_seconds(row.EndTime)
        if start is None or end is None:
            times["malformed"].append(utterance_id)
        elif end <= start:
            times["empty"].append(utterance_id)
        sentiment = SENTIMENT.get(row.Sentiment.strip().lower(), np.nan)
        rows.append({"utterance_id": utterance_id, "video_id": f"{split}_dia{row.dialogue}", "dataset": "meld",
                     "split": SPLITS[split], "start_s": 0.0, "end_s": seconds if seconds else np.nan,
                     "audio_path": wav.relative_to(raw_root).as_posix(), "text": " ".join(row.Utterance.split()),
                     "video_path": kept_video(folder / FOLDER / "Video" / split / wav.with_suffix(".mp4").name, raw_root),
                     "sentiment": sentiment, "emotion": row.Emotion.strip().lower(), "dialogue_id": row.dialogue,
                     "utterance_index": row.utterance_index, "speaker": row.Speaker.strip()})
    return rows


def quirk_notes(table: pd.DataFrame, folder: Path, corrupt: dict, times: dict) -> list[str]:
    """counts.txt lines naming every quirk met: corrupt clips, extras, known wrong cuts, odd times."""
    wavs = {f"{p.parent.name}_{p.stem}" for p in (folder / FOLDER / "WAV_16000").glob("*/*.wav")}
    annotated = set(table.utterance_id) if len(table) else set()
    extras = sorted(wavs - annotated)
    cuts = sorted(f"{s}_dia{d}_utt{u}" for s, d, u in KNOWN_WRONG_CUTS if f"{s}_dia{d}_utt{u}" in annotated)
    lines = [f"corrupt clip (could not be decoded; an invalid row): {u}: {why}" for u, why in sorted(corrupt.items())]
    if extras:
        lines.append(f"clips without a CSV row (unannotated extras), not used: {len(extras)}: {', '.join(extras)}")
    if cuts:
        lines.append(f"known wrongly cut clips (MELD issue #20), kept: {', '.join(cuts)}")
    for kind, ids in times.items():
        if ids:
            lines.append(f"{len(ids)} row(s) with {kind} StartTime/EndTime (not used to cut: each clip is its own "
                         f"file): {', '.join(ids[:5])}")
    return lines
