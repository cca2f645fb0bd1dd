"""A trained model on feature rows: loading a model folder and running it (evaluate, predict and training's
validation share these; nothing here trains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmolre.batches import FeatureStore, loader, to_device
from mmolre.features import FeatureFile
from mmolre.model import MMoLRE


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[MMoLRE, dict]:
    """The model of a model folder (eval mode) and its provenance (mmolre/hub.py; never a pickle)."""
    model = MMoLRE.from_pretrained(path, device)
    return model, model.provenance


@torch.no_grad()
def infer(model: MMoLRE, features: FeatureFile, indices, batch_size: int, device: torch.device,
          return_routing: bool = False, store: FeatureStore | None = None, transform=None) -> dict:
    """Sentiment predictions (N,), emotion probabilities (N, 6), mean loss, and (optionally) routing,
    in the order of `indices`; `transform` changes each batch first (e.g. evaluate's missing modality)."""
    model.eval()
    indices = np.asarray(indices)
    position = {int(i): k for k, i in enumerate(indices)}
    sentiment, emotions = np.zeros(len(indices)), np.zeros((len(indices), model.config.n_emotions))
    routing: dict[str, np.ndarray] = {}
    loss_sum = 0.0
    for batch in loader(features, indices, model.config.modalities, batch_size, shuffle=False, store=store):
        batch = to_device(batch, device)
        if transform is not None:
            batch = transform(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**{k: v for k, v in batch.items() if k != "index"}, return_routing=return_routing)
        rows = [position[i] for i in batch["index"].tolist()]  # one copy to the host, not one per utterance
        sentiment[rows] = out.sentiment.float().cpu().numpy() if out.sentiment is not None else np.nan
        emotions[rows] = torch.sigmoid(out.emotions.float()).cpu().numpy() if out.emotions is not None else np.nan
        loss_sum += float(out.loss) * len(rows)
        for key, value in out.routing.items():
            routing.setdefault(key, np.zeros((len(indices), value.shape[-1])))[rows] = value.float().cpu().numpy()
    return {"sentiment": sentiment, "emotions": emotions, "loss": loss_sum / max(len(indices), 1),
            "routing": routing}
