"""File helpers: outputs that a crash never leaves looking complete, and audio headers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from mmolre import MmolreError


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target`, on failure it is removed."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is renamed to `target`, on failure removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def audio_info(path: str | Path):
    """soundfile's header of `path` (frames, samplerate, ...), or None when it is missing or not audio.
    soundfile is imported here: training and evaluation import this module and never read audio."""
    import soundfile as sf

    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None


def audio_duration(path: str | Path) -> float | None:
    """Seconds of audio in `path` (from its header), or None when it is missing or unreadable."""
    info = audio_info(path)
    return info.frames / info.samplerate if info and info.frames > 0 else None


def audio_problem(path: str | Path) -> str | None:
    """None for usable audio; "unreadable" (missing, not audio, no frames) or "truncated" (a readable file
    whose header promises more audio than it holds: libsndfile reads such a cut-off copy without complaint,
    shorter, and says so only in its log). One header read."""
    info = audio_info(path)
    if info is None or info.frames <= 0:
        return "unreadable"
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info, re.MULTILINE)
    return "truncated" if match and int(match.group(2)) < int(match.group(1)) else None


def copy_clip(source: Path, target: Path) -> None:
    """A media file copied as it is (never linked: DVC may make its cache read-only, and with it a linked original)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of a media file as mono float32 at `sample_rate`."""
    import av  # only media decoding needs FFmpeg

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MmolreError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks += [out.to_ndarray()[0] for out in resampler.resample(frame)]
            chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise MmolreError(f"{path}: cannot decode ({e})") from None
    if not chunks:
        raise MmolreError(f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks)


def clean(value):
    """JSON without NaN: NaN -> null, floats rounded to 6 significant digits for stable diffs."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.6g}")
    return value


def write_json(path: Path, data) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(clean(data), indent=2) + "\n")
