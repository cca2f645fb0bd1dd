"""`mmolre predict`: sentiment and emotion presence for new recordings, with a trained model.

    mmolre predict --model models/main --audio clip.wav --text "what was said"
    mmolre predict --model models/trimodal --video clip.mp4 --text "what was said"  # its audio track too
    mmolre predict --model models/main --inputs clips.csv    # columns audio[, text, id, video]
    mmolre predict --model models/main --audio clip.wav      # no --text: a speech recogniser transcribes it
    mmolre predict --model models/main --audio clip.wav --no-text   # scored with the text absent
    mmolre predict --model models/main --inputs clips/       # <name>.wav (or .mp4) [+ <name>.txt]
    mmolre predict --model you/mmolre-demo --audio clip.wav  # a model `mmolre publish` put on the hub

Runs the encoders the model was trained on (recorded in its checkpoint) and the model; a model that reads
video takes the frames of `--video` (without one, the video is absent, as for a clip without a video
stream), and a video file with no `--audio` gives the audio too (its audio track, decoded with PyAV);
prints what the label space of its training corpus predicts (CMU and the demo: the sentiment score in
[-3, 3] and each emotion's presence probability; other corpora: class or target values by name), or JSON
with --json. Many inputs are batched. Each result names the model: its folder, or `<hub id>@<commit>` (pass
that commit as --revision to get the same model again).
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
from mmolre.encoders import Frames, load_audio, load_frames
from mmolre.files import audio_info, decode_audio
from mmolre.inference import load_checkpoint
from mmolre.label_spaces import Task
from mmolre.modalities import MODALITIES
from mmolre.model import MMoLRE, predictions
from mmolre.params import FeaturizeParams
from mmolre.transcribe import DEFAULT_ASR, Transcriber, load_transcriber, transcribe

USES_PARAMS = False  # everything comes from the checkpoint


@dataclass
class Predictor:
    model: MMoLRE
    encoders: dict  # modality -> its encoder, for the modalities the model reads
    cfg: FeaturizeParams
    device: torch.device
    source: str      # the model folder, or <hub id>@<commit> of a hub model (the revision pinned)


def load_predictor(model_path: Path | str, device: torch.device, revision: str | None = None) -> Predictor:
    """The model of a folder or hub id (at `revision`; the hub commit it got is in `source`) and its encoders."""
    model, meta = load_checkpoint(model_path, device, revision)
    features = meta["features"]
    if "processed" in features:
        source = json.loads(features["processed"])
        raise MmolreError(f"{model_path} was trained on the features of a processed file ({source['description']}: "
                          + ", ".join(f"{m} {e}" for m, e in source["encoders"].items())
                          + "); they cannot be computed from a new recording: train on clips to predict on clips")
    if "featurize_config" not in features:
        raise MmolreError(f"{model_path}: the model does not record its encoders' settings; retrain it")
    cfg = FeaturizeParams(**json.loads(features["featurize_config"]))
    encoders = {m: MODALITIES[m].load("encoder")(cfg, device) for m in model.config.modalities}
    for m, encoder in encoders.items():
        expected_dim, revision = model.config.dims[m], features.get(f"{MODALITIES[m].encoder_param}_revision")
        if encoder.dim != expected_dim or encoder.revision != revision:
            raise MmolreError(f"{model_path} was trained on other {m} features: {expected_dim}-d from "
                              f"{encoder.name!r} revision {revision}; that encoder now gives {encoder.dim}-d, "
                              f"revision {encoder.revision}")
    hub = meta.get("hub")
    return Predictor(model, encoders, cfg, device, f"{hub['repo']}@{hub['revision']}" if hub else str(model_path))


def read_inputs(audio: Path | None, text: str | None, inputs: Path | None, video: Path | None = None) -> pd.DataFrame:
    """A table with columns id, audio (path), text (None: to be transcribed), video (path or None); a video without
    audio gives both."""
    if inputs is None:
        if audio is None and video is None:
            raise MmolreError("give --audio (or --video) [--text], or --inputs (a CSV or a folder)")
        return pd.DataFrame({"id": [(audio or video).stem], "audio": [audio or video], "text": [text],
                             "video": [video]})
    if inputs.is_dir():
        clips = sorted(p for p in inputs.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp4"))
        given = lambda c: c.with_suffix(".txt").read_text().strip() if c.with_suffix(".txt").is_file() else None
        return pd.DataFrame({"id": [c.stem for c in clips], "audio": clips, "text": [given(c) for c in clips],
                             "video": [c if c.suffix.lower() == ".mp4" else None for c in clips]})
    if not inputs.is_file():
        raise MmolreError(f"--inputs {inputs}: no such file or folder")
    table = pd.read_csv(inputs, keep_default_na=False)
    if not {"audio", "video"} & set(table.columns):
        raise MmolreError(f"{inputs}: needs a column audio (or video) [and text] (has {list(table.columns)})")
    near = lambda p: None if not p else Path(p) if Path(p).is_absolute() else inputs.parent / p
    table["video"] = [near(p) for p in table.get("video", [""] * len(table))]
    table["audio"] = [near(a) or v for a, v in zip(table.get("audio", [""] * len(table)), table.video)]
    table["text"] = [str(t).strip() or None for t in table["text"]] if "text" in table else None
    if "id" not in table:
        table["id"] = [Path(p).stem for p in table.audio]
    return table[["id", "audio", "text", "video"]]


def as_stored(features: np.ndarray) -> torch.Tensor:
    """The precision the feature file stores (float16), so predictions match the evaluate stage's."""
    return torch.from_numpy(features.astype(np.float16).astype(np.float32))


ASR_RATE = 16000  # what speech recognisers take
MAX_ASR_S = 3600.0  # a recording to transcribe is read up to an hour (in chunks); the model still scores max_audio_s
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


def load_wave(path: Path, rate: int, max_s: float) -> tuple[torch.Tensor | None, str | None, list[str]]:
    """(the recording's first max_s seconds at `rate`, or None and why it cannot be used; warnings). A file
    soundfile cannot read (a video) is decoded with PyAV: its audio track."""
    if audio_info(path) is None and path.is_file():
        try:
            wave = torch.from_numpy(decode_audio(path, rate)[:int(max_s * rate)])
        except MmolreError as e:  # neither soundfile nor FFmpeg reads it
            return None, f"{path}: cannot read audio (not audio, or damaged: {e})", []
        short = len(wave) < MIN_PREDICT_S * rate
        return (None if short else wave), (f"{path}: only {len(wave) / rate:.3f} s of audio; at least "
                                           f"{MIN_PREDICT_S} s is needed" if short else None), []
    problem, warnings = recording_problems(path, rate, max_s)
    if problem is not None:
        return None, problem, warnings
    wave = load_audio(path, 0.0, max_s, rate, max_s)
    if not any("Hz, below" in w for w in warnings) and narrowband(wave, rate):
        warnings.append(f"{path}: almost no energy above {NARROWBAND_HZ} Hz (narrowband or telephone audio?); the "
                        "encoders were trained on wideband speech, so predictions are less reliable")
    return wave, None, warnings


def resolve_texts(table: pd.DataFrame, transcriber: Transcriber | None, absent: bool
                  ) -> tuple[list[str | None], list[str], dict[int, str]]:
    """Each row's text (None: absent) and where it came from ("given", the recogniser's `asr:...`, "absent"), and
    the rows that cannot be used (position -> why): every row without a transcript goes through the recogniser
    in one batch; a recording in which it hears nothing is named."""
    if absent:
        return [None] * len(table), ["absent"] * len(table), {}
    texts = [None if pd.isna(t) else t for t in table.text]  # pandas may hold a missing text as NaN
    sources, problems, waves = ["given"] * len(table), {}, {}
    for i, (text, audio) in enumerate(zip(texts, table.audio)):
        if text is None:
            waves[i], problems[i], _ = load_wave(Path(audio), ASR_RATE, MAX_ASR_S)
    waves = {i: wave for i, wave in waves.items() if wave is not None}
    problems = {i: p for i, p in problems.items() if p is not None}
    for i, heard in zip(waves, transcribe(transcriber, [w.numpy() for w in waves.values()], ASR_RATE) if waves else ()):
        if heard:
            texts[i], sources[i] = heard, transcriber.source
        else:
            problems[i] = f"{table.audio.iloc[i]}: no speech recognised in it (silent or empty?); give its --text"
    return texts, sources, problems


def raw_inputs(predictor: Predictor, row, text: str | None) -> tuple[dict, str | None, list[str]]:
    """The row's raw input per modality the model reads, `text` None when absent ({} and why when it cannot be
    used; warnings)."""
    if text is not None and not text.strip():
        raise MmolreError(f"{row.id}: the text is empty; give what was said, leave --text out to transcribe the "
                          "recording, or --no-text to score without it")
    raw, warnings, cfg = {"text": None if text is None else text.strip()}, [], predictor.cfg
    if "audio" in predictor.encoders:
        raw["audio"], problem, warnings = load_wave(Path(row.audio), predictor.encoders["audio"].sample_rate,
                                                     cfg.max_audio_s)
        if problem:
            return {}, problem, warnings
    if "video" in predictor.encoders:
        video = row.video if isinstance(row.video, Path) or (isinstance(row.video, str) and row.video) else None
        raw["video"] = (load_frames(Path(video), 0.0, float("nan"), cfg.video_fps, cfg.max_video_s, cfg.video_size)
                        if video else Frames.none())
        if not len(raw["video"].images):
            warnings.append(f"{row.id}: no video frames; predicted with the video absent")
    return raw, None, warnings


def usable_rows(predictor: Predictor, table: pd.DataFrame, texts: list, sources: list[str], problems: dict
                ) -> tuple[list, list]:
    """The rows that can be predicted as (position, result so far, raw inputs), and the results list with each
    row that cannot be used named in it (and on stderr, the others still predicted). Warnings go to stderr."""
    results, usable = [None] * len(table), []  # by position: ids may repeat
    for position, row in enumerate(table.itertuples(index=False)):
        raw, problem, warnings = ({}, problems[position], []) if position in problems else \
            raw_inputs(predictor, row, texts[position])
        if problem is None:
            text = {"text": texts[position]} if sources[position] not in ("given", "absent") else {}
            usable.append((position, {"id": str(row.id), **text, "text_source": sources[position],
                                      "model": predictor.source}, raw))
        else:
            results[position] = {"id": str(row.id), "skipped": problem}
            print(f"predict: skipped {row.id}: {problem}", file=sys.stderr)
        for warning in warnings:
            print(f"predict: warning: {warning}", file=sys.stderr)
    if not usable:
        raise MmolreError("; ".join(r["skipped"] for r in results if r) or "no inputs")
    return usable, results


def encoded(encoder, items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, dim) features and mask of a batch's raw inputs; an absent one (None) has no frames (masked)."""
    present = [k for k, x in enumerate(items) if x is not None]
    features = dict(zip(present, encoder.encode([items[k] for k in present]) if present else ()))
    return pad([as_stored(features[k]) if k in features else torch.zeros(0, encoder.dim) for k in range(len(items))])


@torch.no_grad()
def predict_table(predictor: Predictor, table: pd.DataFrame, batch_size: int = 16,
                  transcriber: Transcriber | None = None, text_absent: bool = False) -> list[dict]:
    """One result per input row, in order: {id, [text,] text_source, sentiment, emotions}, or {id, skipped: reason}
    for a recording that cannot be used. Rows without a transcript are transcribed by `transcriber`; with
    `text_absent`, every row is scored with the text absent (masked)."""
    usable, results = usable_rows(predictor, table, *resolve_texts(table, transcriber, text_absent))
    heads = predictor.model.config.heads
    for start in range(0, len(usable), batch_size):
        positions, partial, raws = zip(*usable[start:start + batch_size])
        inputs = {}
        for m, encoder in predictor.encoders.items():
            values, mask = encoded(encoder, [r[m] for r in raws])
            inputs |= {m: values.to(predictor.device), f"{m}_mask": mask.to(predictor.device)}
        out = predictor.model(**inputs)
        read = {task: predictions(heads[task], output).cpu().numpy() for task, output
                in (("sa", out.sentiment), ("er", out.emotions)) if output is not None}
        for k, result in enumerate(partial):
            result = {**result, "sentiment": named(heads["sa"], read["sa"][k]) if "sa" in read else None}
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
                        help="a trained model folder (model.safetensors + config.json), or a hub id (owner/name, "
                             "as `mmolre publish` uploads it; downloaded once, then cached)")
    parser.add_argument("--revision", default=None, help="the hub commit (or branch, tag) of a hub --model; "
                                                         "default: its newest. The commit used is printed")
    parser.add_argument("--audio", type=Path, help="one recording (wav, flac, ogg; or any media file FFmpeg reads)")
    parser.add_argument("--video", type=Path, help="its video (mp4, ...), for a model that reads video; without "
                                                   "--audio, its audio track is the recording")
    parser.add_argument("--text", help="its transcript; without it, a speech recogniser transcribes the recording "
                                       "(--asr-model) and the transcript is printed with its source")
    parser.add_argument("--no-text", action="store_true", help="score with the text absent (masked, as the report's "
                                                               "'text absent' robustness row), no transcript needed")
    parser.add_argument("--asr-model", default=DEFAULT_ASR, help="a transformers automatic-speech-recognition model "
                        f"id or local folder, for recordings without a transcript (default: {DEFAULT_ASR})")
    parser.add_argument("--asr-language", default=None, help="the spoken language for a Whisper recogniser (e.g. "
                                                              "english, chinese); default: it detects it")
    parser.add_argument("--inputs", type=Path, help="a CSV (audio[, text, id, video]) or a folder of <name>.wav "
                                                    "(or .mp4) [+ <name>.txt]; rows without text are transcribed")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per input)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace, params: dict) -> None:
    if args.no_text and args.text is not None:
        raise MmolreError("--text and --no-text: give one of them")
    if args.revision is not None and Path(args.model).is_dir():
        raise MmolreError(f"--revision {args.revision}: {args.model} is a local folder; a revision pins a hub id")
    table = read_inputs(args.audio, args.text, args.inputs, args.video)
    device = pick_device(args.device)
    needs_asr = not args.no_text and table.text.isna().any()  # the recogniser first: a bad one fails before the model
    transcriber = load_transcriber(args.asr_model, args.asr_language, device) if needs_asr else None
    predictor = load_predictor(args.model, device, args.revision)
    results = predict_table(predictor, table, args.batch_size, transcriber, args.no_text)
    if args.json:
        print(json.dumps(results if args.inputs else results[0], indent=2))
        return
    print(f"model: {predictor.source}")
    for r in results:
        if "skipped" in r:
            print(f"{r['id']}: skipped ({r['skipped']})")
            continue
        if r["text_source"] == "absent":
            print(f"{r['id']}: text absent (--no-text): scored from the other modalities alone")
        elif "text" in r:
            print(f"{r['id']}: transcript ({r['text_source']}): {r['text']}")
        emotions = "  ".join(f"{e} {p:.2f}" for e, p in r.get("emotions", {}).items())
        sentiment = ("" if r["sentiment"] is None else f"sentiment {r['sentiment']:+.3f}  "
                     if isinstance(r["sentiment"], float) else
                     "  ".join(f"{c} {p:.2f}" for c, p in r["sentiment"].items()) + "  |  ")
        print(f"{r['id']}: {sentiment}{emotions}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("predict")
