"""IEMOCAP (Busso et al., 2008): five sessions of dyadic conversations, each utterance with a categorical
emotion (annotators' majority) and valence / arousal / dominance in [1, 5]; an utterance's turn in its dialog
(`utterance_index`, by start time over all its utterances) serves model.context=dialogue.

Licensed: request it at sail.usc.edu; mmolre reads the release you hold, `mmolre download --set
data.dataset=iemocap --from-archive PATH` with PATH the IEMOCAP_full_release folder or its archive (tar, tar.gz,
zip). Only what is used is copied: Session<k>/sentences/wav/<dialog>/<utt>.wav,
Session<k>/dialog/EmoEvaluation/<dialog>.txt (summary lines `[start - end]<TAB>utt<TAB>code<TAB>[V, A, D]`)
and Session<k>/dialog/transcriptions/<dialog>.txt (`utt [start-end]: text`).

Label spaces (`data.label_space`): iemocap4 (default; the 4-class protocol: neu, hap with exc merged, ang,
sad: 5531 utterances of the full release), iemocap6 (hap, sad, neu, ang, exc, fru), and iemocap4_vad /
iemocap6_vad adding valence, arousal, dominance as regression targets. Utterances of other codes (fru, sur,
xxx, ... in the 4-class protocol) are left out and counted by code in counts.txt.
Folds: leave one session out. `data.test_session: k` makes session k the test split; valid is VALID_SHARE of
the other sessions' dialogues, drawn with data.seed [ours]; the rest is train. One fold per run: the five folds
and their mean with `python -m flows.folds` (flows/folds.py).
"""

from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mmolre import MmolreError
from mmolre.datasets import CorpusTable, chosen_label_space
from mmolre.files import audio_duration, read_text
from mmolre.label_spaces import IEMOCAP_6, LABEL_SPACES

CORPORA = ("iemocap",)
LABEL_SPACE = "iemocap4"
LABEL_SPACE_CHOICES = ("iemocap4", "iemocap6", "iemocap4_vad", "iemocap6_vad")
EXTRA_COLUMNS = {"session": int, "speaker": str, "utterance_index": int}  # utterance_index: its turn, by start time
SESSIONS = (1, 2, 3, 4, 5)
VALID_SHARE = 0.1  # [ours] of the training sessions' dialogues
CODES = {"iemocap4": {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"},
         "iemocap6": {c: c for c in IEMOCAP_6}}
REFERENCE_TOTALS = {"iemocap4": 5531, "iemocap6": 7380}  # the full release (datasets.md); 7433 in some papers
NEEDED = re.compile(r"(^|/)(Session[1-5]/sentences/wav/[^/]+/[^/]+\.wav|Session[1-5]/dialog/(EmoEvaluation|transcriptions)"
                    r"/[^/]+\.txt)$")
SUMMARY = re.compile(r"^\[(\d+\.?\d*) - (\d+\.?\d*)\]\t(\S+)\t(\S+)\t\[([\d.]+), ([\d.]+), ([\d.]+)\]")
TRANSCRIPT = re.compile(r"^(\S+) \[[\d.]+-[\d.]+\]: ?(.*)$")
FOLDER = "IEMOCAP_full_release"


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    """Copy the release's wav, EmoEvaluation and transcription files into data/raw/iemocap/IEMOCAP_full_release/."""
    if len(archives) != 1:
        raise MmolreError("iemocap: pass the release you hold once: `mmolre download --set data.dataset=iemocap "
                          "--from-archive PATH/IEMOCAP_full_release` (the folder, or its .tar.gz / .zip)")
    source, out = Path(archives[0]), target / FOLDER
    copied = copy_members(source, out)
    if not copied:
        raise MmolreError(f"{source}: no Session<k>/sentences/wav, dialog/EmoEvaluation or dialog/transcriptions "
                          "files: expected the IEMOCAP_full_release layout")
    print(f"download: {copied} files of IEMOCAP copied from {source}")


def copy_members(source: Path, out: Path) -> int:
    """The needed files of a folder, tar or zip, each under its path from Session<k>/ on."""
    def place(name: str) -> Path | None:
        match = NEEDED.search(name)
        return out / match.group(2) if match and not Path(name).name.startswith("._") else None
    count = 0
    if source.is_dir():
        for file in sorted(source.rglob("*")):
            if file.is_file() and (dest := place(file.relative_to(source).as_posix())):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, dest)
                count += 1
        return count
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [(m.filename, lambda m=m: archive.open(m)) for m in archive.infolist() if not m.is_dir()]
            return sum(write(dest, get) for name, get in members if (dest := place(name)))
    if source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            return sum(write(dest, lambda m=m: archive.extractfile(m)) for m in archive
                       if m.isfile() and (dest := place(m.name)))
    raise MmolreError(f"--from-archive {source}: not a folder, tar or zip archive")


def write(dest: Path, open_member) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open_member() as member, open(dest, "wb") as out:
        shutil.copyfileobj(member, out)
    return 1


def read_evaluations(folder: Path) -> pd.DataFrame:
    """One row per summary line of every EmoEvaluation file: utterance, session, dialog, code, V, A, D."""
    rows = []
    for path in sorted(folder.glob("Session[1-5]/dialog/EmoEvaluation/*.txt")):
        for line in read_text(path, "EmoEvaluation file", fallback="cp1252").splitlines():
            if match := SUMMARY.match(line):
                start, _, utterance, code, v, a, d = match.groups()
                rows.append({"utterance": utterance, "session": int(path.parts[-4][-1]), "dialog": path.stem,
                             "start": float(start), "code": code, "valence": float(v), "arousal": float(a),
                             "dominance": float(d)})
    if not rows:
        raise MmolreError(f"{folder}: no EmoEvaluation summary lines (`[start - end]<TAB>utt<TAB>code<TAB>[V, A, D]`)")
    table = pd.DataFrame(rows)
    table["turn"] = table.groupby("dialog").start.rank(method="first").astype(int) - 1  # over every utterance
    return table


def read_transcripts(folder: Path) -> dict[str, str]:
    texts = {}
    for path in sorted(folder.glob("Session[1-5]/dialog/transcriptions/*.txt")):
        for line in read_text(path, "transcription", fallback="cp1252").splitlines():
            if match := TRANSCRIPT.match(line.strip()):
                texts[match.group(1)] = " ".join(match.group(2).split())
    return texts


def fold_splits(dialogs: pd.Series, sessions: pd.Series, test_session: int, seed: int) -> pd.Series:
    """test: the dialogs of `test_session`; valid: VALID_SHARE of the others' dialogs (seeded); train: the rest."""
    others = np.array(sorted(set(dialogs[sessions != test_session])))
    np.random.default_rng(seed).shuffle(others)
    valid = set(others[:max(1, round(VALID_SHARE * len(others)))])
    return pd.Series(np.where(sessions == test_session, "test", np.where(dialogs.isin(valid), "valid", "train")),
                     index=dialogs.index)


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    space = chosen_label_space(params, LABEL_SPACE, LABEL_SPACE_CHOICES)
    test_session = int(params["data"].get("test_session") or 1)
    if test_session not in SESSIONS:
        raise MmolreError(f"data.test_session={test_session}: choose a session, 1 to 5")
    root = folder / FOLDER
    labels, texts = read_evaluations(root), read_transcripts(root)
    codes = CODES[space.removesuffix("_vad")]
    out = CorpusTable(pd.DataFrame(), {"no transcript line": [], "no audio file": []})
    other = labels[~labels.code.isin(codes)]
    labels = labels[labels.code.isin(codes)].reset_index(drop=True)
    labels["split"] = fold_splits(labels.dialog, labels.session, test_session, int(params["data"]["seed"]))
    rows = []
    for row in labels.itertuples(index=False):
        wav = root / f"Session{row.session}" / "sentences" / "wav" / row.dialog / f"{row.utterance}.wav"
        seconds = audio_duration(wav) if texts.get(row.utterance) else None
        reason = "no transcript line" if not texts.get(row.utterance) else "no audio file" if seconds is None else None
        if reason:
            out.dropped[reason].append(row.utterance)
            continue
        vad = {k: getattr(row, k) for k in ("valence", "arousal", "dominance")} if "sa" in LABEL_SPACES[space] else {}
        rows.append({"utterance_id": row.utterance, "video_id": row.dialog, "dataset": "iemocap", "split": row.split,
                     "start_s": 0.0, "end_s": seconds, "audio_path": wav.relative_to(raw_root).as_posix(),
                     "text": texts[row.utterance], "emotion": codes[row.code], **vad, "session": row.session,
                     "speaker": f"Ses0{row.session}{row.utterance.rsplit('_', 1)[1][0]}", "utterance_index": row.turn})
    out.table = pd.DataFrame(rows)
    out.notes.append(f"fold: session {test_session} is the test split; label space {space}; codes outside it left "
                     f"out: " + ", ".join(f"{c} {n}" for c, n in other.code.value_counts().items()))
    out.report = count_lines(out, space)
    return [out]


def count_lines(out: CorpusTable, space: str) -> list[str]:
    table = out.table
    got = {s: int((table.split == s).sum()) if len(table) else 0 for s in ("train", "valid", "test")}
    reference = REFERENCE_TOTALS[space.removesuffix("_vad")]
    lines = [f"iemocap: train/valid/test = {got['train']}/{got['valid']}/{got['test']} "
             f"({sum(got.values())} utterances; the full release has {reference} in this protocol)"]
    lines += [f"  note: {n}" for n in out.notes]
    lines += [f"  left out, {reason}: {len(ids)} (e.g. {', '.join(ids[:3])})" for reason, ids in out.dropped.items() if ids]
    return lines
