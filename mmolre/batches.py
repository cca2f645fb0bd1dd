"""Batches from the HDF5 feature file: length buckets, padding with masks, two ways to read.

- `FeatureStore` (in memory): each modality's `values` loaded once into one contiguous float16
  array (pinned host memory, or on the GPU), with its offsets; a whole padded batch is one
  vectorised gather per modality, no per-utterance Python work.
- `FeatureDataset` (lazy): one h5py slice per utterance and modality, for files that do not fit,
  read in DataLoader workers (each with its own handle).
Both give the same batches, value for value, with features as stored (float16): the consumer casts
them to float32 where the model runs (`to_device`), so on a GPU the cast happens there.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmolre import MmolreError
from mmolre.features import FeatureFile
from mmolre.modalities import MODALITIES


class FeatureDataset(Dataset):
    """Utterances `indices` of a FeatureFile: modality -> (T, dim) float32 plus labels."""

    def __init__(self, features: FeatureFile, indices: np.ndarray, modalities: tuple[str, ...]):
        self.features, self.indices, self.modalities = features, np.asarray(indices), modalities

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        item = {m: torch.from_numpy(self.features.get(m, i)) for m in self.modalities}  # float16 as stored
        item["sentiment"] = torch.tensor(self.features.sentiment[i])
        item["emotions"] = torch.from_numpy(self.features.emotions[i])
        item["index"] = i
        if self.features.dialogue is not None:
            item["dialogue"], item["turn"] = int(self.features.dialogue[i]), int(self.features.turn[i])
        if self.features.text_bert is not None:
            item["text_bert"] = torch.from_numpy(self.features.text_bert[i])
        return item

    def lengths(self) -> np.ndarray:
        """Total positions per item over the modalities: what a batch pads."""
        return sum(self.features.lengths(m)[self.indices] for m in self.modalities)


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within pools of `pool` batches, shuffle the batches. A batch of
    fewer than `smallest` utterances is skipped (a field model's BatchNorm cannot train on one).

    Without `shuffle`, batches follow length order (deterministic evaluation). With `world` > 1
    (DDP), every rank forms the same global batches and takes its share `batch[rank::world]`;
    a global batch smaller than `world` is skipped on every rank.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                 rank: int = 0, world: int = 1, smallest: int = 1):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = np.asarray(lengths), batch_size, shuffle, seed, pool
        self.rank, self.world, self.smallest = rank, world, smallest
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for batch in self.global_batches():
            if len(batch) >= max(self.world, self.smallest):
                yield batch[self.rank::self.world].tolist()

    def global_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n)
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, n, span):
            chunk = order[start:start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [batches[b] for b in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class DialogueSampler(Sampler[list[int]]):
    """Whole dialogues per batch, each in turn order (for model.context=dialogue): dialogues packed up to
    `batch_size` utterances, a longer one alone in its batch. With `shuffle`, the dialogues' order is drawn
    anew each epoch (seeded); without, it is the dialogues' order. Under DDP every rank forms the same global
    batches and takes every `world`-th dialogue of each; a batch of fewer dialogues than `world` is skipped."""

    def __init__(self, dialogue: np.ndarray, turn: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world: int = 1):
        order = np.lexsort((turn, dialogue))  # by dialogue, then turn: one sort, not one scan per dialogue
        self.groups = np.split(order, np.flatnonzero(np.diff(dialogue[order])) + 1) if len(order) else []
        self.batch_size, self.shuffle, self.seed, self.rank, self.world = batch_size, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[np.ndarray]]:
        order = (np.random.default_rng(self.seed + self.epoch).permutation(len(self.groups)) if self.shuffle
                 else range(len(self.groups)))
        batches, current, size = [], [], 0
        for g in order:
            if current and size + len(self.groups[g]) > self.batch_size:
                batches.append(current)
                current, size = [], 0
            current.append(self.groups[g])
            size += len(self.groups[g])
        return batches + ([current] if current else [])

    def __iter__(self):
        for batch in self.global_batches():
            if len(batch) >= self.world:
                yield np.concatenate(batch[self.rank::self.world]).tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(T_i, dim)] -> (B, T_max, dim) zero-padded, and a (B, T_max) mask, True = real position. At least one
    position: a batch in which every sample lacks the modality gets one padding position, all masked."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    if padded.shape[1] == 0:
        padded = padded.new_zeros((len(sequences), 1, padded.shape[2]))
    return padded, torch.arange(padded.shape[1])[None] < lengths[:, None]


def collate(items: list[dict]) -> dict:
    batch = {"sentiment": torch.stack([it["sentiment"] for it in items]),
             "emotions": torch.stack([it["emotions"] for it in items]),
             "index": torch.tensor([it["index"] for it in items])}
    if "dialogue" in items[0]:
        batch["dialogue"], batch["turn"] = (torch.tensor([it[k] for it in items]) for k in ("dialogue", "turn"))
    if "text_bert" in items[0]:
        batch["text_bert"] = torch.stack([it["text_bert"] for it in items])
    for m in MODALITIES:
        if m in items[0]:
            batch[m], batch[f"{m}_mask"] = pad([it[m] for it in items])
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch on `device`, features cast from their stored float16 to float32 there."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in moved.items()}


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks for reuse instead of unmapping them. Each padded batch is tens of
    MB: by default glibc maps and unmaps it per batch, and faulting its pages in again every time
    costs more than the gather itself (`python benchmarks/loader.py`; figures in benchmarks/RESULTS.md).
    No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    except (OSError, AttributeError):
        pass


class FeatureStore:
    """A feature file's values in memory: per modality one contiguous (frames + 1, dim) float16 tensor
    (the last row zeros, read by padding positions) and its offsets, on `device` (cuda: batches never
    leave the GPU), or in pinned host memory when CUDA is there. Labels are tensors beside them."""

    def __init__(self, features: FeatureFile, modalities: tuple[str, ...], device: torch.device | str = "cpu"):
        device = torch.device(device)
        self.modalities, self.device = modalities, device
        if device.type == "cpu":
            keep_freed_memory()
        handle = features._file()
        self.values, self.offsets, self.lengths, self.pad_row = {}, {}, {}, {}
        for m in modalities:
            dataset = handle[m]["values"]
            rows = dataset.shape[0]
            host = torch.empty((rows + 1, dataset.shape[1]), dtype=torch.float16,
                               pin_memory=torch.cuda.is_available() and device.type == "cpu")
            if rows:
                dataset.read_direct(host.numpy(), np.s_[:], np.s_[:rows])  # read in place: the values held once
            host[rows] = 0
            self.values[m] = host.to(device) if device.type == "cuda" else host
            self.pad_row[m] = rows
            self.offsets[m] = torch.from_numpy(features.offsets[m]).to(device)
            self.lengths[m] = features.lengths(m)
        self.sentiment = torch.from_numpy(features.sentiment).to(device)
        self.emotions = torch.from_numpy(features.emotions).to(device)
        self.dialogue = (None if features.dialogue is None else
                         (torch.from_numpy(features.dialogue).to(device), torch.from_numpy(features.turn).to(device)))
        self.text_bert = None if features.text_bert is None else torch.from_numpy(features.text_bert).to(device)

    def batch(self, index: list[int] | np.ndarray) -> dict:
        """The padded batch of utterances `index`, equal to `collate` over the lazy items: per modality
        one gather of (B x T) rows."""
        longest = {m: max(1, int(self.lengths[m][index].max())) for m in self.modalities}  # on the host: no GPU sync
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.device)
        batch = {"sentiment": self.sentiment[index], "emotions": self.emotions[index], "index": index}
        if self.dialogue is not None:
            batch["dialogue"], batch["turn"] = self.dialogue[0][index], self.dialogue[1][index]
        if self.text_bert is not None:
            batch["text_bert"] = self.text_bert[index]
        for m in self.modalities:
            start = self.offsets[m][index]
            lengths = self.offsets[m][index + 1] - start
            steps = torch.arange(longest[m], device=self.device)
            mask = steps[None] < lengths[:, None]  # (B, T)
            rows = torch.where(mask, start[:, None] + steps[None], self.pad_row[m])
            values = self.values[m]
            batch[m] = values.index_select(0, rows.flatten()).view(*rows.shape, values.shape[1])  # (B, T, dim)
            batch[f"{m}_mask"] = mask
        return batch


class StoreLoader:
    """Iterates the batches of a FeatureStore in the order a LengthBucketSampler gives (as the
    DataLoader over the lazy dataset does); `batch_sampler` is that sampler."""

    def __init__(self, store: FeatureStore, batch_sampler: Sampler, indices: np.ndarray):
        self.store, self.batch_sampler, self.indices = store, batch_sampler, np.asarray(indices)

    def __iter__(self):
        for positions in self.batch_sampler:
            yield self.store.batch(self.indices[positions])

    def __len__(self) -> int:
        return len(self.batch_sampler)


def available_memory(device: torch.device) -> int:
    """Bytes free for a feature store: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def stored_bytes(features: FeatureFile, modalities) -> int:
    """Bytes of the modalities' values as stored (float16): what a FeatureStore holds."""
    return sum(int(features.offsets[m][-1]) * features.dims[m] * 2 for m in modalities)


def store_device(features: FeatureFile, modalities, device: torch.device, choice: str) -> torch.device | None:
    """Where `train.feature_store` puts the values: None = read lazily from the file.
    `auto`: in memory when they take at most half of what is free (on the GPU when training there
    and it fits, else in host memory), lazily otherwise; `memory` / `lazy` force it."""
    if choice == "lazy":
        return None
    size = stored_bytes(features, modalities)
    if device.type == "cuda" and size <= available_memory(device) // 2:
        return device
    if choice == "memory" or size <= available_memory(torch.device("cpu")) // 2:
        return torch.device("cpu")
    return None


def loader(features: FeatureFile, indices, modalities, batch_size: int, shuffle: bool, seed: int = 0,
           workers: int = 0, rank: int = 0, world: int = 1, store: FeatureStore | None = None,
           dialogues: bool = False, pool: int = 50, smallest: int = 1):
    """Batches of `indices`: from `store` when given (in memory), else a DataLoader over the lazy dataset;
    by length buckets (sorted within pools of `pool` batches: 1 gives batches drawn at random; batches under
    `smallest` skipped), or with `dialogues` whole dialogues in turn order (DialogueSampler)."""
    dataset = FeatureDataset(features, indices, modalities)
    if dialogues and features.dialogue is None:
        raise MmolreError(f"{features.path}: model.context=dialogue needs a corpus of dialogues (meld, iemocap: "
                          "their utterance tables have utterance_index); this one has none")
    sampler = (DialogueSampler(features.dialogue[dataset.indices], features.turn[dataset.indices], batch_size, shuffle,
                               seed, rank, world) if dialogues else
               LengthBucketSampler(dataset.lengths(), batch_size, shuffle, seed, pool, rank, world, smallest))
    if store is not None:
        return StoreLoader(store, sampler, indices)
    # its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG on every
    # iteration, which would shift dropout against the in-memory path
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(seed))
