"""The video modality: frames at the requested rate, absent video by mask, the real vision-encoder path on a
tiny local model, and a fourth modality added through the registry in one entry."""

from __future__ import annotations

import json

import av
import h5py
import numpy as np
import pytest
import torch

from mmolre.batches import collate
from mmolre.encoders import Frames, PixelGridEncoder, TransformersVisionEncoder, load_frames, read_video
from mmolre.architectures import build_model
from mmolre.model_config import MMoLREConfig
from mmolre.params import FeaturizeParams


def write_clip(path, seconds: float, fps: int = 25, video: bool = True, audio: bool = False) -> None:
    """An mp4 whose frame k is a flat grey of value 4k (its time is k / fps), with or without a video stream."""
    with av.open(str(path), "w") as container:
        streams = []
        if video:
            v = container.add_stream("libx264", rate=fps, options={"crf": "0"})
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            streams.append(v)
        if audio:
            a = container.add_stream("aac", rate=16000)
            a.layout = "mono"
        if video:
            for k in range(int(seconds * fps)):
                image = np.full((48, 64, 3), 4 * k, np.uint8)
                container.mux(v.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(v.encode())
        if audio:
            t = np.arange(int(seconds * 16000)) / 16000
            samples = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="flt", layout="mono")
                frame.sample_rate = 16000
                container.mux(a.encode(frame))
            container.mux(a.encode())


def test_frames_are_taken_at_the_requested_rate_with_their_times(tmp_path):
    write_clip(tmp_path / "clip.mp4", seconds=2.0)
    clip = load_frames(tmp_path / "clip.mp4", 0.0, 2.0, fps=5.0, max_s=20.0, short_side=224)
    assert clip.images.shape == (10, 48, 64, 3)  # never enlarged
    assert np.allclose(clip.times, np.arange(10) / 5, atol=1e-6)
    assert np.abs(clip.images[:, 20, 30, 0].astype(int) - 20 * np.arange(10)).max() <= 2  # frame 5k: grey 20k
    part = load_frames(tmp_path / "clip.mp4", 0.5, 1.5, fps=4.0, max_s=20.0, short_side=24)
    assert part.images.shape == (4, 24, 32, 3)  # scaled to the shorter side, the aspect kept
    # wanted 0.5, 0.75, 1.0, 1.25 s: the frames on screen then (25 fps) began at 0.48, 0.72, 1.0, 1.24 s
    assert np.allclose(part.times, [-0.02, 0.22, 0.5, 0.74], atol=1e-6)
    capped = load_frames(tmp_path / "clip.mp4", 0.0, 2.0, fps=5.0, max_s=1.0, short_side=224)
    assert len(capped.images) == 5


def test_a_clip_without_a_video_stream_is_an_absent_modality_by_mask(tmp_path):
    write_clip(tmp_path / "voice.mp4", seconds=1.0, video=False, audio=True)
    cfg = FeaturizeParams(video_fps=5.0, pixel_grid=4)
    row = {"video_path": "voice.mp4", "start_s": 0.0, "end_s": 1.0}
    assert len(read_video(row, tmp_path, cfg).images) == 0
    assert len(read_video({**row, "video_path": None}, tmp_path, cfg).images) == 0  # no file at all: absent too
    encoder = PixelGridEncoder(4)
    write_clip(tmp_path / "face.mp4", seconds=1.0)
    seen = encoder.encode([read_video({**row, "video_path": "face.mp4"}, tmp_path, cfg), Frames.none()])
    assert [v.shape for v in seen] == [(5, 16), (0, 16)]
    items = [{"text": torch.randn(3, 6), "audio": torch.randn(4, 5), "video": torch.from_numpy(v),
              "sentiment": torch.tensor(0.0), "emotions": torch.zeros(6), "index": i} for i, v in enumerate(seen)]
    batch = collate(items)
    assert batch["video_mask"].tolist() == [[True] * 5, [False] * 5]
    model = build_model(MMoLREConfig(dims={"text": 6, "audio": 5, "video": 16}, d_model=8, n_experts=2, rank=2,
                                     n_heads=2, modalities=("text", "audio", "video"))).eval()
    inputs = {k: v for k, v in batch.items() if k not in ("sentiment", "emotions", "index")}
    with torch.no_grad():
        before = model(**inputs)
        after = model(**inputs | {"video": batch["video"] + torch.tensor([0.0, 7.0])[:, None, None]})
        changed = model(**inputs | {"video": batch["video"] + 7.0})
    assert torch.equal(before.sentiment[1], after.sentiment[1]) and torch.equal(before.emotions[1], after.emotions[1])
    assert not torch.equal(before.sentiment[0], changed.sentiment[0])  # present video is read
    only_absent = collate(items[1:])  # a batch in which no sample has video: one masked position
    assert only_absent["video"].shape == (1, 1, 16) and not only_absent["video_mask"].any()


def test_a_transformers_vision_model_saved_locally_gives_one_pooled_vector_per_frame(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     image_size=32, patch_size=8)).eval()
    model.save_pretrained(tmp_path / "tiny-dinov2")
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "tiny-dinov2")
    write_clip(tmp_path / "clip.mp4", seconds=1.0)
    clip = load_frames(tmp_path / "clip.mp4", 0.0, 1.0, fps=3.0, max_s=20.0, short_side=32)
    encoder = TransformersVisionEncoder(str(tmp_path / "tiny-dinov2"), batch_frames=2, device=torch.device("cpu"))
    assert encoder.dim == 16 and encoder.revision == "local"
    vectors = encoder.encode([clip, Frames.none(), clip])
    assert [v.shape for v in vectors] == [(3, 16), (0, 16), (3, 16)]
    with torch.no_grad():
        direct = model(pixel_values=processor(images=list(clip.images), return_tensors="pt")["pixel_values"])
    assert np.allclose(vectors[0], direct.pooler_output.numpy(), atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-6)  # batched differently: equal up to the CPU's rounding


class ToyEncoder:
    """A fourth modality for the registry test: per word of the text, its length and its vowels."""
    name, revision, dim = "toy", "toy-1", 2

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.array([[len(w), sum(c in "aeiou" for c in w)] for w in t.split()], np.float32) for t in texts]


def toy_encoder(cfg, device) -> ToyEncoder:
    return ToyEncoder()


def test_a_fourth_modality_needs_one_registry_entry(tiny_demo, tmp_path, monkeypatch):
    from mmolre import MmolreError
    from mmolre.evaluate import evaluate
    from mmolre.featurize import featurize
    from mmolre.modalities import MODALITIES, Modality
    from mmolre.model_info import closed_form_flops, closed_form_params, measured_flops
    from mmolre.inference import load_checkpoint
    from mmolre.train import train

    monkeypatch.setitem(MODALITIES, "words", Modality("words", "text", "test_video:toy_encoder"))  # the one entry
    params = {**tiny_demo["params"], "featurize": {**tiny_demo["params"]["featurize"], "video_encoder": None},
              "train": {**tiny_demo["params"]["train"], "epochs": 1},
              "runs": {"main": {"modalities": ["text", "audio", "words"]}}}
    h5 = featurize(params, tiny_demo["prepared"], tiny_demo["raw"], tmp_path / "features")
    with h5py.File(h5) as f:
        assert set(f) == {"meta", "text", "audio", "words"} and f["words"]["values"].shape[1] == 2
        first = f["meta/utterance_id"].asstr()[0]
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    robustness = json.loads((tmp_path / "reports" / "robustness.json").read_text())["main"]
    assert list(robustness) == ["full", "words absent", "audio absent", "text absent", "audio noise"]
    model, _ = load_checkpoint(tmp_path / "models" / "main", torch.device("cpu"))
    assert model.config.dims["words"] == 2 and first
    lengths = {"text": 7, "audio": 9, "words": 4}
    assert closed_form_params(model.config) == sum(p.numel() for p in model.parameters())
    assert closed_form_flops(model.config, lengths) == measured_flops(model, lengths)
    with pytest.raises(MmolreError, match="has no video features; set featurize.video_encoder"):  # not featurized
        train({**params, "runs": {"main": {"modalities": ["text", "video"]}}}, "main", tmp_path / "features",
              tmp_path / "models", tmp_path / "reports")


def test_a_run_reading_video_that_no_utterance_has_is_refused_naming_the_column():
    from types import SimpleNamespace

    from mmolre import MmolreError
    from mmolre.train import check_readable

    features = SimpleNamespace(path="f.h5", dims={"text": 4, "video": 64},
                               lengths=lambda m: np.array([3, 2]) if m == "text" else np.array([0, 0]))
    check_readable(features, "main", "text")
    with pytest.raises(MmolreError, match="no utterance of f.h5 has video .* no video_path column.* need data.keep_video: true"):
        check_readable(features, "trimodal", "video")


MOSI_CLIPS = [("vidA", "1", "i loved it", 2.0, "train", 1.0, True), ("vidA", "2", "it was bad", -1.5, "train", 0.8, True),
              ("vidB", "1", "fine", 0.5, "train", 0.6, True), ("vidC", "1", "okay then", 0.0, "valid", 0.8, True),
              ("vidD", "1", "great", 3.0, "test", 0.6, True), ("vidD", "2", "no face", -0.5, "test", 0.6, False)]


def mmsa_folder(root):
    """MMSA's layout (label.csv beside Raw/<video_id>/<clip_id>.mp4) whose clips carry frames; one clip has
    an audio track only."""
    rows = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
    for video, clip, text, label, mode, seconds, has_video in MOSI_CLIPS:
        (root / "Raw" / video).mkdir(parents=True, exist_ok=True)
        write_clip(root / "Raw" / video / f"{clip}.mp4", seconds, video=has_video, audio=True)
        rows.append(f"{video},{clip},{text},{label},,,,Positive,{mode}")
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mmsa_clips_keep_their_frames_with_keep_video_and_train_a_trimodal_run(tiny_params, tmp_path):
    from test_corpora import params_for, prepared_table

    from mmolre.features import FeatureFile
    from mmolre.featurize import featurize
    from mmolre.inference import load_checkpoint
    from mmolre.train import train

    root = mmsa_folder(tmp_path / "MOSI")
    params = params_for(tiny_params, "mosi", mmsa_root=str(root), keep_video=True)
    params["runs"] = {"main": {"modalities": ["text", "audio", "video"]}}
    table, counts = prepared_table(params, tmp_path)
    ids = [f"{v}_{c}" for v, c, *_ in MOSI_CLIPS]
    assert table.utterance_id.tolist() == ids and table.video_path.tolist() == [f"mosi/MMSA/Video/{u}.mp4" for u in ids]
    assert all((tmp_path / "raw" / p).read_bytes() == (root / "Raw" / v / f"{c}.mp4").read_bytes()
               for p, (v, c, *_) in zip(table.video_path, MOSI_CLIPS))
    assert "video: 6 clips kept in Video/ (data.keep_video)" in counts

    h5 = featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")
    features, fps = FeatureFile(h5), params["featurize"]["video_fps"]
    expected = [int(np.ceil(end * fps - 1e-9)) if clip[-1] else 0 for end, clip in zip(table.end_s, MOSI_CLIPS)]
    assert features.lengths("video").tolist() == expected
    first = features.get("video", 0).astype(np.float64)  # frame k at k / fps: the source's frame 25 k / fps, grey 4 * that
    grey = np.minimum(4 * 25 * np.arange(expected[0]) / fps, 4 * 24) / 255  # the last frame stays on screen
    assert np.allclose(first, grey[:, None] * np.ones(features.dims["video"]), atol=3 / 255)
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "reports")
    model, _ = load_checkpoint(tmp_path / "models" / "main", torch.device("cpu"))
    assert model.config.modalities == ("text", "audio", "video")

    without = params_for(tiny_params, "mosi", mmsa_root=str(root))
    table, counts = prepared_table(without, tmp_path / "audio_only")
    assert table.video_path.isna().all() and not (tmp_path / "audio_only" / "raw" / "mosi" / "MMSA" / "Video").exists()
    assert "no video: data.keep_video was false at download" in counts
