"""Small pickles in the forms the field holds (MMSA's processed files, MulT's), with every trap of the real ones:
MMSA pads at the end with junk after the lengths and BERT states at the padding, MulT pads at the front with no
lengths; MOSEI audio holds -inf; ids in each form's shape. Each builder returns the file's dict and the frames
each utterance must come out with ({split: {utterance_id: {modality: frames}}})."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

SPLIT_VIDEOS = {"train": ["-3g5yACwYnA", "03bSnISJMiM", "_0efYOjQYRc"], "valid": ["12345"], "test": ["c5xsKMxpXnc"]}
VOCABULARY = "a lot of sad parts movie was great really bad acting plot twist loved hated it boring fun music the".split()
DIMS = {"mosi": (768, 5, 20), "mosei": (768, 74, 35), "sims": (768, 33, 709)}


def mmsa_split(rng, videos: list[str], dims, steps=(8, 12, 10), aligned=False, sims=False, per_video=2,
               lists=False) -> tuple[dict, dict]:
    n = len(videos) * per_video
    ids = [f"{v}$_${c:04d}" if sims else f"{v}$_${c}" for v in videos for c in range(1, per_video + 1)]
    steps = (steps[0],) * 3 if aligned else steps
    text, audio, vision = (rng.normal(size=(n, t, d)).astype(np.float32) for t, d in zip(steps, dims))
    text_len = rng.integers(2, steps[0] + 1, n)
    mask = (np.arange(steps[0])[None] < text_len[:, None]).astype(np.int64)
    audio_len, vision_len = (text_len, text_len) if aligned else (rng.integers(1, t + 1, n) for t in steps[1:])
    audio[0, 0, 1] = -np.inf  # MOSEI's COVAREP
    audio[0, audio_len[0]:] = 0.0  # the first utterance zero-padded as it should be ...
    vision[1, 0] = 0.0  # ... and an all-zero frame inside the real span
    said = [" ".join(rng.choice(VOCABULARY, 6)) for _ in ids]  # MMSA's raw_text is not stripped
    arrays = {"raw_text": np.array([f" {s} " for s in said]), "audio": audio, "vision": vision,
              "id": ids if lists else np.array(ids), "text": text,
              "text_bert": np.stack([rng.integers(100, 3000, (n, steps[0])) * mask, mask, 0 * mask], axis=1),
              "annotations": np.array(["Negative"] * n), "classification_labels": np.zeros(n),
              "regression_labels": np.round(rng.uniform(-1 if sims else -3, 1 if sims else 3, n), 1)}
    if not aligned:
        arrays |= {"audio_lengths": audio_len.tolist() if lists else audio_len,
                   "vision_lengths": vision_len.tolist() if lists else vision_len}
    if sims:
        arrays |= {f"regression_labels_{m}": np.round(rng.uniform(-1, 1, n), 1) for m in "TAV"}
    expected = {f"{i.replace('$_$', '_')}": {"text": text[k, :text_len[k]], "audio": audio[k, :audio_len[k]],
                                            "video": vision[k, :vision_len[k]]} for k, i in enumerate(ids)}
    for k, frames in expected.items():
        frames["audio"] = np.where(np.isneginf(frames["audio"]), 0, frames["audio"])
    return arrays, expected


def mmsa_file(dataset="mosi", aligned=False, seed=0, fet=False, lists=False) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    data, expected = {}, {}
    for split, videos in SPLIT_VIDEOS.items():
        data[split], expected[split] = mmsa_split(rng, videos, DIMS[dataset], aligned=aligned,
                                                  sims=dataset.startswith("sims"), lists=lists)
    if fet:
        data = {k: {n: np.asarray(v, np.float64) if n in ("audio", "vision", "text") else v for n, v in s.items()}
                for k, s in data.items()} | {"config": {"align": False, "audio": {"tool": "librosa"}}}
    return data, expected


def mult_split(rng, videos: list[str], dims, dataset: str, steps=(6, 9, 7), per_video=2) -> tuple[dict, dict]:
    n = len(videos) * per_video
    arrays, expected = {}, {}
    starts = {m: rng.integers(0, t, n) for m, t in zip(("text", "audio", "vision"), steps)}
    starts["vision"][1] = 0  # its dropped face (below) is then inside the span: a leading zero row is padding
    for (m, t), d in zip(zip(("text", "audio", "vision"), steps), dims):
        x = rng.normal(size=(n, t, d)).astype(np.float32)
        x[np.arange(t)[None] < starts[m][:, None]] = 0.0  # zeros at the front
        arrays[m] = x
    arrays["vision"][1, -2] = 0.0  # a dropped face inside the span stays
    arrays["audio"][0, -1, 3] = -np.inf
    if dataset == "iemocap":
        classes = rng.integers(0, 4, n)
        labels = np.zeros((n, 4, 2), np.float32)
        labels[:, :, 0] = 1
        labels[np.arange(n), classes] = [0, 1]
        arrays["labels"] = labels
    else:
        arrays["labels"] = np.round(rng.uniform(-3, 3, (n, 1, 1)), 2).astype(np.float32)
        if dataset == "mosei":
            arrays["id"] = np.array([[v, f"{10.0 * c:.3f}", f"{10.0 * c + 4.5:.3f}"] for v in videos
                                     for c in range(per_video)])
        else:
            arrays["id"] = np.array([[f"{v}_{c}".encode(), b"0", b"0"] for v in videos for c in range(1, per_video + 1)])
    ids = (
        [f"{v}_{10.0 * c:.3f}_{10.0 * c + 4.5:.3f}" for v in videos for c in range(per_video)] if dataset == "mosei" else
        [f"{v}_{c}" for v in videos for c in range(1, per_video + 1)] if dataset == "mosi" else None)
    for k in range(n):
        frames = {m: arrays[key][k, starts[key][k]:] for m, key in (("text", "text"), ("audio", "audio"), ("video", "vision"))}
        frames["audio"] = np.where(np.isneginf(frames["audio"]), 0, frames["audio"])
        expected[ids[k] if ids else k] = frames
    return arrays, expected


def mult_file(dataset="mosei", seed=0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    dims = {"iemocap": (300, 74, 35), "mosi": (300, 5, 20)}.get(dataset, (300, 74, 35))
    data, expected = {}, {}
    for split, videos in SPLIT_VIDEOS.items():
        data[split], expected[split] = mult_split(rng, videos, dims, dataset)
    return data, expected


def write(path: Path, data: dict, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path
