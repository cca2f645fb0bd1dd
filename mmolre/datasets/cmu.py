"""`cmu`: CMU-MOSI and CMU-MOSEI together, the paper's setting (one model, MSA on both, MER on MOSEI).

data/raw/cmu/mosi/ and data/raw/cmu/mosei/, each as its own dataset writes it; from the MMSA release,
`data.mmsa_root` holds MMSA's MOSI/ and MOSEI/ folders.
"""

from __future__ import annotations

from pathlib import Path

from mmolre.datasets import CorpusTable, mosei, mosi, sdk

PARTS = (mosi, mosei)
CORPORA = tuple(part.CORPORA[0] for part in PARTS)
EXTRA_COLUMNS = mosei.EXTRA_COLUMNS


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    sdk.check_archive_names(archives, [name for part in PARTS for name in part.ARCHIVE_NAMES], "cmu")
    root = params["data"].get("mmsa_root")
    for part in PARTS:
        mine = [a for a in archives if Path(a).name in part.ARCHIVE_NAMES]
        part.download(params, target / part.CORPORA[0], downloads, mine,
                      mmsa_root=str(Path(root) / part.MMSA_FOLDER) if root else None)


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    return [table for part in PARTS for table in part.tables(params, folder / part.CORPORA[0], raw_root)]
