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


def test_in_memory_store_gives_the_lazy_batches_value_for_value(tiny_demo):
    from mmolre.batches import FeatureStore, collate, loader
    from mmolre.features import FeatureFile

    features = FeatureFile(tiny_demo["h5"])
    store = FeatureStore(features, ("text", "audio"))
    assert store.values["audio"].dtype == torch.float16 and store.values["audio"].is_contiguous()
    # the values once, as float16, plus one zero row per modality that padding positions read
    assert sum(v.numel() * v.element_size() for v in store.values.values()) == sum((int(features.offsets[m][-1]) + 1) * features.dims[m] * 2 for m in ("text", "audio"))
    train = features.indices("train")
    lazy = loader(features, train, ("text", "audio"), 5, shuffle=True, seed=3)
    memory = loader(features, train, ("text", "audio"), 5, shuffle=True, seed=3, store=store)
    for epoch in (1, 2):
        lazy.batch_sampler.set_epoch(epoch)
        memory.batch_sampler.set_epoch(epoch)
        pairs = list(zip(lazy, memory, strict=True))
        assert len(pairs) == len(lazy.batch_sampler) > 1
        for a, b in pairs:
            assert set(a) == set(b)
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    one = store.batch([4])  # a batch of one utterance holds exactly its frames
    item = collate([{"text": torch.from_numpy(features.get("text", 4)),
                     "audio": torch.from_numpy(features.get("audio", 4)),
                     "sentiment": torch.tensor(features.sentiment[4]),
                     "emotions": torch.from_numpy(features.emotions[4]), "index": 4}])
    assert all(torch.equal(one[k], item[k]) for k in item)
    assert one["audio"].dtype == torch.float16  # cast to float32 where the model runs (train.to_device)


def test_training_is_the_same_from_memory_and_from_the_file(tiny_demo, tmp_path):
    import pandas as pd

    from mmolre.curves import read_curves
    from mmolre.inference import load_checkpoint
    from mmolre.train import train

    curves = {}
    for store in ("lazy", "memory"):
        params = {**tiny_demo["params"], "train": {**tiny_demo["params"]["train"], "feature_store": store}}
        train(params, "main", tiny_demo["features"], tmp_path / store, tmp_path / f"curves-{store}")
        curves[store] = read_curves(tmp_path / f"curves-{store}" / "main")
    assert len(curves["lazy"]) == len(curves["memory"]) >= 2 and "train/loss" in curves["lazy"]
    pd.testing.assert_frame_equal(curves["lazy"], curves["memory"], rtol=1e-6)
    lazy, _ = load_checkpoint(tmp_path / "lazy" / "main")
    memory, _ = load_checkpoint(tmp_path / "memory" / "main")
    for (name, a), b in zip(lazy.state_dict().items(), memory.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name
