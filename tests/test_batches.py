"""Padding with masks and length-bucketed batches."""

import numpy as np
import torch

from mmolre.batches import LengthBucketSampler, collate, pad


def test_pad_gives_true_for_real_positions():
    padded, mask = pad([torch.ones(2, 3), torch.ones(4, 3) * 2])
    assert padded.shape == (2, 4, 3)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert padded[0, 2:].abs().sum() == 0


def test_collate_stacks_labels_and_pads_each_modality():
    items = [{"text": torch.ones(t, 2), "audio": torch.ones(a, 3), "sentiment": torch.tensor(s),
              "emotions": torch.zeros(6), "index": i} for i, (t, a, s) in enumerate([(1, 5, 0.5), (3, 2, -1.0)])]
    batch = collate(items)
    assert batch["text"].shape == (2, 3, 2) and batch["audio"].shape == (2, 5, 3)
    assert batch["audio_mask"].sum(1).tolist() == [5, 2]
    assert batch["sentiment"].tolist() == [0.5, -1.0] and batch["index"].tolist() == [0, 1]


def test_bucket_sampler_covers_every_item_once_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=103)
    sampler = LengthBucketSampler(lengths, batch_size=8, shuffle=True, seed=1, pool=4)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert len(batches) == len(sampler) == 13
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)  # batches hold similar lengths
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled per epoch
    sampler.set_epoch(0)
    assert list(sampler) == batches  # and reproducible


def test_unshuffled_sampler_is_length_order():
    lengths = np.array([5, 1, 3, 2])
    assert list(LengthBucketSampler(lengths, 3, shuffle=False)) == [[1, 3, 2], [0]]


def test_worker_processes_read_the_same_batches(tiny_demo):
    from mmolre.batches import loader
    from mmolre.features import FeatureFile

    features = FeatureFile(tiny_demo["h5"])
    indices = features.indices("train")
    batches = [list(loader(features, indices, ("text", "audio"), 8, shuffle=True, seed=3, workers=w))
               for w in (0, 2)]
    assert len(batches[0]) == len(batches[1]) == 3
    for a, b in zip(*batches, strict=True):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["text_mask"], b["text_mask"])
