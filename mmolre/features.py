"""The HDF5 feature file: one per dataset and encoder pair (layout in architecture.md).

Root attrs: schema_version, encoders and revisions, sample_rate, created_with, params_hash.
One group per featurized modality (mmolre/modalities.py: `text/`, `audio/`, `video/`): `values` (sum of
lengths x dim, float16) and `offsets` (N+1, int64); utterance i of modality m is m/values[offsets[i]:offsets[i+1]].
`video/times` (float32, one per row of values) is each frame's time in seconds from the utterance's start. An
utterance without an optional modality (a clip without a video stream) has no frames there: absent, masked.
`meta/`: utterance_id, split, dataset (utf-8), for corpora of dialogues dialogue (utf-8) and turn (int64,
its position in the dialogue), sentiment and emotions, float32, NaN where an utterance has
no such label, in the dataset's label space (root attr `label_space`; absent: "cmu", as in every file
written before label spaces existed): for cmu sentiment (N,) and emotions (N, 6) intensities; in general
(mmolre/label_spaces.py) the sa task's targets or class numbers and the er task's intensities or one-hot
classes, (N, 0) for a task the space does not have. From an MMSA processed file also `text_bert` (N, 3, steps)
int32: its BERT token ids, attention mask and segment ids, which MISA fine-tunes its BERT from.
Each modality group carries summary statistics of its values as attributes (`stats_*`: number of
utterances and frames, utterances without frames (`stats_absent`), mean, std, min, max, frames per
utterance min/mean/max).

Validation: `block_problem` is what featurize applies to every utterance it writes (finite,
non-empty, the encoder's width, |value| <= MAX_ABS); `FeatureFile` checks the structure when it
opens a file (schema version, offsets, meta lengths, label ranges), and `check_values` scans every
value for the same rules as featurize, naming the first bad utterance (`mmolre validate FILE`).
"""

from __future__ import annotations

import json

import os
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from mmolre import SPLITS, MmolreError
from mmolre.label_spaces import DEFAULT, LABEL_SPACES, Task
from mmolre.modalities import MODALITIES, featurized

SCHEMA_VERSION = 1
PROCESSED_FILE = "processed.h5"  # the feature file of a processed file's import (data.processed)
MAX_ABS = 1e4  # [ours] no encoder output we know comes near it; float16 itself overflows at 65504
LABEL_ARRAYS = {"sa": "sentiment", "er": "emotions"}  # task -> its meta/ array
_STR = h5py.string_dtype("utf-8")


def encoder_tag(name: str) -> str:
    """File-name-safe short name of an encoder: 'facebook/data2vec-audio-base' -> 'data2vec-audio-base'."""
    return re.sub(r"[^a-z0-9.-]+", "-", Path(name.rstrip("/")).name.lower()).strip("-")


def feature_path(params: dict, root: Path = Path("data/features")) -> Path:
    """data/features/<dataset>/<text encoder tag>__<audio encoder tag>[__<video encoder tag>].h5: the tags of
    the featurized modalities' encoders, in registry order; data/features/<dataset>/processed.h5 for the features of
    a processed file (data.processed, or the only file there after `download --from-processed`: no encoder runs)."""
    folder = root / params["data"]["dataset"]
    if params["data"].get("processed"):
        return folder / PROCESSED_FILE
    section = params["featurize"]
    tags = [encoder_tag(section[MODALITIES[m].encoder_param]) for m in featurized(section)
            if MODALITIES[m].encoder_param]
    encoded = folder / f"{'__'.join(tags)}.h5"
    return folder / PROCESSED_FILE if not encoded.exists() and (folder / PROCESSED_FILE).exists() else encoded


def block_problem(values: np.ndarray, dim: int, max_abs: float = MAX_ABS, optional: bool = False) -> str | None:
    """What is wrong with one utterance's (frames, dim) features, or None. No frames is no problem for an
    `optional` modality (the utterance lacks it: absent, masked)."""
    if values.ndim != 2 or values.shape[1] != dim:
        return f"shape {values.shape}, expected (frames, {dim})"
    if len(values) == 0:
        return None if optional else "no frames"
    finite = np.isfinite(values)
    if not finite.all():
        return f"{int((~finite).sum())} non-finite value(s) (NaN/Inf) in frame(s) {np.flatnonzero(~finite.all(1))[:5].tolist()}"
    peak = float(np.abs(values).max())
    if peak > max_abs:
        return f"|value| up to {peak:.4g} exceeds {max_abs:g}"
    return None


def label_array(table: pd.DataFrame, task: Task | None) -> np.ndarray:
    """One task's labels of the utterance table as the feature file stores them (module docstring)."""
    if task is None:
        return np.zeros((len(table), 0), np.float32)
    if task.kind == "classes" and not task.values:
        names = table["emotion"]
        onehot = (names.to_numpy()[:, None] == np.array(task.labels)[None, :]).astype(np.float32)
        onehot[names.isna().to_numpy()] = np.nan
        return onehot
    values = table[list(task.columns)].to_numpy(np.float32)
    return values[:, 0] if task.width == 1 else values


def label_problem(values: np.ndarray, task: Task) -> np.ndarray:
    """(N,) True where a row's stored labels break the task's rules (NaN is "no label")."""
    values = values.reshape(len(values), -1)
    known = ~np.isnan(values)
    if task.kind == "classes" and task.values:
        bad = known & ~np.isin(values, task.values)
    elif task.kind == "classes":
        bad = (known & ~np.isin(values, (0.0, 1.0))) | (known.all(1) & (np.nansum(values, 1) != 1))[:, None]
    else:
        bad = known & ((values < task.low) | (values > task.high))
    return (bad | np.isinf(values)).any(1)


class RunningStats:
    """Count, mean, std, min, max of all values and the frames per utterance, accumulated block by block."""

    def __init__(self):
        self.n, self.total, self.total_sq, self.low, self.high = 0, 0.0, 0.0, np.inf, -np.inf

    def add(self, block: np.ndarray) -> None:
        x = block.astype(np.float64)
        self.n += x.size
        self.total += float(x.sum())
        self.total_sq += float(np.square(x).sum())
        if x.size:
            self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))

    def attrs(self, lengths: list[int]) -> dict:
        mean = self.total / max(self.n, 1)
        lengths = np.asarray(lengths)
        return {"stats_utterances": len(lengths), "stats_frames": int(lengths.sum()),
                "stats_absent": int((lengths == 0).sum()), "stats_values": self.n,
                "stats_mean": mean, "stats_std": float(np.sqrt(max(self.total_sq / max(self.n, 1) - mean ** 2, 0.0))),
                "stats_min": self.low, "stats_max": self.high,
                "stats_frames_per_utterance": [int(lengths.min()), float(lengths.mean()), int(lengths.max())]
                if len(lengths) else [0, 0.0, 0]}


def extend(dataset: h5py.Dataset, block: np.ndarray) -> None:
    """Append `block` to a resizable dataset along its first axis."""
    start = dataset.shape[0]
    dataset.resize(start + block.shape[0], axis=0)
    dataset[start:] = block


class FeatureWriter:
    """Append per-utterance (T, dim) arrays modality by modality, in table order; `close()` writes offsets."""

    def __init__(self, path: Path, table: pd.DataFrame, dims: dict[str, int], attrs: dict, space: str = DEFAULT,
                 extra: dict[str, np.ndarray] | None = None):
        self.file = h5py.File(path, "w", track_order=False)
        self.file.attrs.update({"schema_version": SCHEMA_VERSION, **attrs})
        if space != DEFAULT:
            self.file.attrs["label_space"] = space
        meta = self.file.create_group("meta")
        for column in ("utterance_id", "split", "dataset"):
            meta.create_dataset(column, data=table[column].astype(str).to_numpy(dtype=object), dtype=_STR)
        for task, name in LABEL_ARRAYS.items():
            meta.create_dataset(name, data=label_array(table, LABEL_SPACES[space].get(task)))
        meta["emotions"].attrs["columns"] = list(LABEL_SPACES[space]["er"].labels if "er" in LABEL_SPACES[space] else ())
        if "utterance_index" in table:  # a corpus of dialogues: each utterance's dialogue and turn in it
            meta.create_dataset("dialogue", data=table["video_id"].astype(str).to_numpy(dtype=object), dtype=_STR)
            meta.create_dataset("turn", data=table["utterance_index"].to_numpy(np.int64))
        for name, values in (extra or {}).items():  # e.g. text_bert: MMSA's token ids, which MISA reads
            meta.create_dataset(name, data=values)
        self.lengths: dict[str, list[int]] = {}
        self.stats = {modality: RunningStats() for modality in dims}
        for modality, dim in dims.items():
            group = self.file.create_group(modality)
            group.create_dataset("values", shape=(0, dim), maxshape=(None, dim), dtype=np.float16,
                                 chunks=(min(4096, max(1, 2**20 // (2 * dim))), dim))
            self.lengths[modality] = []

    def append(self, modality: str, arrays: list[np.ndarray], times: list[np.ndarray] | None = None) -> None:
        """The next utterances' (T, dim) features of `modality`, and with `times` their frames' times."""
        block = np.concatenate(arrays).astype(np.float16)
        self.stats[modality].add(block)
        extend(self.file[modality]["values"], block)
        if times is not None:
            group = self.file[modality]
            if "times" not in group:
                group.create_dataset("times", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(4096,))
            extend(group["times"], np.concatenate(times).astype(np.float32))
        self.lengths[modality].extend(len(a) for a in arrays)

    def close(self) -> None:
        n = len(self.file["meta/utterance_id"])
        for modality, lengths in self.lengths.items():
            if len(lengths) != n:
                raise RuntimeError(f"{modality}: {len(lengths)} utterances written, {n} expected")
            self.file[modality].create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            self.file[modality].attrs.update(self.stats[modality].attrs(lengths))
        self.file.close()


class FeatureFile:
    """Read-only access; labels and offsets in memory, values read lazily (one handle per process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MmolreError(f"{self.path}: feature file not found (run `mmolre featurize`)")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("schema_version") != SCHEMA_VERSION:
                    raise MmolreError(f"{self.path}: schema_version {f.attrs.get('schema_version')} "
                                      f"!= {SCHEMA_VERSION}; rerun `mmolre featurize`")
                self.attrs = dict(f.attrs)
                self.label_space = str(self.attrs.get("label_space", DEFAULT))
                self.utterance_id = f["meta/utterance_id"].asstr()[:]
                self.split = f["meta/split"].asstr()[:]
                self.dataset = f["meta/dataset"].asstr()[:]
                self.sentiment = f["meta/sentiment"][:]
                self.emotions = f["meta/emotions"][:]
                # dialogues (meta/dialogue, meta/turn; corpora of conversations only): dialogue as an integer code
                self.dialogue = (np.unique(f["meta/dialogue"].asstr()[:], return_inverse=True)[1]
                                 if "dialogue" in f["meta"] else None)
                self.turn = f["meta/turn"][:] if "turn" in f["meta"] else None
                # MMSA's token ids, attention mask and segment ids (N, 3, steps) int32: MISA's input
                self.text_bert = f["meta/text_bert"][:] if "text_bert" in f["meta"] else None
                self.offsets = {m: f[m]["offsets"][:] for m in MODALITIES if m in f}
                self.dims = {m: f[m]["values"].shape[1] for m in self.offsets}
                self.stats = {m: {k[6:]: v for k, v in f[m].attrs.items() if k.startswith("stats_")}
                              for m in self.offsets}
                rows = {m: f[m]["values"].shape[0] for m in self.offsets}
                timed = {m: f[m]["times"].shape[0] for m in self.offsets if "times" in f[m]}
        except (OSError, KeyError) as e:  # truncated, half-copied, or not ours
            raise MmolreError(f"{self.path}: not a readable mmolre feature file ({e}); it may be truncated or "
                              "half-copied: featurize again, or fetch it again (`dvc pull`)") from None
        self._check_structure(rows, timed)
        self._handle: h5py.File | None = None
        self._pid = -1

    def _check_structure(self, rows: dict[str, int], timed: dict[str, int]) -> None:
        """Offsets start at 0, never decrease and end at the values' length; meta arrays agree; labels in range."""
        n = len(self.utterance_id)
        fail = lambda what: MmolreError(f"{self.path}: {what}; the file is damaged: featurize again")
        dialogues = (("dialogue", self.dialogue), ("turn", self.turn)) if self.dialogue is not None else ()
        for name, array in (("split", self.split), ("dataset", self.dataset), ("sentiment", self.sentiment),
                            ("emotions", self.emotions), *dialogues):
            if len(array) != n:
                raise fail(f"meta/{name} has {len(array)} rows, meta/utterance_id {n}")
        if self.label_space not in LABEL_SPACES:
            raise fail(f"label_space {self.label_space!r} is not one of {', '.join(LABEL_SPACES)}")
        for task, name in LABEL_ARRAYS.items():
            spec = self.tasks.get(task)
            shape = (n,) if spec is not None and spec.width == 1 else (n, spec.width if spec else 0)
            if getattr(self, name).shape != shape:
                raise fail(f"meta/{name} has shape {getattr(self, name).shape}, expected {shape} ({self.label_space})")
        for modality, offsets in self.offsets.items():
            if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != rows[modality]:
                raise fail(f"{modality}/offsets ({len(offsets)} entries, from {offsets[0] if len(offsets) else None} "
                           f"to {offsets[-1] if len(offsets) else None}) do not span {modality}/values "
                           f"({rows[modality]} rows) for {n} utterances")
            if (np.diff(offsets) < 0).any():
                i = int(np.flatnonzero(np.diff(offsets) < 0)[0])
                raise fail(f"{modality}/offsets decrease at utterance {self.utterance_id[i]!r}")
        for modality, n_times in timed.items():
            if n_times != rows[modality]:
                raise fail(f"{modality}/times has {n_times} entries, {modality}/values {rows[modality]} rows")
        bad_split = ~np.isin(self.split, SPLITS)
        if bad_split.any():
            i = int(np.flatnonzero(bad_split)[0])
            raise fail(f"utterance {self.utterance_id[i]!r} has split {self.split[i]!r}, not one of {list(SPLITS)}")
        for task, spec in self.tasks.items():
            values = getattr(self, LABEL_ARRAYS[task])
            bad = label_problem(values, spec)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                allowed = (f"[{spec.low}, {spec.high}]" if spec.kind != "classes" else
                           f"{list(spec.values)}" if spec.values else "one-hot")
                raise fail(f"utterance {self.utterance_id[i]!r} has {LABEL_ARRAYS[task]} "
                           f"{values.reshape(n, -1)[i].tolist()} outside {allowed}")

    def blocks(self, modality: str, values: torch.Tensor | None = None, rows: int | None = None,
               dtype: torch.dtype = torch.float32):
        """(first row, block) over all of a modality's values: read from the file, or sliced from `values`, the
        same values already loaded (a FeatureStore's, on its device). Each block is copied into one reused
        `dtype` buffer, which the caller may overwrite: nothing is allocated per block (on a CPU, glibc maps
        and unmaps every multi-MB block, which costs more than the scan itself). Blocks of 1024 rows on a CPU,
        where the buffer stays in cache, 65536 on a GPU (fewer kernel launches)."""
        total = int(self.offsets[modality][-1])
        on_gpu = values is not None and values.is_cuda
        rows = min(rows or (1 << 16 if on_gpu else 1 << 10), max(total, 1))
        buffer = torch.empty((rows, self.dims[modality]), dtype=dtype, device=values.device if on_gpu else "cpu")
        if values is None:
            dataset, raw = self._file()[modality]["values"], np.empty((rows, self.dims[modality]), np.float16)
        for start in range(0, total, rows):
            n = min(rows, total - start)
            if values is None:
                dataset.read_direct(raw, np.s_[start:start + n], np.s_[:n])
            block = buffer[:n]
            block.copy_(values[start:start + n] if values is not None else torch.from_numpy(raw[:n]))
            yield start, block

    def check_values(self, modalities=MODALITIES, max_abs: float = MAX_ABS,
                     values: dict[str, torch.Tensor] | None = None, rows: int | None = None) -> None:
        """Scan every value of `modalities` (finite, |value| <= max_abs, no utterance without frames);
        raise MmolreError naming the first bad utterance. With `values` (a FeatureStore's), the scan runs
        where they are: on a GPU, milliseconds instead of a pass over the file."""
        for modality in [m for m in modalities if m in self.offsets]:
            offsets = self.offsets[modality]
            empty = np.flatnonzero(np.diff(offsets) == 0)
            if len(empty) and not MODALITIES[modality].optional:
                raise self._bad(modality, int(empty[0]), "no frames")
            for start, block in self.blocks(modality, values[modality] if values else None, rows):
                bad = ~(block.abs_().amax(1) <= max_abs)  # NaN fails every comparison, Inf this one
                if bad.any():
                    row = start + int(bad.nonzero()[0, 0])
                    i = int(np.searchsorted(offsets, row, side="right") - 1)
                    raise self._bad(modality, i, block_problem(self.get(modality, i), self.dims[modality], max_abs))

    def _bad(self, modality: str, i: int, problem: str) -> MmolreError:
        return MmolreError(f"{self.path}: utterance {self.utterance_id[i]!r} ({modality}): {problem}; "
                           "featurize again, or find the cause with `mmolre validate`")

    def __len__(self) -> int:
        return len(self.utterance_id)

    @property
    def tasks(self) -> dict[str, Task]:
        """The tasks of the file's label space."""
        return LABEL_SPACES.get(self.label_space, {})

    def labels(self, task: str) -> np.ndarray:
        """meta/sentiment for "sa", meta/emotions for "er"."""
        return getattr(self, LABEL_ARRAYS[task])

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():  # DataLoader workers open their own
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    @property
    def view(self) -> str:
        """The data view of a processed file's features (data.processed_view): own (also every other file) or
        loader."""
        return (json.loads(str(self.attrs.get("processed", "null")) or "null") or {}).get("view", "own")

    def lengths(self, modality: str) -> np.ndarray:
        return np.diff(self.offsets[modality])

    def get(self, modality: str, i: int) -> np.ndarray:
        start, end = self.offsets[modality][i], self.offsets[modality][i + 1]
        return self._file()[modality]["values"][start:end]

    def times(self, modality: str, i: int) -> np.ndarray | None:
        """The frames' times (s from the utterance's start) of utterance i, where the modality records them."""
        group = self._file()[modality]
        return group["times"][self.offsets[modality][i]:self.offsets[modality][i + 1]] if "times" in group else None

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __getstate__(self):
        return {**self.__dict__, "_handle": None, "_pid": -1}
