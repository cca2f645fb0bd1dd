"""CH-SIMS (Yu et al., ACL 2020) and CH-SIMS v2 (Liu et al., ICMI 2022): Chinese clips with a multimodal
sentiment label and one per modality, all in [-1, 1], from the MMSA toolkit's release (`--from-mmsa ROOT`:
label.csv beside Raw/<video_id>/<clip_id>.mp4; `clip_id` zero-padded, e.g. "0001"; columns read by name).

The utterance table keeps the unimodal labels label_T, label_A, label_V as columns; the sentiment is
`label`, the split MMSA's `mode`. Scored as MMSA scores SIMS (mmolre/metrics.py: sims_metrics). Chinese text
needs a Chinese encoder: `featurize.text_encoder` takes any transformers id (e.g. bert-base-chinese).
"""

from __future__ import annotations

from pathlib import Path

from mmolre import MmolreError
from mmolre.datasets import VIDEO_COLUMNS, CorpusTable, mmsa, sdk
from mmolre.params import keeps_video

CORPORA = ("sims",)
LABEL_SPACE = "sims"
UNIMODAL = ("label_T", "label_A", "label_V")
EXTRA_COLUMNS = {**{column: float for column in UNIMODAL}, **VIDEO_COLUMNS}
REFERENCE_COUNTS = {"CH-SIMS (the paper's split)": (1368, 456, 457)}


def download(params: dict, target: Path, downloads: Path, archives=()) -> None:
    root = params["data"].get("mmsa_root")
    if not root:
        raise MmolreError(f"{params['data']['dataset']}: comes from the MMSA release only: "
                          "`mmolre download --from-mmsa PATH` (the folder holding label.csv and Raw/)")
    sdk.check_archive_names(archives, (), f"{params['data']['dataset']} from the MMSA release (which holds all its labels)")
    mmsa.import_mmsa(Path(root), target, keeps_video(params))


def tables(params: dict, folder: Path, raw_root: Path, corpus: str = "sims",
           references: dict = REFERENCE_COUNTS) -> list[CorpusTable]:
    table = mmsa.mmsa_table(folder, raw_root, corpus, keep=UNIMODAL)
    table.notes.append("unimodal labels label_T, label_A, label_V kept as columns")
    table.report = sdk.count_report(corpus, table, references)
    return [table]
