"""The on-disk form of an imported processed file, data/raw/<dataset>/processed/ (datasets/processed.py writes it):
frames.h5 (each utterance's own frames per modality: `values` float32 and `offsets`, and `utterance_id`; MMSA's
files also `text_bert`, each utterance's BERT token ids, attention mask and segment ids, (N, 3, steps) int32),
utterances.parquet (its rows) and source.json (`Source`: the file, its release and form, what the import found).
Featurize reads it through `Frames` and `Source` without the importer's code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmolre import MmolreError
from mmolre.datasets import PROCESSED_FOLDER
MODALITY_KEYS = {"text": "text", "audio": "audio", "video": "vision"}  # mmolre's modality -> the files' key


@dataclass
class Source:
    """source.json: the file, its release, its form and what the import found."""
    file: str
    sha256: str
    bytes: int
    release: str
    form: str
    aligned: bool
    description: str
    encoders: dict[str, str]
    dims: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    neg_inf: dict[str, int] = field(default_factory=dict)
    ids_named: bool = True
    view: str = "own"  # own: each utterance's own frames | loader: the padded arrays (data.processed_view)

    @classmethod
    def read(cls, folder: Path) -> "Source":
        path = folder / PROCESSED_FOLDER / "source.json"
        if not path.is_file():
            raise MmolreError(f"{path}: missing: run `mmolre download --from-processed PATH.pkl` first")
        return cls(**json.loads(path.read_text()))


class FramesWriter:
    """frames.h5: per modality `values` (frames x dim, float32) appended utterance by utterance, `offsets` (N+1)."""

    def __init__(self, path: Path):
        self.file = h5py.File(path, "w")
        self.lengths: dict[str, list[int]] = {m: [] for m in MODALITY_KEYS}
        self.tokens: list[np.ndarray] = []

    def append_tokens(self, tokens: np.ndarray) -> None:
        """The next utterances' text_bert (n, 3, steps): token ids, attention mask, segment ids."""
        self.tokens.append(np.asarray(tokens).astype(np.int32))

    def append(self, modality: str, blocks: list[np.ndarray], path: Path) -> None:
        values = self.file.get(f"{modality}/values")
        dim = blocks[0].shape[1]
        if values is None:
            values = self.file.create_dataset(f"{modality}/values", shape=(0, dim), maxshape=(None, dim),
                                              dtype=np.float32, chunks=(max(1, 2**18 // dim), dim))
        if values.shape[1] != dim:
            raise MmolreError(f"{path}: {MODALITY_KEYS[modality]} is {dim}-d in one split, {values.shape[1]}-d in another")
        block = np.concatenate(blocks)
        values.resize(values.shape[0] + len(block), axis=0)
        values[values.shape[0] - len(block):] = block
        self.lengths[modality] += [len(b) for b in blocks]

    def close(self, ids: list[str]) -> dict[str, int]:
        """Write the offsets and the utterance ids; returns each modality's width."""
        for m, lengths in self.lengths.items():
            self.file[m].create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        self.file.create_dataset("utterance_id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        if self.tokens:
            self.file.create_dataset("text_bert", data=np.concatenate(self.tokens))
        dims = {m: int(self.file[m]["values"].shape[1]) for m in MODALITY_KEYS}
        self.file.close()
        return dims


class Frames:
    """frames.h5 read back: an utterance's own frames per modality, by utterance id."""

    def __init__(self, folder: Path):
        self.file = h5py.File(folder / PROCESSED_FOLDER / "frames.h5", "r")
        self.row = {u: i for i, u in enumerate(self.file["utterance_id"].asstr()[:])}
        self.offsets = {m: self.file[m]["offsets"][:] for m in MODALITY_KEYS}
        self.dims = {m: int(self.file[m]["values"].shape[1]) for m in MODALITY_KEYS}

    def window(self, modality: str, utterances: list[str]) -> list[np.ndarray]:
        """The frames of each of `utterances`, read in one slice spanning them (a window of the prepared table is
        a run of consecutive rows here, less any quarantined by prepare)."""
        rows, offsets = [self.row[u] for u in utterances], self.offsets[modality]
        first, last = offsets[min(rows)], offsets[max(rows) + 1]
        values = self.file[modality]["values"][first:last]
        return [values[offsets[i] - first:offsets[i + 1] - first] for i in rows]

    def tokens(self, utterances: list[str]) -> np.ndarray | None:
        """(n, 3, steps) text_bert of `utterances`, or None when the file had none."""
        if "text_bert" not in self.file:
            return None
        rows = [self.row[u] for u in utterances]
        return self.file["text_bert"][min(rows):max(rows) + 1][np.asarray(rows) - min(rows)] if rows else None

    def close(self) -> None:
        self.file.close()
