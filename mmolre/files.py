"""File helpers: outputs that a crash never leaves looking complete, audio headers, and text files in the
encodings people's tools write."""

from __future__ import annotations

import codecs
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


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE before UTF-16 LE: same start


def read_text(path: Path, what: str = "file", fallback: str | None = None) -> str:
    """A text file's contents: decoded by its byte-order mark (a spreadsheet's "Unicode text" is UTF-16), else
    as UTF-8, else as `fallback` (an encoding a corpus is known to use); otherwise one line saying what was found
    and how to convert it (`what` names the file's role, e.g. "manifest")."""
    data = Path(path).read_bytes()
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as e:
                raise MmolreError(f"{path}: the {what} starts with a {encoding} byte-order mark but is not valid "
                                  f"{encoding} at byte {e.start}; save it again as CSV UTF-8") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if fallback:
            return data.decode(fallback, errors="replace")
        raise MmolreError(not_utf8(path, what, data, e)) from None


def not_utf8(path: Path, what: str, data: bytes, error: UnicodeDecodeError) -> str:
    """The one line for a text file that is not UTF-8: where, what it looks like, how to convert it."""
    line = data.count(b"\n", 0, error.start) + 1
    looks = ("UTF-16 without a byte-order mark" if data[:200].count(b"\x00") > len(data[:200]) // 4 else
             "Latin-1 / Windows-1252 (a spreadsheet's plain \"CSV\" export)")
    source = "utf-16" if looks.startswith("UTF-16") else "cp1252"
    return (f"{path}: the {what} is not UTF-8 (byte 0x{data[error.start]:02x} on line {line}); it looks like "
            f"{looks}. Save it as \"CSV UTF-8\" or convert it: iconv -f {source} -t utf-8 '{path}' > "
            f"'{Path(path).with_suffix('.utf8' + Path(path).suffix)}'")
