"""Models as folders, the Hugging Face way: `model.safetensors` (tensors only: nothing in it can run) and
`config.json` (the model config under "model", plus provenance: run, dataset, best epoch, encoders and
their revisions, the feature file's hash). `from_pretrained` takes such a folder, or a hub repository id
when online (only those two files are downloaded)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from mmolre import MmolreError, __version__
from mmolre.files import atomic_dir

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


class PretrainedMixin:
    """save_pretrained / from_pretrained for an nn.Module built from one dataclass (`config_class`)."""

    config_class: type

    @classmethod
    def build(cls, config):
        """The module of a config (a class may pick another, e.g. by the config's architecture)."""
        return cls(config)

    def save_pretrained(self, folder: str | Path, **provenance) -> Path:
        """Write `folder` (replaced as a unit): the weights as safetensors, config and provenance as JSON."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            save_model(self, str(tmp / WEIGHTS_NAME))  # shared experts are stored once
            config = {"format": "mmolre", "mmolre_version": __version__,
                      "model": dataclasses.asdict(self.config), **provenance}
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str = "cpu",
                        revision: str | None = None):
        """The model (eval mode) of a folder written by save_pretrained, or of a hub repository id;
        its provenance is `model.provenance`."""
        folder = resolve(name_or_path, revision)
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
            model = cls.build(cls.config_class.from_saved(config["model"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise MmolreError(f"{folder / CONFIG_NAME}: not an mmolre model config ({type(e).__name__}: {e})") from None
        try:
            load_model(model, str(folder / WEIGHTS_NAME), strict=True, device=str(device))
        except (SafetensorError, OSError, RuntimeError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MmolreError(f"{folder / WEIGHTS_NAME}: not loadable ({reason}); the file is corrupt, truncated "
                              "or from another model: train again or fetch it again") from None
        model.provenance = {k: v for k, v in config.items() if k != "model"} | origin(name_or_path, folder)
        return model.to(device).eval()


def origin(name_or_path: str | Path, folder: Path) -> dict:
    """{"hub": {"repo", "revision"}} for a model downloaded from the hub (its snapshot folder is named by the
    commit), else {}."""
    if Path(name_or_path).is_dir():
        return {}
    return {"hub": {"repo": str(name_or_path), "revision": folder.name}}


def resolve(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local model folder, or the download of hub repository `name_or_path` (config and weights only)."""
    path = Path(name_or_path)
    if path.is_file():
        raise MmolreError(f"{path}: a model is a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}; this is a file "
                          "(pickled checkpoints are never loaded: nothing in them is executed)")
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise MmolreError(f"{path}: no {CONFIG_NAME}, so not an mmolre model folder (train one with `mmolre train`)")
        return path
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise MmolreError(f"{name_or_path}: no such model folder (run `mmolre train`), nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise MmolreError(f"{name_or_path}: not a local model folder, and the hub did not give it "
                          f"({type(e).__name__}); offline, pass a folder") from None
