"""Speech to text for `mmolre predict`: recordings that come without a transcript are transcribed by a transformers
automatic-speech-recognition model (Whisper by default; any such model id, or a local folder), long ones in
chunks, all of a call's recordings through one batched pipeline. Each transcript says where it came from:
`asr:<model>@<revision>` (the hub commit, or the SHA-256 of a local folder's weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmolre import MmolreError

DEFAULT_ASR = "openai/whisper-small"  # [ours] multilingual, small enough for a CPU
CHUNK_S = 30.0  # Whisper's window: longer recordings are transcribed in chunks of it


@dataclass
class Transcriber:
    pipe: object     # transformers' automatic-speech-recognition pipeline
    source: str      # asr:<model>@<revision>
    language: str | None = None


def revision_of(name: str, pipe) -> str:
    """The hub commit of a downloaded model, or for a local folder the SHA-256 (16 hex) of its weights."""
    commit = getattr(pipe.model.config, "_commit_hash", None)
    folder = Path(name)
    if not folder.is_dir():
        return commit or "unknown"
    from mmolre.fetch import sha256

    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return sha256(weights[0])[:16] if weights else "unknown"


def load_transcriber(name: str, language: str | None, device: torch.device) -> Transcriber:
    """The speech recogniser `name` (hub id or local folder); one line naming it when it cannot be loaded."""
    from transformers import pipeline

    try:
        pipe = pipeline("automatic-speech-recognition", model=name, device=device, chunk_length_s=CHUNK_S)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MmolreError(f"--asr-model {name!r} could not be loaded ({first}); give a transformers speech "
                          "recognition model id (online) or a local folder, or pass --text / --no-text") from None
    if language and pipe.model.config.model_type != "whisper":
        raise MmolreError(f"--asr-language {language!r}: {name} is not a Whisper model and takes no language; "
                          "leave --asr-language out")
    return Transcriber(pipe, f"asr:{name}@{revision_of(name, pipe)}", language)


def transcribe(transcriber: Transcriber, waves: list[np.ndarray], sample_rate: int, batch_size: int = 8
               ) -> list[str]:
    """The transcript of each recording (mono float32 at `sample_rate`), stripped; "" where nothing was heard."""
    kwargs = {"generate_kwargs": {"language": transcriber.language, "task": "transcribe"}} if transcriber.language else {}
    inputs = [{"raw": np.asarray(w, np.float32), "sampling_rate": sample_rate} for w in waves]
    try:
        outputs = transcriber.pipe(inputs, batch_size=batch_size, **kwargs)
    except ValueError as e:  # Whisper: an unsupported language
        raise MmolreError(f"--asr-language {transcriber.language!r}: {str(e).strip().splitlines()[0]}") from None
    return [str(out["text"]).strip() for out in outputs]
