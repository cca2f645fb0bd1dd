"""Batches from the HDF5 feature file: a lazy Dataset, length buckets, padding with masks."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmolre.features import FeatureFile


class FeatureDataset(Dataset):
    """Utterances `indices` of a FeatureFile: modality -> (T, dim) float32 plus labels."""

    def __init__(self, features: FeatureFile, indices: np.ndarray, modalities: tuple[str, ...]):
        self.features, self.indices, self.modalities = features, np.asarray(indices), modalities

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        item = {m: torch.from_numpy(self.features.get(m, i).astype(np.float32)) for m in self.modalities}
        item["sentiment"] = torch.tensor(self.features.sentiment[i])
        item["emotions"] = torch.from_numpy(self.features.emotions[i])
        item["index"] = i
        return item

    def lengths(self) -> np.ndarray:
        """Total positions per item over the modalities: what a batch pads."""
        return sum(self.features.lengths(m)[self.indices] for m in self.modalities)


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within pools of `pool` batches, shuffle the batches.

    Without `shuffle`, batches follow length order (deterministic evaluation). With `world` > 1
    (DDP), every rank forms the same global batches and takes its share `batch[rank::world]`;
    a global batch smaller than `world` is skipped on every rank.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                 rank: int = 0, world: int = 1):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = np.asarray(lengths), batch_size, shuffle, seed, pool
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for batch in self.global_batches():
            if len(batch) >= self.world:
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


def pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(T_i, dim)] -> (B, T_max, dim) zero-padded, and a (B, T_max) mask, True = real position."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    return padded, torch.arange(padded.shape[1])[None] < lengths[:, None]


def collate(items: list[dict]) -> dict:
    batch = {"sentiment": torch.stack([it["sentiment"] for it in items]),
             "emotions": torch.stack([it["emotions"] for it in items]),
             "index": torch.tensor([it["index"] for it in items])}
    for m in ("text", "audio"):
        if m in items[0]:
            batch[m], batch[f"{m}_mask"] = pad([it[m] for it in items])
    return batch


def loader(features: FeatureFile, indices, modalities, batch_size: int, shuffle: bool, seed: int = 0,
           workers: int = 0, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    dataset = FeatureDataset(features, indices, modalities)
    sampler = LengthBucketSampler(dataset.lengths(), batch_size, shuffle, seed, rank=rank, world=world)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
