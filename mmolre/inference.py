"""A trained model on feature rows: loading a model folder and running it (evaluate, predict and training's
validation share these; nothing here trains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmolre import MmolreError
from mmolre.batches import FeatureStore, loader, to_device
from mmolre.features import FeatureFile
from mmolre.label_spaces import LABEL_SPACES
from mmolre.architectures import from_pretrained
from mmolre.model import MMoLRE, predictions


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", revision: str | None = None
                    ) -> tuple[MMoLRE, dict]:
    """The model of a model folder or hub id (at `revision`), whatever its arch (eval mode), and its provenance
    (mmolre/hub.py; never a pickle)."""
    model = from_pretrained(path, device, revision)
    return model, model.provenance


@torch.no_grad()
def infer(model: MMoLRE, features: FeatureFile, indices, batch_size: int, device: torch.device,
          return_routing: bool = False, store: FeatureStore | None = None, transform=None) -> dict:
    """Sentiment and emotion predictions as the heads' tasks read them (model.predictions: for cmu sentiment
    (N,) and emotion probabilities (N, 6); NaN for a task without a head), mean loss (NaN on features of
    another label space), and (optionally)
    routing, in the order of `indices`; `transform` changes each batch first (e.g. a missing modality)."""
    model.eval()
    indices = np.asarray(indices)
    position = {int(i): k for k, i in enumerate(indices)}
    space, heads = LABEL_SPACES[model.config.label_space], model.config.heads
    shape = lambda task: ((0,) if task not in space else () if space[task].outputs == 1 else (space[task].outputs,))
    sentiment, emotions = np.zeros((len(indices), *shape("sa"))), np.zeros((len(indices), *shape("er")))
    routing: dict[str, np.ndarray] = {}
    loss_sum = 0.0
    # labels of another label space (a transfer corpus) are not the model's: no loss then
    skip = {"index"} | ({"sentiment", "emotions"} if features.label_space != model.config.label_space else set())
    for batch in loader(features, indices, model.config.modalities, batch_size, shuffle=False, store=store,
                        dialogues=model.config.context == "dialogue"):
        batch = to_device(batch, device)
        if transform is not None:
            batch = transform(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**{k: v for k, v in batch.items() if k not in skip}, return_routing=return_routing)
        rows = [position[i] for i in batch["index"].tolist()]  # one copy to the host, not one per utterance
        for array, task, output in ((sentiment, "sa", out.sentiment), (emotions, "er", out.emotions)):
            array[rows] = predictions(heads[task], output).cpu().numpy() if output is not None else np.nan
        loss_sum += float(out.loss) * len(rows) if out.loss is not None else np.nan
        for key, value in out.routing.items():
            routing.setdefault(key, np.zeros((len(indices), value.shape[-1])))[rows] = value.float().cpu().numpy()
    return {"sentiment": sentiment, "emotions": emotions, "loss": loss_sum / max(len(indices), 1),
            "routing": routing}


def trained_model(path: Path, run: str, features: FeatureFile, device: torch.device):
    """The model of `path`, refused when it was trained on other features than `features`."""
    model, meta = load_checkpoint(path, device)
    if meta["features"]["params_hash"] != features.attrs["params_hash"]:
        raise MmolreError(f"{path} was trained on other features "
                          f"({meta['features']['text_encoder']} + {meta['features']['audio_encoder']}, "
                          f"hash {meta['features']['params_hash']}); rerun `mmolre train --run {run}`")
    return model
