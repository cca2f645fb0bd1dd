"""CMU-MOSI / CMU-MOSEI from the MMSA toolkit's release, the copy researchers hold since CMU withdrew the raw archives.

The layout: `label.csv` beside `Raw/<video_id>/<clip_id>.mp4`. MMSA's MOSI and SIMS files order their
columns video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode; its MOSEI file is
reported as video_id, clip_id, text, label, annotation, mode, label_T, label_A, label_V: columns are read
by name. `import_mmsa` decodes each clip's audio track with PyAV (FFmpeg, bundled in its wheel) to 16 kHz
mono WAV under `<dataset folder>/MMSA/`, and with `data.keep_video` copies the clip itself to
`MMSA/Video/<video_id>_<clip_id>.mp4` (the table's `video_path`: the video modality; a clip without a video
stream is an absent video there); `mmsa_table` turns label.csv into the utterance table: `label` is the
sentiment, `mode` the split (MMSA's split is the standard one).

MMSA has no emotion labels and no times. For MOSEI, `match_clips` joins every clip to its own row of the
SDK's CMU_MOSEI_Labels.csd, using every independent signal there is and never guessing:
1. the SDK's Combined transcripts, when the user has them: MMSA cut its clips at the transcript's times
   (MMSA issue #66) and `clip_id` is expected to be the segment number, whose times equal a label row's
   interval exactly (unverified on the release: the segment's text must agree with MMSA's, else the
   segment whose text does is looked for);
2. the SDK's word timings (CMU_MOSEI_TimestampedWords.csd), when the user has them: the row whose words
   read as the clip's text;
3. otherwise the clip's decoded length (the interval's length, give or take AAC framing; for a row that
   starts before 0 s, its length from 0 s or from its start) with MMSA's label equal to the row's
   sentiment (expected, not verified: MMSA-FET issue #29 reports a difference), and where several rows
   still fit, the time order of the video's clips when it accounts for every clip and row of the video.
A clip whose match is ambiguous or contradicted gets no emotions and is named in counts.txt with the
reason, as is each clip with no label row; the counts say how many clips each kind of evidence matched,
and how many matched clips have a label that differs from the row's sentiment (the sentiment stays MMSA's).
"""

from __future__ import annotations

import difflib
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from mmolre import EMOTIONS, SPLITS, MmolreError
from mmolre.datasets import (CorpusTable, kept_video, overlap_record, overlap_warning, record_sources, split_leaks,
                             video_note)
from mmolre.datasets.sdk import clean_transcript, combined_transcript, read_csd
from mmolre.fetch import sha256
from mmolre.files import audio_duration, copy_clip, decode_audio, read_text

FOLDER = "MMSA"  # under data/raw/<dataset>[/<corpus>]: label.csv, WAV_16000/<video>_<clip>.wav, Video/, undecodable.csv
LABEL_COLUMNS = ["video_id", "clip_id", "text", "label", "mode"]
TIME_SLACK_S = 0.01  # transcript times equal label intervals "exactly": to their printed precision
SAME_LABEL = 1e-3  # the label files print sentiment to 4+ decimals
SAME_TEXT = 0.9  # difflib ratio of two normalized transcripts that are the same sentence


def read_labels(path: Path) -> pd.DataFrame:
    """label.csv with ids as strings; names the file and the missing columns when it is not MMSA's."""
    if not path.is_file():
        raise MmolreError(f"{path}: no label.csv (expected the MMSA layout: label.csv beside Raw/<video_id>/"
                          "<clip_id>.mp4)")
    table = pd.read_csv(io.StringIO(read_text(path, "label file")), dtype={"video_id": str, "clip_id": str},
                        keep_default_na=False, na_values=[""])
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise MmolreError(f"{path}: missing column(s) {missing}; MMSA's label.csv has "
                          "video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode")
    return table


def import_mmsa(source: Path, target: Path, keep_video: bool = False, sample_rate: int = 16000) -> None:
    """Copy label.csv and decode every clip's audio into target/MMSA/ (with `keep_video`, copy the clip to
    Video/ too). A clip that cannot be decoded is listed in undecodable.csv (and reported by `prepare`), never
    dropped silently."""
    if not source.is_dir():
        raise MmolreError(f"data.mmsa_root: {source}: no such folder (expected MMSA's label.csv + Raw/ there)")
    labels = read_labels(source / "label.csv")
    out = target / FOLDER
    (out / "WAV_16000").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "label.csv", out / "label.csv")
    record_split(source / "label.csv", labels, target)
    failed = []
    for row in tqdm(labels.itertuples(index=False), total=len(labels), desc=f"decode {source.name}", unit="clip"):
        clip = source / "Raw" / row.video_id / f"{row.clip_id}.mp4"
        try:
            audio = decode_audio(clip, sample_rate)
        except MmolreError as e:
            failed.append({"utterance_id": f"{row.video_id}_{row.clip_id}", "file": str(clip), "reason": str(e)})
            continue
        sf.write(out / "WAV_16000" / f"{row.video_id}_{row.clip_id}.wav", audio, sample_rate, subtype="PCM_16")
        if keep_video:
            copy_clip(clip, out / "Video" / f"{row.video_id}_{row.clip_id}.mp4")
    if failed:
        pd.DataFrame(failed).to_csv(out / "undecodable.csv", index=False)
        print(f"download: {len(failed)} of {len(labels)} clips could not be decoded (listed in "
              f"{out / 'undecodable.csv'}), e.g. {failed[0]['reason']}")


def record_split(path: Path, labels: pd.DataFrame, target: Path) -> None:
    """label.csv in the dataset folder's MANIFEST.json, with whether its `mode` split keeps each video in one split
    (MMSA's split is the standard one: a video in several is said, not refused)."""
    known = labels["mode"].isin(SPLITS)
    leaks = split_leaks(labels.video_id[known], labels["mode"][known])
    if leaks:
        print(overlap_warning(f"download: {path}", leaks))
    record_sources(target, {"label.csv": {"source": f"file:{path.resolve()}", "sha256": sha256(path),
                                          "split": overlap_record(leaks)}})


@dataclass
class Evidence:
    """What there is to join MMSA's clips to the label rows: the label sequence (video -> (features,
    intervals)), and when the user has them the word timings (same shape, one word per row) and the
    Combined transcripts (video -> [(clip, start, end, text)])."""
    labels: dict
    words: dict | None = None
    transcripts: dict | None = None
    tolerance_s: float = 0.25

    @classmethod
    def of(cls, folder: Path, labels: str, words: str, tolerance_s: float) -> "Evidence":
        if not (folder / labels).is_file():
            raise MmolreError(f"{folder / labels}: missing; MOSEI from the MMSA release takes its emotions from "
                              f"it: download again with --from-archive PATH/{labels} or data.labels_hub set")
        combined = sorted(folder.rglob("Transcript/Segmented/Combined"))
        transcripts = ({p.stem: combined_transcript(p) for p in combined[0].glob("*.txt")} if combined else None)
        return cls(read_csd(folder / labels), read_csd(folder / words) if (folder / words).is_file() else None,
                   transcripts, tolerance_s)


def normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", clean_transcript(str(text)).lower()))


def same_text(a: str, b: str) -> bool:
    """Whether two normalized transcripts are the same sentence. Texts sharing fewer than half their words
    are not, without the character comparison (it is what makes the word-timing join slow)."""
    if not a or not b:
        return False
    words_a, words_b = set(a.split()), set(b.split())
    if a != b and 2 * len(words_a & words_b) < min(len(words_a), len(words_b)):
        return False
    return a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= SAME_TEXT


def row_lengths(intervals: np.ndarray) -> np.ndarray:
    """(rows, 2): each row's length from max(start, 0) and from its start (two readings of how a clip
    that starts before 0 s was cut)."""
    return np.stack([intervals[:, 1] - np.maximum(intervals[:, 0], 0), intervals[:, 1] - intervals[:, 0]], axis=1)


def length_gaps(seconds: float, intervals: np.ndarray) -> np.ndarray:
    return np.abs(row_lengths(intervals) - seconds).min(axis=1)


def by_transcript(clip, segments, intervals) -> tuple[list[int], str]:
    """Rows at the times of the clip's transcript segment (its number, checked against its text; else the
    one segment whose text is the clip's), and the evidence's name, or ([], reason)."""
    text = normalized(clip.text)
    own = [s for s in segments if s[0] == clip.clip_id]
    how = "transcript times"
    if not own or not same_text(normalized(own[0][3]), text):
        own = [s for s in segments if same_text(normalized(s[3]), text)]
        how = "transcript text and times"
        if len(own) != 1:
            return [], (f"contradicted: transcript segment {clip.clip_id} does not read as its text, and "
                        f"{len(own)} segments do")
    _, start, end, _ = own[0]
    rows = [i for i, (s, e) in enumerate(intervals) if abs(s - start) <= TIME_SLACK_S and abs(e - end) <= TIME_SLACK_S]
    return rows, how if rows else f"no label row: none at its transcript times [{start:.2f}, {end:.2f}] s"


def row_texts(words, intervals) -> list[str]:
    """Each label row's normalized text: the word timings inside its interval, silences (`sp`) dropped.
    Once per video: every clip of the video is compared with the same texts."""
    tokens, spans = words
    spoken = [t.decode() if isinstance(t, bytes) else str(t) for t in tokens[:, 0]]
    return [normalized(" ".join(w for w, (s, e) in zip(spoken, spans)
                                if w != "sp" and s >= start - TIME_SLACK_S and e <= end + TIME_SLACK_S))
            for start, end in intervals]


def by_words(clip, texts: list[str]) -> list[int]:
    """Rows whose words (`row_texts`) read as the clip's text."""
    text = normalized(clip.text)
    return [i for i, row_text in enumerate(texts) if same_text(row_text, text)]


def by_length(clip, features, intervals, tolerance_s: float) -> tuple[list[int], str]:
    """The row of the clip's length whose sentiment is its label, when no other row of the video comes
    near (within 2 x tolerance) with that sentiment; else ([], reason) or several rows (ambiguous)."""
    gaps = length_gaps(clip.seconds, intervals)
    near = np.flatnonzero(gaps <= 2 * tolerance_s)
    agree = [int(i) for i in near if abs(features[i, 0] - clip.label) <= SAME_LABEL]
    if not len(near) or gaps.min() > tolerance_s:
        return [], f"no label row: none of its length ({clip.seconds:.2f} s) in the video"
    if not agree:
        return [], (f"contradicted: {len(near)} row(s) near its length, whose sentiment "
                    f"({', '.join(f'{features[i, 0]:.3f}' for i in near[:3])}) is not its label {clip.label:.3f}")
    if len(agree) == 1 and gaps[agree[0]] > tolerance_s:
        return [], f"ambiguous: the row with its label is {gaps[agree[0]]:.2f} s off its length"
    return agree, "length and sentiment"


def by_time_order(clips: pd.DataFrame, features, intervals, tolerance_s: float) -> dict[str, int]:
    """Clip k (by segment number) -> row k (by start time), when the video's clips and rows are equally
    many and every such pair agrees in length and sentiment; else {} (the order proves nothing)."""
    if len(clips) != len(intervals) or not clips.clip_id.str.fullmatch(r"\d+").all() or clips.seconds.isna().any():
        return {}
    ordered = clips.iloc[np.argsort(clips.clip_id.astype(int).to_numpy(), kind="stable")]
    rows = np.lexsort((intervals[:, 1], intervals[:, 0]))
    for clip, i in zip(ordered.itertuples(index=False), rows):
        if length_gaps(clip.seconds, intervals[i:i + 1])[0] > tolerance_s or abs(features[i, 0] - clip.label) > SAME_LABEL:
            return {}
    return {clip.utterance: int(i) for clip, i in zip(ordered.itertuples(index=False), rows)}


def match_one(clip, features, intervals, evidence: Evidence, transcript, texts) -> tuple[list[int], str]:
    """The candidate label rows of one clip and the evidence that gave them (or why there are none);
    `transcript`: the video's Combined segments, `texts`: its rows' word-timing texts (each or None)."""
    if transcript is not None:
        rows, how = by_transcript(clip, transcript, intervals)
    elif texts is not None and (rows := by_words(clip, texts)):
        how = "word timings"
    elif np.isnan(clip.seconds):  # processed features: no audio, so no length to go by
        return [], "no label row: no row's words read as its text" if texts is not None else "no label row: no word timings"
    else:
        return by_length(clip, features, intervals, evidence.tolerance_s)
    if len(rows) > 1:  # identical intervals or texts: the sentiment may tell them apart
        rows = [i for i in rows if abs(features[i, 0] - clip.label) <= SAME_LABEL] or rows
    if len(rows) == 1 and length_gaps(clip.seconds, intervals[rows])[0] > evidence.tolerance_s:
        start, end = intervals[rows[0]]
        return [], (f"contradicted: {how} give the row [{start:.2f}, {end:.2f}] s, but its audio is "
                    f"{clip.seconds:.2f} s long")
    return rows, how


def match_video(clips: pd.DataFrame, features, intervals, evidence: Evidence, video: str) -> dict[str, tuple]:
    """utterance -> (its label row, the evidence) or (None, why not), for the clips of one video."""
    transcript = evidence.transcripts.get(video) if evidence.transcripts else None
    words = evidence.words.get(video) if evidence.words and transcript is None else None
    texts = row_texts(words, intervals) if words is not None else None
    found = {c.utterance: match_one(c, features, intervals, evidence, transcript, texts)
             for c in clips.itertuples(index=False)}
    if any(len(rows) > 1 for rows, _ in found.values()):
        order = by_time_order(clips, features, intervals, evidence.tolerance_s)
        found = {u: ([order[u]], f"{how}, time order") if len(rows) > 1 and order.get(u) in rows else (rows, how)
                 for u, (rows, how) in found.items()}
    claims = pd.Series({u: rows[0] for u, (rows, _) in found.items() if len(rows) == 1}, dtype=object)
    shared = set(claims[claims.duplicated(keep=False)].index)
    return {u: ((None, "ambiguous: its label row is matched by another clip too") if u in shared else
                (rows[0], how) if len(rows) == 1 else (None, how if not rows else f"ambiguous: {len(rows)} rows fit ({how})"))
            for u, (rows, how) in found.items()}


def match_clips(clips: pd.DataFrame, evidence: Evidence) -> dict[str, tuple[int | None, str]]:
    """utterance -> (its row in its video's label sequence, the evidence that matched it) or (None, why
    not), for MMSA clips (columns utterance, video_id, clip_id, text, label, seconds)."""
    out = {}
    for video, group in clips.groupby("video_id", sort=True):
        if video not in evidence.labels:
            out |= {u: (None, "no label row: its video is not in the label sequence") for u in group.utterance}
        else:
            out |= match_video(group, *evidence.labels[video], evidence, video)
    return out


def mmsa_table(folder: Path, raw_root: Path, corpus: str, evidence: Evidence | None = None,
               keep: tuple[str, ...] = ()) -> CorpusTable:
    """The utterance table of a corpus imported by `import_mmsa`; with `evidence` (MOSEI), each clip matched
    to its own label row carries that row's six emotions; `keep`: label.csv columns kept as they are (SIMS's
    unimodal labels; NaN where the file has none)."""
    labels = read_labels(folder / FOLDER / "label.csv")
    undecodable = folder / FOLDER / "undecodable.csv"
    unreadable = set(pd.read_csv(undecodable).utterance_id) if undecodable.is_file() else set()
    out = CorpusTable(pd.DataFrame(), {"audio could not be decoded (undecodable.csv)": [], "no audio file": [],
                                       "split (mode) not train/valid/test": []},
                      notes=[f"from the MMSA raw layout ({FOLDER}/label.csv): splits from its `mode` column, "
                             "sentiment from its `label`" + ("" if evidence else "; sentiment only (MMSA has no emotion labels)"),
                             video_note(folder / FOLDER / "Video")])
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
                     "video_path": kept_video(folder / FOLDER / "Video" / f"{utterance}.mp4", raw_root),
                     "text": clean_transcript(str(row.text)) if isinstance(row.text, str) else "",
                     "sentiment": float(row.label), **{e: np.nan for e in EMOTIONS},
                     **{c: float(getattr(row, c, np.nan)) for c in keep}})
    out.table = pd.DataFrame(rows)
    if evidence is not None and len(out.table):
        add_emotions(out, labels, evidence)
    return out


def add_emotions(out: CorpusTable, labels: pd.DataFrame, evidence: Evidence) -> None:
    """Fill the emotion columns of out.table from the matched label rows; notes say what matched how."""
    table = out.table
    clip_of = {f"{v}_{c}": c for v, c in zip(labels.video_id, labels.clip_id)}
    clips = pd.DataFrame({"utterance": table.utterance_id, "video_id": table.video_id,
                          "clip_id": table.utterance_id.map(clip_of), "text": table.text, "label": table.sentiment,
                          "seconds": table.end_s})
    matches = match_clips(clips, evidence)
    emotions, csd_sentiment = np.full((len(table), len(EMOTIONS)), np.nan), []
    for i, (utterance, video, label) in enumerate(zip(table.utterance_id, table.video_id, table.sentiment)):
        row, how = matches[utterance]
        if row is not None:
            features = evidence.labels[video][0]
            emotions[i] = features[row, 1:7]
            csd_sentiment.append((utterance, how, label, float(features[row, 0])))
    table[list(EMOTIONS)] = emotions
    out.notes += match_notes(matches, csd_sentiment, evidence)


def match_notes(matches: dict[str, tuple], agreed: list[tuple], evidence: Evidence) -> list[str]:
    """counts.txt lines: the evidence there was, clips matched by each kind, label disagreements, and every
    clip left without emotions with its reason."""
    matched = pd.Series([how for row, how in matches.values() if row is not None], dtype=object)
    missing = {u: how for u, (row, how) in matches.items() if row is None}
    rows = sum(len(f) for f, _ in evidence.labels.values())
    lines = [f"emotions from the label sequence ({rows} rows; word timings: {'yes' if evidence.words else 'no'}, "
             f"Combined transcripts: {'yes' if evidence.transcripts else 'no'}): {len(matched)} of {len(matches)} "
             "clips matched to their own row (" + ", ".join(f"by {how}: {n}" for how, n in matched.value_counts().items())
             + f"); {rows - len(matched)} rows matched by no clip"]
    independent = [(u, label, csd) for u, how, label, csd in agreed if "sentiment" not in how]
    differ = [(u, label, csd) for u, label, csd in independent if abs(label - csd) > SAME_LABEL]
    if independent:
        lines.append(f"MMSA's label differs from the row's sentiment for {len(differ)} of the {len(independent)} clips "
                     "matched without using it (the sentiment used is MMSA's label)"
                     + (": " + ", ".join(f"{u} {label:.3f} vs {csd:.3f}" for u, label, csd in differ[:5]) if differ else ""))
    if missing:
        reasons = pd.Series([how.split(":")[0] for how in missing.values()]).value_counts()
        lines.append(f"no emotions for {len(missing)} clip(s) (" + ", ".join(f"{r}: {n}" for r, n in reasons.items()) + "):")
        lines += [f"  {u}: {how}" for u, how in sorted(missing.items())]
    return lines
