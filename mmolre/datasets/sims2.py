"""CH-SIMS v2 (Liu et al., ICMI 2022): the layout, labels and scoring of CH-SIMS (datasets/sims.py)."""

from __future__ import annotations

from pathlib import Path

from mmolre.datasets import CorpusTable, sims
from mmolre.datasets.sims import EXTRA_COLUMNS, LABEL_SPACE, download  # noqa: F401 (the dataset's interface)

CORPORA = ("sims2",)
REFERENCE_COUNTS = {"CH-SIMS v2 (supervised part)": (2722, 647, 1034)}


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    return sims.tables(params, folder, raw_root, "sims2", REFERENCE_COUNTS)
