"""The HDF5 feature file: one per dataset and encoder pair (layout in architecture.md).

Root attrs: schema_version, encoders and revisions, sample_rate, created_with, params_hash.
`text/` and `audio/`: `values` (sum of lengths x dim, float16) and `offsets` (N+1, int64);
utterance i of modality m is m/values[offsets[i]:offsets[i+1]].
`meta/`: utterance_id, split, dataset (utf-8), sentiment (N,) and emotions (N, 6), float32,
NaN where a dataset has no such label.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmolre import EMOTIONS, MmolreError

SCHEMA_VERSION = 1
MODALITIES = ("text", "audio")
_STR = h5py.string_dtype("utf-8")


class FeatureWriter:
    """Append per-utterance (T, dim) arrays modality by modality, in table order; `close()` writes offsets."""

    def __init__(self, path: Path, table: pd.DataFrame, dims: dict[str, int], attrs: dict):
        self.file = h5py.File(path, "w", track_order=False)
        self.file.attrs.update({"schema_version": SCHEMA_VERSION, **attrs})
        meta = self.file.create_group("meta")
        for column in ("utterance_id", "split", "dataset"):
            meta.create_dataset(column, data=table[column].astype(str).to_numpy(dtype=object), dtype=_STR)
        meta.create_dataset("sentiment", data=table["sentiment"].to_numpy(np.float32))
        meta.create_dataset("emotions", data=table[list(EMOTIONS)].to_numpy(np.float32))
        meta["emotions"].attrs["columns"] = list(EMOTIONS)
        self.lengths: dict[str, list[int]] = {}
        for modality, dim in dims.items():
            group = self.file.create_group(modality)
            group.create_dataset("values", shape=(0, dim), maxshape=(None, dim), dtype=np.float16,
                                 chunks=(min(4096, max(1, 2**20 // (2 * dim))), dim))
            self.lengths[modality] = []

    def append(self, modality: str, arrays: list[np.ndarray]) -> None:
        values = self.file[modality]["values"]
        block = np.concatenate(arrays).astype(np.float16)
        start = values.shape[0]
        values.resize(start + block.shape[0], axis=0)
        values[start:] = block
        self.lengths[modality].extend(len(a) for a in arrays)

    def close(self) -> None:
        n = len(self.file["meta/utterance_id"])
        for modality, lengths in self.lengths.items():
            if len(lengths) != n:
                raise RuntimeError(f"{modality}: {len(lengths)} utterances written, {n} expected")
            self.file[modality].create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        self.file.close()


class FeatureFile:
    """Read-only access; labels and offsets in memory, values read lazily (one handle per process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MmolreError(f"{self.path}: feature file not found (run `mmolre featurize`)")
        with h5py.File(self.path, "r") as f:
            if f.attrs.get("schema_version") != SCHEMA_VERSION:
                raise MmolreError(f"{self.path}: schema_version {f.attrs.get('schema_version')} "
                                  f"!= {SCHEMA_VERSION}; rerun `mmolre featurize`")
            self.attrs = dict(f.attrs)
            self.utterance_id = f["meta/utterance_id"].asstr()[:]
            self.split = f["meta/split"].asstr()[:]
            self.dataset = f["meta/dataset"].asstr()[:]
            self.sentiment = f["meta/sentiment"][:]
            self.emotions = f["meta/emotions"][:]
            self.offsets = {m: f[m]["offsets"][:] for m in MODALITIES if m in f}
            self.dims = {m: f[m]["values"].shape[1] for m in self.offsets}
        self._handle: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.utterance_id)

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():  # DataLoader workers open their own
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def lengths(self, modality: str) -> np.ndarray:
        return np.diff(self.offsets[modality])

    def get(self, modality: str, i: int) -> np.ndarray:
        start, end = self.offsets[modality][i], self.offsets[modality][i + 1]
        return self._file()[modality]["values"][start:end]

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def __getstate__(self):
        return {**self.__dict__, "_handle": None, "_pid": -1}
