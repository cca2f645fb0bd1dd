"""What a third modality costs one training step of the demo's model (fwd + bwd, the CPU's threads).

    dvc repro && python benchmarks/modalities_step.py            # models/trimodal's config, the demo's lengths
    python benchmarks/modalities_step.py --video-frames 16 6 3   # video lengths to time

The trimodal run's saved config, timed with text + audio only and with text + audio + video at each video
length; inputs are random (the cost does not depend on the values), all positions present. The default
lengths are the demo's means (text 14, audio 76, video 16 positions per utterance; from its feature
file). Results go to benchmarks/RESULTS.md by hand, with date, device and command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from train_step import timed

from mmolre.model import MMoLRE
from mmolre.model_config import MMoLREConfig


def step_seconds(config: dict, lengths: dict[str, int], batch: int, repeats: int) -> float:
    """Median seconds of one fwd + bwd of the model of `config` on the modalities of `lengths`."""
    values = {**config, "modalities": list(lengths), "dims": {m: config["dims"][m] for m in lengths}}
    torch.manual_seed(0)
    model = MMoLRE(MMoLREConfig.from_saved(values)).train()
    inputs = {}
    for m, length in lengths.items():
        inputs[m] = torch.randn(batch, length, values["dims"][m])
        inputs[f"{m}_mask"] = torch.ones(batch, length, dtype=torch.bool)
    labels = {"sentiment": torch.randn(batch), "emotions": torch.rand(batch, 6)}
    return timed(lambda: model(**labels, **inputs).loss.backward(), torch.device("cpu"), 3, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/trimodal"), help="a trained trimodal run's folder")
    parser.add_argument("--text-tokens", type=int, default=14)
    parser.add_argument("--audio-frames", type=int, default=76)
    parser.add_argument("--video-frames", type=int, nargs="+", default=[16, 6])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())["model"]
    bimodal = {"text": args.text_tokens, "audio": args.audio_frames}
    base = step_seconds(config, bimodal, args.batch, args.repeats)
    print(f"| modalities | video frames | fwd + bwd, ms | vs text + audio |\n|---|---|---|---|\n"
          f"| text + audio | | {base * 1e3:.1f} | 1.00 |")
    for frames in args.video_frames:
        seconds = step_seconds(config, {**bimodal, "video": frames}, args.batch, args.repeats)
        print(f"| text + audio + video | {frames} | {seconds * 1e3:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
