"""`mmolre predict`: sentiment and emotion presence for new recordings, with a trained model.

    mmolre predict --model models/main --audio clip.wav --text "what was said"
    mmolre predict --model models/main --inputs clips.csv    # columns audio, text[, id]
    mmolre predict --model models/main --inputs clips/       # <name>.wav + <name>.txt pairs

Runs the encoders the model was trained on (recorded in its checkpoint) and the model;
prints what the label space of its training corpus predicts (CMU and the demo: the sentiment score in
[-3, 3] and each emotion's presence probability; other corpora: class or target values by name), or JSON
with --json. Many inputs are batched.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmolre import MmolreError
from mmolre.batches import pad
from mmolre.device import pick_device
from mmolre.featurize import TextEncoder, audio_encoder, load_audio
from mmolre.files import audio_info
from mmolre.inference import load_checkpoint
from mmolre.label_spaces import Task
from mmolre.model import MMoLRE, predictions
from mmolre.params import FeaturizeParams

USES_PARAMS = False  # everything comes from the checkpoint


@dataclass
class Predictor:
    model: MMoLRE
    text: TextEncoder
    audio: object
    cfg: FeaturizeParams
    device: torch.device


def load_predictor(model_path: Path, device: torch.device) -> Predictor:
    model, meta = load_checkpoint(model_path, device)
    features = meta["features"]
    if "featurize_config" not in features:
        raise MmolreError(f"{model_path}: the model does not record its encoders' settings; retrain it")
    cfg = FeaturizeParams(**json.loads(features["featurize_config"]))
    text, audio = TextEncoder(cfg.text_encoder, cfg.text_layer, cfg.max_text_tokens, device), audio_encoder(cfg, device)
    for name, encoder, expected_dim, revision in (
            ("text", text, model.config.text_dim, features["text_encoder_revision"]),
            ("audio", audio, model.config.audio_dim, features["audio_encoder_revision"])):
        if encoder.dim != expected_dim or encoder.revision != revision:
            raise MmolreError(f"{model_path} was trained on other {name} features: {expected_dim}-d from "
                              f"{encoder.name!r} revision {revision}; that encoder now gives {encoder.dim}-d, "
                              f"revision {encoder.revision}")
    return Predictor(model, text, audio, cfg, device)


def read_inputs(audio: Path | None, text: str | None, inputs: Path | None) -> pd.DataFrame:
    """A table with columns id, audio (path), text."""
    if inputs is None:
        if audio is None or text is None:
            raise MmolreError("give --audio and --text, or --inputs (a CSV or a folder)")
        return pd.DataFrame({"id": [audio.stem], "audio": [audio], "text": [text]})
    if inputs.is_dir():
        wavs = sorted(p for p in inputs.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg"))
        missing = [w.name for w in wavs if not w.with_suffix(".txt").is_file()]
        if missing:
            raise MmolreError(f"{inputs}: no transcript <name>.txt beside {missing[:5]}")
        return pd.DataFrame({"id": [w.stem for w in wavs], "audio": wavs,
                             "text": [w.with_suffix(".txt").read_text().strip() for w in wavs]})
    if not inputs.is_file():
        raise MmolreError(f"--inputs {inputs}: no such file or folder")
    table = pd.read_csv(inputs, keep_default_na=False)
    if not {"audio", "text"} <= set(table.columns):
        raise MmolreError(f"{inputs}: needs columns audio and text (has {list(table.columns)})")
    table["audio"] = [Path(p) if Path(p).is_absolute() else inputs.parent / p for p in table.audio]
    if "id" not in table:
        table["id"] = [Path(p).stem for p in table.audio]
    return table[["id", "audio", "text"]]


def as_stored(features: np.ndarray) -> torch.Tensor:
    """The precision the feature file stores (float16), so predictions match the evaluate stage's."""
    return torch.from_numpy(features.astype(np.float16).astype(np.float32))


MIN_PREDICT_S = 0.1  # shorter recordings hold too little speech to judge: skipped, by name
NARROWBAND_HZ = 4000  # telephone audio carries nothing above this


def recording_problems(path: Path, expected_rate: int, max_s: float) -> tuple[str | None, list[str]]:
    """(why the recording cannot be used, or None; warnings about how it will be used)."""
    info = audio_info(path)
    if info is None:
        return f"{path}: cannot read audio ({'not found' if not path.exists() else 'not audio, or damaged'})", []
    seconds = info.frames / info.samplerate
    if seconds < MIN_PREDICT_S:
        return f"{path}: only {seconds:.3f} s of audio; at least {MIN_PREDICT_S} s is needed", []
    warnings = []
    if seconds > max_s:
        warnings.append(f"{path}: {seconds:.1f} s of audio; only the first {max_s:g} s are used "
                        "(the training features' featurize.max_audio_s)")
    if info.samplerate < expected_rate:
        warnings.append(f"{path}: recorded at {info.samplerate} Hz, below the {expected_rate} Hz the encoders were "
                        f"trained on; the band above {info.samplerate // 2} Hz is missing, so predictions are less reliable")
    return None, warnings


def narrowband(wave: torch.Tensor, sample_rate: int) -> bool:
    """Whether under 0.1 % of the energy lies above 4.5 kHz (past a resampler's transition band): a
    telephone recording stored at a higher rate. Wideband speech keeps percents there (fricatives)."""
    spectrum = torch.fft.rfft(wave.double()).abs() ** 2
    high = spectrum[int(len(spectrum) * (NARROWBAND_HZ + 500) / (sample_rate / 2)):].sum()
    return bool(sample_rate > 2 * NARROWBAND_HZ and spectrum.sum() > 0 and high / spectrum.sum() < 1e-3)


@torch.no_grad()
def predict_table(predictor: Predictor, table: pd.DataFrame, batch_size: int = 16) -> list[dict]:
    """One result per input row, in order: {id, sentiment, emotions}, or {id, skipped: reason} for a recording
    that cannot be used (named on stderr; the others are still predicted). Warnings go to stderr."""
    results, usable = [None] * len(table), []  # by position: ids may repeat
    max_s, rate = predictor.cfg.max_audio_s, predictor.audio.sample_rate  # the whole recording, up to training's
    for position, row in enumerate(table.itertuples(index=False)):
        text = str(row.text).strip()
        if not text:
            raise MmolreError(f"{row.id}: the text is empty; the model needs what was said")
        problem, warnings = recording_problems(Path(row.audio), rate, max_s)
        if problem is None:
            wave = load_audio(Path(row.audio), 0.0, max_s, rate, max_s)
            if not any("Hz, below" in w for w in warnings) and narrowband(wave, rate):
                warnings.append(f"{row.audio}: almost no energy above {NARROWBAND_HZ} Hz (narrowband or telephone "
                                "audio?); the encoders were trained on wideband speech, so predictions are less reliable")
            usable.append((position, row.id, text, wave))
        else:
            results[position] = {"id": str(row.id), "skipped": problem}
            print(f"predict: skipped {row.id}: {problem}", file=sys.stderr)
        for warning in warnings:
            print(f"predict: warning: {warning}", file=sys.stderr)
    if not usable:
        raise MmolreError("; ".join(r["skipped"] for r in results if r) or "no inputs")
    for start in range(0, len(usable), batch_size):
        positions, ids, texts, waves = zip(*usable[start:start + batch_size])
        text, text_mask = pad([as_stored(x) for x in predictor.text.encode(list(texts))])
        audio, audio_mask = pad([as_stored(x) for x in predictor.audio.encode(list(waves))])
        device = predictor.device
        out = predictor.model(text=text.to(device), text_mask=text_mask.to(device), audio=audio.to(device),
                              audio_mask=audio_mask.to(device))
        heads = predictor.model.config.heads
        read = {task: predictions(heads[task], output).cpu().numpy() for task, output
                in (("sa", out.sentiment), ("er", out.emotions)) if output is not None}
        for k, utterance in enumerate(ids):
            result = {"id": str(utterance), "sentiment": named(heads["sa"], read["sa"][k]) if "sa" in read else None}
            if "er" in read:
                result["emotions"] = named(heads["er"], read["er"][k])
            results[positions[k]] = result
    return results


def named(task: Task, values: np.ndarray) -> float | dict[str, float]:
    """One utterance's prediction of a task: the sentiment score, or {label: value} (each target of a
    regression, each emotion's presence probability, each class's probability)."""
    if values.ndim == 0:
        return float(values)
    return {label: float(v) for label, v in zip(task.labels, values)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="models/main",
                        help="a trained model folder (model.safetensors + config.json), or a hub id when online")
    parser.add_argument("--audio", type=Path, help="one recording (wav, flac, ogg)")
    parser.add_argument("--text", help="its transcript")
    parser.add_argument("--inputs", type=Path, help="a CSV (audio, text[, id]) or a folder of <name>.wav + <name>.txt")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per input)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace, params: dict) -> None:
    table = read_inputs(args.audio, args.text, args.inputs)
    results = predict_table(load_predictor(args.model, pick_device(args.device)), table, args.batch_size)
    if args.json:
        print(json.dumps(results if args.inputs else results[0], indent=2))
        return
    for r in results:
        if "skipped" in r:
            print(f"{r['id']}: skipped ({r['skipped']})")
            continue
        emotions = "  ".join(f"{e} {p:.2f}" for e, p in r.get("emotions", {}).items())
        sentiment = ("" if r["sentiment"] is None else f"sentiment {r['sentiment']:+.3f}  "
                     if isinstance(r["sentiment"], float) else
                     "  ".join(f"{c} {p:.2f}" for c, p in r["sentiment"].items()) + "  |  ")
        print(f"{r['id']}: {sentiment}{emotions}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("predict")
