"""The processed feature files most of the field holds: MMSA's `Processed/*.pkl` and MulT's `*_data[_noalign].pkl`.

`mmolre download --set data.dataset=<mosi|mosei|sims|sims2|iemocap> --from-processed PATH.pkl` (or
`data.processed`) reads the file with a restricted unpickler (datasets/pickles.py: nothing it names is run),
recognises its form from its keys and shapes (never its name), checks its SHA-256 against the releases of
KNOWN_RELEASES, and writes data/raw/<dataset>/processed/: each utterance's own frames (frames.h5), its row
(utterances.parquet) and what was found (source.json). `prepare` reads the rows, `featurize` copies the
frames into the feature file instead of running encoders: the encoders recorded are the form's features.

Each utterance's own frames:
- MMSA (padding at the end): text is the steps of `text_bert`'s attention mask (the BERT states are not zero
  at padding); audio and vision the first `audio_lengths` / `vision_lengths` frames (authoritative: the frames
  after them are not always zero, and an all-zero frame inside them is kept). Aligned files have no lengths:
  every modality takes the text mask's steps, as MMSA's own models read them.
- MulT (zeros at the front, no lengths): each modality from its first non-zero row on (MultiBench's rule);
  an interior zero row (a dropped face) is kept.
`data.processed_view: loader` keeps instead every utterance as the file's padded arrays (all 50 text steps, all
375 / 500 audio and vision steps, junk after the lengths included): what MMSA's and MulT's loaders hand their
models, so that a field model reads exactly that (docs/field-models.md, "two views of the data").
`-inf` (MOSEI's COVAREP) is set to 0 as the reference loaders do and counted; anything else that is not
finite goes through featurize's validation. Vision is the `video` modality. Sentiment is `regression_labels`
(MMSA; its `annotations` disagree between files and are not read) or `labels` (MulT); SIMS keeps its
unimodal labels; MulT's IEMOCAP labels (N, 4, 2) are the class of the one emotion marked, in `iemocap4`.
Neither form carries MOSEI's emotions: with CMU_MOSEI_Labels.csd (`--from-archive`), MulT's ids meet its rows
by interval, MMSA's by their text against the word timings or transcripts when you have them (datasets/mmsa.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mmolre import EMOTIONS, SPLITS, MmolreError
from mmolre.datasets import (PROCESSED_FOLDER, CorpusTable, mmsa, overlap_record, overlap_warning, record_sources,
                             sdk, split_leaks)
from mmolre.datasets.pickles import safe_load
from mmolre.datasets.processed_frames import MODALITY_KEYS, FramesWriter, Source
from mmolre.fetch import sha256

MMSA_KEYS = {"text", "audio", "vision", "id", "regression_labels"}
MULT_KEYS = {"text", "audio", "vision", "labels"}
SUPPORTED = {"mmsa": ("mosi", "mosei", "sims", "sims2"), "mult": ("mosi", "mosei", "iemocap")}
# SHA-256 -> (dataset, release): MMSA's README (thuiar/MMSA @ a94e65d) and MulT's Archive.zip members
KNOWN_RELEASES = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": ("mosi", "MMSA MOSI/Processed/unaligned_50.pkl"),
    "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9": ("mosi", "MMSA MOSI/Processed/aligned_50.pkl"),
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": ("mosei", "MMSA MOSEI/Processed/unaligned_50.pkl"),
    "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791": ("mosei", "MMSA MOSEI/Processed/aligned_50.pkl"),
    "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f": ("sims", "MMSA SIMS/Processed/unaligned_39.pkl"),
    "1a113ad5edc8b9b625a7e29e6b94a97ecade70494c4e022d9f7ba5affca3bbdc": ("mosi", "MulT mosi_data.pkl"),
    "637d72469fe19333d7acfe9ca543f0f45af8004f103ed05649881b713c769e45": ("mosi", "MulT mosi_data_noalign.pkl"),
    "31007381c01dd346945ed8a64c7321239de5aaf1ef05bf112e952848a823186d": ("mosei", "MulT mosei_senti_data.pkl"),
}
ENCODERS = {  # (form, dataset) -> the features each modality holds, recorded as the feature file's encoders
    **{("mmsa", d): {"text": "mmsa-bert-base-uncased", "audio": "covarep", "video": "facet"} for d in ("mosi", "mosei")},
    **{("mmsa", d): {"text": "mmsa-bert-base-chinese", "audio": "librosa", "video": "openface2"} for d in ("sims", "sims2")},
    **{("mult", d): {"text": "glove-840b-300d", "audio": "covarep", "video": "facet"} for d in SUPPORTED["mult"]},
}
REFERENCE_COUNTS = {
    ("mmsa", "mosi"): {"MMSA's MOSI": (1284, 229, 686)}, ("mmsa", "mosei"): {"MMSA's MOSEI": (16326, 1871, 4659)},
    ("mmsa", "sims"): {"MMSA's SIMS": (1368, 456, 457)}, ("mmsa", "sims2"): {"CH-SIMS v2 (supervised)": (2722, 647, 1034)},
    ("mult", "mosi"): {"MulT's MOSI": (1284, 229, 686)}, ("mult", "mosei"): {"MulT's MOSEI": (16265, 1869, 4643)},
    ("mult", "iemocap"): {"MulT's IEMOCAP (MulT#6)": (2717, 789, 938), "MulT's IEMOCAP (CMU SDK#200)": (2717, 798, 938)},
}
MULT_IEMOCAP = ("neu", "hap", "sad", "ang")  # the order of MulT's (N, 4, 2) labels: Neutral, Happy, Sad, Angry
UNIMODAL = {"label_T": "regression_labels_T", "label_A": "regression_labels_A", "label_V": "regression_labels_V"}
BATCH = 256  # utterances converted at a time: a split's frames are never all copied at once


@dataclass
class Form:
    name: str          # mmsa | mult
    aligned: bool
    fet: bool = False  # MMSA-FET's output (a top-level `config`)

    def describe(self) -> str:
        kind = {"mmsa": "MMSA-FET output" if self.fet else "MMSA processed", "mult": "MulT"}[self.name]
        return f"{kind}, {'aligned' if self.aligned else 'unaligned'}"


def found(data) -> str:
    """What a pickle holds, for the line that refuses it."""
    if not isinstance(data, dict):
        return f"a {type(data).__name__}"
    train = data.get("train")
    inner = (f"train keys {sorted(map(str, train))}" if isinstance(train, dict) else
             f"train is a {type(train).__name__}" + (" (MAG-BERT's form?)" if isinstance(train, list) else ""))
    return f"top-level keys {sorted(map(str, data))}, {inner}"


def recognise(data, path: Path) -> Form:
    """The form of an unpickled file, from its keys and shapes; MmolreError naming what was found."""
    splits = isinstance(data, dict) and set(data) - {"config"} == set(SPLITS) and all(isinstance(data[s], dict) for s in SPLITS)
    keys = set(data["train"]) if splits else set()
    if splits and MMSA_KEYS <= keys:
        return Form("mmsa", aligned="audio_lengths" not in keys, fet="config" in data)
    if splits and MULT_KEYS <= keys <= MULT_KEYS | {"id"} and np.ndim(data["train"]["labels"]) == 3:
        return Form("mult", aligned=np.shape(data["train"]["audio"])[1] == np.shape(data["train"]["text"])[1])
    raise MmolreError(f"{path}: neither MMSA's processed form (splits train/valid/test with {sorted(MMSA_KEYS)}) nor "
                      f"MulT's (splits with {sorted(MULT_KEYS)} and 3-d labels): found {found(data)}")


def release_of(digest: str, dataset: str, path: Path) -> str:
    """`verified <release>` for a known file, `unknown copy` otherwise; a known file of another dataset is refused."""
    if digest not in KNOWN_RELEASES:
        return "unknown copy"
    own, release = KNOWN_RELEASES[digest]
    if own != dataset:
        raise MmolreError(f"{path} is {release} (SHA-256 verified), a {own} file: set data.dataset={own}, not {dataset}")
    return f"verified {release}"


def as_text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_id(raw, intervals: bool = False) -> dict | None:
    """video, utterance id and interval of one id: MMSA's "<video>$_$<clip>", MulT's MOSEI triple (video, start,
    end; `intervals`) or MOSI row whose first field is "<video>_<clip>"; None for an id that names nothing."""
    fields = [as_text(f) for f in raw] if isinstance(raw, (tuple, list, np.ndarray)) else [as_text(raw)]
    fields = [f.strip() for f in fields]
    if intervals and len(fields) == 3:
        try:
            start, end = float(fields[1]), float(fields[2])
            return {"video_id": fields[0], "utterance_id": f"{fields[0]}_{fields[1]}_{fields[2]}",
                    "start": start, "end": end} if fields[0] else None
        except ValueError:
            pass
    first = fields[0] if fields else ""
    video, sep, clip = first.partition("$_$") if "$_$" in first else first.rpartition("_")
    if not (sep and video and clip):
        return None
    return {"video_id": video, "utterance_id": f"{video}_{clip}", "clip_id": clip, "start": np.nan, "end": np.nan}


def split_ids(arrays: dict, split: str, n: int, intervals: bool) -> tuple[list[dict], bool]:
    """Each row's id fields, and whether the file's ids named them; ids that are absent, unparseable or repeated
    name the rows by split and position instead (their splits' speaker independence cannot then be checked)."""
    raw = arrays.get("id")
    parsed = [parse_id(r, intervals) for r in raw] if raw is not None and len(raw) == n else []
    if parsed and all(parsed) and len({p["utterance_id"] for p in parsed}) == n:
        return parsed, True
    return [{"video_id": split, "utterance_id": f"{split}_{i:06d}", "start": np.nan, "end": np.nan}
            for i in range(n)], False


def first_nonzero(x: np.ndarray) -> np.ndarray:
    """(B,) the first step of each (B, T, d) sequence that is not all zero (T where none is)."""
    nonzero = np.any(x != 0, axis=2)
    return np.where(nonzero.any(1), nonzero.argmax(1), x.shape[1])


def lengths_of(arrays: dict, key: str, n: int, steps: int, path: Path, split: str) -> np.ndarray:
    """MMSA's `<key>` (lengths; an array or a list) checked to lie in [0, steps]."""
    lengths = np.asarray(arrays[key], dtype=np.float64).reshape(-1)
    if len(lengths) != n:
        raise MmolreError(f"{path}: {split}/{key} has {len(lengths)} entries for {n} utterances")
    bad = np.flatnonzero((lengths < 0) | (lengths > steps) | (lengths != np.round(lengths)))
    if len(bad):
        raise MmolreError(f"{path}: {split}/{key}[{bad[0]}] = {lengths[bad[0]]:g} is not a length within the "
                          f"{steps} steps stored ({len(bad)} such rows)")
    return lengths.astype(np.int64)


def text_steps(arrays: dict, n: int) -> np.ndarray:
    """MMSA: each utterance's text steps, from text_bert's attention mask (channel 1); without text_bert (MMSA-FET's
    GloVe text), the steps up to the last non-zero one."""
    if "text_bert" in arrays:
        return np.asarray(arrays["text_bert"])[:, 1, :].astype(bool).sum(1).astype(np.int64)
    text = np.asarray(arrays["text"])
    return text.shape[1] - first_nonzero(text[:, ::-1])  # the padding is at the end: read from it


def spans(form: Form, arrays: dict, n: int, path: Path, split: str, view: str = "own"
          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """modality -> (first step, end step) of each utterance's own frames (MulT's, front padding, are found batch
    by batch: `first_nonzero`), or in the loader's view every stored step of the padded arrays."""
    if view == "loader":
        return {m: (np.zeros(n, np.int64), np.full(n, np.shape(arrays[key])[1], np.int64))
                for m, key in MODALITY_KEYS.items()}
    if form.name == "mult":
        return {}
    text = text_steps(arrays, n)
    out = {"text": (np.zeros(n, np.int64), text)}
    for m in ("audio", "video"):
        key, steps = MODALITY_KEYS[m], np.shape(arrays[MODALITY_KEYS[m]])[1]
        ends = np.minimum(text, steps) if form.aligned else lengths_of(arrays, f"{key}_lengths", n, steps, path, split)
        out[m] = (np.zeros(n, np.int64), ends)
    return out


def labels_of(form: Form, dataset: str, arrays: dict, n: int, path: Path, split: str) -> dict[str, list]:
    """The label columns of a split's rows: sentiment (and SIMS's unimodal labels), or MulT IEMOCAP's class."""
    if form.name == "mmsa":
        out = {"sentiment": np.asarray(arrays["regression_labels"], np.float64).reshape(n)}
        if dataset in ("sims", "sims2"):
            out |= {column: np.asarray(arrays[key], np.float64).reshape(n) if key in arrays else np.full(n, np.nan)
                    for column, key in UNIMODAL.items()}
        return out
    labels = np.asarray(arrays["labels"], np.float64)
    if dataset != "iemocap":
        return {"sentiment": labels.reshape(n, -1)[:, 0]}
    if labels.shape != (n, len(MULT_IEMOCAP), 2):
        raise MmolreError(f"{path}: {split}/labels has shape {labels.shape}; MulT's IEMOCAP labels are "
                          f"({n}, 4, 2), one-hot pairs for {', '.join(MULT_IEMOCAP)}")
    marked = labels.argmax(-1) == 1  # (N, 4): the emotions whose pair says "yes"
    return {"emotion": [MULT_IEMOCAP[int(m.argmax())] if m.sum() == 1 else None for m in marked]}


def modality_batch(form: Form, arrays: dict, m: str, rows: slice, known: dict) -> tuple[list[np.ndarray], int]:
    """The own frames of the rows' utterances for modality m (float32, -inf set to 0) and how many -inf there were."""
    try:
        x = np.asarray(arrays[MODALITY_KEYS[m]][rows], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise MmolreError(f"{MODALITY_KEYS[m]}: not a numeric array ({e})") from None
    if x.ndim != 3:
        raise MmolreError(f"{MODALITY_KEYS[m]}: expected (utterances, steps, dim) arrays, got shape {x.shape}")
    starts, ends = (known[m][0][rows], known[m][1][rows]) if m in known else (first_nonzero(x), np.full(len(x), x.shape[1]))
    blocks = [x[k, s:e] for k, (s, e) in enumerate(zip(starts, ends))]
    neg_inf = 0
    for block in blocks:
        bad = np.isneginf(block)
        neg_inf += int(bad.sum())
        block[bad] = 0.0
    return blocks, neg_inf


@dataclass
class SplitPlan:
    """What a split holds before any frame is copied: its rows (ids, labels, text) and each modality's spans."""
    rows: list[dict]
    spans: dict[str, tuple[np.ndarray, np.ndarray]]
    named: bool  # whether its ids named the rows


def plan_split(form: Form, dataset: str, split: str, arrays: dict, path: Path, view: str = "own") -> SplitPlan:
    """A split's rows and spans, checked (counts, ids, labels, lengths) before anything is written."""
    n = len(arrays["regression_labels" if form.name == "mmsa" else "labels"])
    for key in MODALITY_KEYS.values():
        if len(arrays[key]) != n:
            raise MmolreError(f"{path}: {split}/{key} has {len(arrays[key])} utterances, its labels {n}")
    ids, named = split_ids(arrays, split, n, intervals=form.name == "mult" and dataset == "mosei")
    labels = labels_of(form, dataset, arrays, n, path, split)
    texts = arrays.get("raw_text")
    rows = [{**ids[i], "split": split, "text": as_text(texts[i]).strip() or None if texts is not None else None,
             **{column: values[i] for column, values in labels.items()}} for i in range(n)]
    return SplitPlan(rows, spans(form, arrays, n, path, split, view), named)


def write_split(form: Form, split: str, arrays: dict, plan: SplitPlan, path: Path, writer: FramesWriter,
                progress: tqdm) -> dict[str, int]:
    """Write a split's frames batch by batch; returns the -inf set to 0 per modality."""
    neg_inf = dict.fromkeys(MODALITY_KEYS, 0)
    for start in range(0, len(plan.rows), BATCH):
        rows = slice(start, min(len(plan.rows), start + BATCH))
        for m in MODALITY_KEYS:
            try:
                blocks, count = modality_batch(form, arrays, m, rows, plan.spans)
            except MmolreError as e:
                raise MmolreError(f"{path}: {split}/{e}") from None
            writer.append(m, blocks, path)
            neg_inf[m] += count
        if "text_bert" in arrays:  # MISA fine-tunes BERT from them (docs/field-models.md)
            writer.append_tokens(np.asarray(arrays["text_bert"][rows]))
        progress.update(rows.stop - rows.start)
    return neg_inf


def evidence_files(data: dict, archives, downloads: Path, target: Path) -> None:
    """MOSEI: the label sequence (and the word timings, the raw archive's transcripts) when the user has them,
    into the dataset folder for the emotions; never fetched for that alone."""
    from mmolre.datasets import mosei

    names = (mosei.LABELS, *mosei.MMSA_EVIDENCE) if data["dataset"] == "mosei" else ()
    sdk.check_archive_names(archives, names, f"{data['dataset']} from processed features")
    given = {Path(a).name for a in archives}
    files = {n: mosei.FILES[n] for n in names if n in given or (downloads / n).exists()}
    if files:
        cached, manifest, pending = sdk.get_files(files, data, downloads, archives)
        sdk.unpack(cached, manifest, pending, target, mosei.TRANSCRIPTS_ONLY)


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    """data/raw/<dataset>/processed/ from the pickle at data.processed (see the module's docstring)."""
    dataset, path = params["data"]["dataset"], Path(params["data"]["processed"]).expanduser()
    if not path.is_file():
        raise MmolreError(f"data.processed: {path}: no such file")
    readable = sorted({d for datasets in SUPPORTED.values() for d in datasets})
    if dataset not in readable:
        raise MmolreError(f"data.processed: processed feature files are read for {', '.join(readable)}, not "
                          f"data.dataset={dataset}")
    evidence_files(params["data"], archives, downloads, target)
    print(f"download: checking {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    digest = sha256(path)
    data = safe_load(path)
    form = recognise(data, path)
    if dataset not in SUPPORTED[form.name]:
        raise MmolreError(f"{path}: a {form.describe()} file; {form.name} files are read for "
                          f"{', '.join(SUPPORTED[form.name])}, not data.dataset={dataset}")
    source = Source(str(path.resolve()), digest, path.stat().st_size, release_of(digest, dataset, path), form.name,
                    form.aligned, form.describe(), ENCODERS[(form.name, dataset)],
                    view=params["data"].get("processed_view", "own"))
    out = target / PROCESSED_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    rows = write_frames(form, dataset, data, path, out, source)
    rows.to_parquet(out / "utterances.parquet", index=False)
    (out / "source.json").write_text(json.dumps(source.__dict__, indent=2) + "\n")
    leaks = split_leaks(rows.video_id, rows.split) if source.ids_named else []
    if leaks:  # the file's own split is the standard one: kept, and said (prepare lists every video in counts.txt)
        print(overlap_warning(f"download: {path.name}", leaks))
    record_manifest(target, path, source, leaks)
    print(f"download: {path.name}: {source.description}, {source.release}; " + ", ".join(
        f"{s} {source.counts[s]}" for s in SPLITS) + f"; -inf set to 0: {sum(source.neg_inf.values())}")


def write_frames(form: Form, dataset: str, data: dict, path: Path, out: Path, source: Source) -> pd.DataFrame:
    """Every split planned and checked, then frames.h5 written split by split, each split's arrays freed once
    written; returns the rows, fills `source`."""
    plans = {split: plan_split(form, dataset, split, data[split], path, source.view) for split in SPLITS}
    rows = pd.DataFrame([r for plan in plans.values() for r in plan.rows])
    source.ids_named = all(plan.named for plan in plans.values())
    writer = FramesWriter(out / "frames.h5")
    try:
        with tqdm(total=len(rows), desc=f"import {path.name}", unit="utt") as progress:
            for split, plan in plans.items():
                arrays = data.pop(split)
                neg_inf = write_split(form, split, arrays, plan, path, writer, progress)
                del arrays
                source.counts[split] = len(plan.rows)
                source.neg_inf = {m: source.neg_inf.get(m, 0) + c for m, c in neg_inf.items()}
    except BaseException:
        writer.file.close()
        raise
    source.dims = writer.close(rows.utterance_id.tolist())
    return rows


def record_manifest(target: Path, path: Path, source: Source, leaks: list[str]) -> None:
    """The dataset folder's MANIFEST.json gains the pickle: where from, its SHA-256, verified or not, and whether
    its split keeps each video in one split (`leaks`: the videos it does not)."""
    record_sources(target, {path.name: {"source": f"file:{source.file}", "sha256": source.sha256,
                                        "size": source.bytes, "release": source.release,
                                        "split": overlap_record(leaks)}})


def extra_columns(dataset: str) -> dict[str, type]:
    """The utterance table's corpus columns a processed file fills: SIMS's unimodal labels."""
    return {column: float for column in UNIMODAL} if dataset in ("sims", "sims2") else {}


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    """The utterance rows of an imported processed file, with MOSEI's emotions where the label sequence is there."""
    dataset, source = params["data"]["dataset"], Source.read(folder)
    rows = pd.read_parquet(folder / PROCESSED_FOLDER / "utterances.parquet")
    out = CorpusTable(rows.assign(dataset=dataset, start_s=rows.start.clip(lower=0).fillna(0.0), end_s=rows.end,
                                  audio_path=None, text=rows.text.astype(object)))
    out.notes += [f"from processed features: {source.description} ({Path(source.file).name}, {source.release}; "
                  f"SHA-256 {source.sha256[:16]}...); no encoder runs: the features are the file's ("
                  + ", ".join(f"{m} {source.encoders[m]} {source.dims[m]}-d" for m in MODALITY_KEYS) + ")",
                  "-inf set to 0 (as the reference loaders do): " + ", ".join(f"{m} {c}" for m, c in source.neg_inf.items())]
    if source.view == "loader":
        out.notes.append("the loader's view (data.processed_view): every utterance is the file's padded arrays, "
                         "padding and the frames after its lengths included, as MMSA's and MulT's loaders hand them")
    if not source.ids_named:
        out.notes.append("the file's ids are absent or repeated: rows are named by split and position, and whether "
                         "a speaker sits in two splits cannot be checked")
    if "emotion" in rows:
        unmarked = rows.utterance_id[rows.emotion.isna()].tolist()
        out.invalid += [{"utterance_id": u, "column": "emotion", "rule": "labels mark no emotion or several",
                         "value": None} for u in unmarked]
    if dataset == "mosei":
        out.notes += add_emotions(out.table, folder, source)
    out.report = sdk.count_report(dataset, out, REFERENCE_COUNTS[(source.form, dataset)]) + [
        f"  note: {line}" for line in sdk.source_notes(folder)]
    return [out]


def add_emotions(table: pd.DataFrame, folder: Path, source: Source) -> list[str]:
    """MOSEI's six emotions into `table` from CMU_MOSEI_Labels.csd, by the rules of the MMSA raw join: MulT's ids
    by interval, MMSA's by text (word timings or transcripts); counts.txt lines saying what matched."""
    from mmolre.datasets import mosei

    table[list(EMOTIONS)] = np.nan
    if not (folder / mosei.LABELS).is_file():
        return [f"no emotions: {mosei.LABELS} was not given (download again with --from-archive PATH/{mosei.LABELS})"]
    evidence = mmsa.Evidence.of(folder, mosei.LABELS, mosei.WORDS, tolerance_s=0.0)
    if source.form == "mult":
        matches = {u: by_interval(v, s, e, evidence.labels)
                   for u, v, s, e in zip(table.utterance_id, table.video_id, table.start, table.end)}
    elif evidence.words is None and evidence.transcripts is None:
        return [f"no emotions: MMSA's ids carry no times; give {mosei.WORDS} (or the raw archive's transcripts) "
                "with --from-archive to match each clip by its text"]
    else:
        clips = pd.DataFrame({"utterance": table.utterance_id, "video_id": table.video_id, "clip_id": table.clip_id,
                              "text": table.text.fillna(""), "label": table.sentiment, "seconds": np.nan})
        matches = mmsa.match_clips(clips, evidence)
    for i, (utterance, video) in enumerate(zip(table.utterance_id, table.video_id)):
        row, _ = matches[utterance]
        if row is not None:
            table.loc[i, list(EMOTIONS)] = evidence.labels[video][0][row, 1:7]
    return mmsa.match_notes(matches, [], evidence)


def by_interval(video: str, start: float, end: float, labels: dict) -> tuple[int | None, str]:
    """The label row of `video` whose interval is the id's (to the printed precision), or (None, why not)."""
    if video not in labels:
        return None, "no label row: its video is not in the label sequence"
    intervals = labels[video][1]
    rows = np.flatnonzero((np.abs(intervals[:, 0] - start) <= mmsa.TIME_SLACK_S)
                          & (np.abs(intervals[:, 1] - end) <= mmsa.TIME_SLACK_S))
    if len(rows) == 1:
        return int(rows[0]), "interval"
    return None, (f"no label row: none at its interval [{start:.3f}, {end:.3f}] s" if not len(rows) else
                  f"ambiguous: {len(rows)} rows at its interval")
