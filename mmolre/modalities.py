"""The modalities: one entry each, and every stage iterates over this table.

Featurize reads each modality's raw input and encodes it into its HDF5 group; batches pad it with a
mask; the model gives it an input projection, a UniTSE and a place in the fusion; evaluation scores
"<modality> absent"; model-info counts it; predict encodes it. Adding a modality is one entry here
plus its reader and encoder. Torch-free (the model's rules import it): readers and encoders are named
"module:function" and imported when featurize first uses them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str            # its HDF5 group, the model's inputs `<name>` / `<name>_mask`, its name in runs.<run>.modalities
    source: str          # the utterance-table column of its raw input: the text itself, or a file under data/raw
    encoder: str         # "module:function" (featurize params, device) -> encoder (name, revision, dim, encode(inputs))
    reader: str | None = None   # "module:function" (row, raw_root, featurize params) -> one raw input, called in
                                # DataLoader workers; None: the source column's value itself (batched by its length)
    encoder_param: str | None = None  # the featurize key naming its encoder (null there: not featurized)
    optional: bool = False  # an utterance may lack it (no frames = absent, masked): a clip without a video stream
    paper_dim: int = 768    # its features' width in the paper's setting (model-info's default)
    example_length: int = 25  # model-info's default utterance: 50 text tokens, 250 audio frames (5 s), 25 video frames

    def load(self, what: str):
        """The reader or encoder factory (`what`), imported."""
        module, function = getattr(self, what).split(":")
        return getattr(importlib.import_module(module), function)


MODALITIES: dict[str, Modality] = {m.name: m for m in (
    Modality("text", "text", "mmolre.encoders:text_encoder", encoder_param="text_encoder", example_length=50),
    Modality("audio", "audio_path", "mmolre.encoders:audio_encoder", "mmolre.encoders:read_audio",
             encoder_param="audio_encoder", example_length=250),
    Modality("video", "video_path", "mmolre.encoders:video_encoder", "mmolre.encoders:read_video",
             encoder_param="video_encoder", optional=True),
)}
PAPER_MODALITIES = ("text", "audio")  # the paper's model reads these two


def featurized(featurize_section: dict) -> tuple[str, ...]:
    """The modalities featurize encodes: those whose encoder key is set (or that have none)."""
    return tuple(m.name for m in MODALITIES.values()
                 if m.encoder_param is None or featurize_section.get(m.encoder_param) is not None)
