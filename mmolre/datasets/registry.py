"""Dataset modules by name (`data.dataset`, mmolre/datasets/__init__.py DATASETS): the dispatch of the download
and prepare stages. Only the stages import this module; the dataset modules never do, so that loading them by
name leads nowhere back."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from mmolre.datasets import DATASETS, chosen_label_space, from_processed

MODULES = {name: f"mmolre.datasets.{name}" for name in DATASETS}
PROCESSED_MODULE = "mmolre.datasets.processed"  # a processed file's import, whatever the dataset


def load(name: str) -> ModuleType:
    """The module of dataset `name`; MmolreError naming the choices when there is none."""
    from mmolre import MmolreError

    if name not in MODULES:
        raise MmolreError(f"data.dataset={name!r}: choose one of {sorted(MODULES)}")
    return importlib.import_module(MODULES[name])


def source(params: dict, raw_root: Path | None = None) -> ModuleType:
    """The module that downloads and reads data/raw/<dataset>/: the dataset's own, or datasets/processed.py for
    a processed file's import (`from_processed`)."""
    if from_processed(params, raw_root):
        return importlib.import_module(PROCESSED_MODULE)
    return load(params["data"]["dataset"])


def label_space(params: dict) -> str:
    """The label space of data.dataset: `data.label_space` when set (among the dataset's choices), else its own."""
    from mmolre.label_spaces import DEFAULT

    module = load(params["data"]["dataset"])
    own = getattr(module, "LABEL_SPACE", DEFAULT)
    return chosen_label_space(params, own, getattr(module, "LABEL_SPACE_CHOICES", None))


def extra_columns(params: dict, raw_root: Path | None = None) -> dict[str, type]:
    """The corpus columns of the utterance table: the dataset's, or those a processed file fills."""
    if from_processed(params, raw_root):
        return source(params, raw_root).extra_columns(params["data"]["dataset"])
    return getattr(load(params["data"]["dataset"]), "EXTRA_COLUMNS", {})
