"""Datasets as plugins: `data.dataset` names an entry of REGISTRY, and its module is the dataset.

A dataset module provides
- `CORPORA`: the values of the utterance table's `dataset` column it produces (metrics are reported
  per corpus: `cmu` gives mosi and mosei);
- `download(params, target, downloads, archives)`: fill the fresh folder `target` (data/raw/<dataset>/,
  written atomically by the download stage) from the network, the download cache `downloads` or the
  user's own files `archives`;
- `tables(params, folder, raw_root) -> list[CorpusTable]`: the utterance rows of data/raw/<dataset>/
  (`folder`), with audio paths relative to `raw_root`, and the counts of what was left out;
and where it differs from the CMU corpora's
- `LABEL_SPACE`: the name of its label space in mmolre/label_spaces.py (default "cmu"), and
  `LABEL_SPACE_CHOICES` the others `data.label_space` may pick (e.g. IEMOCAP's 4 or 6 classes);
- `EXTRA_COLUMNS`: {column: type} of corpus-specific columns the utterance table keeps (nullable), e.g.
  SIMS's unimodal labels or MELD's dialogue.

Adding a dataset is one module here plus its name in DATASETS below: the download and prepare stages
dispatch by that name (registry.py, which imports the modules by name; the dataset modules import this
package, never the registry), the params schema takes its allowed values from it, and dvc.yaml's download and
prepare stages depend on this whole folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmolre.modalities import MODALITIES

if TYPE_CHECKING:
    import pandas as pd

# data.dataset's values, each the name of its module here (registry.py loads it only when used: the stages that
# need no corpus stay light)
DATASETS = ("demo", "mosi", "mosei", "cmu", "sims", "sims2", "meld", "iemocap", "custom")


PROCESSED_FOLDER = "processed"  # data/raw/<dataset>/processed/: a processed file's import (datasets/processed.py)


def from_processed(params: dict, raw_root: Path | None = None) -> bool:
    """Whether data/raw/<dataset>/ is (to be) a processed file's import: data.processed is set, or the folder under
    `raw_root` holds one (as the MMSA layout is recognised by its folder, after `download --from-processed`)."""
    folder = raw_root / params["data"]["dataset"] / PROCESSED_FOLDER if raw_root is not None else None
    return bool(params["data"].get("processed")) or (folder is not None and (folder / "source.json").is_file())


def chosen_label_space(params: dict, own: str, choices: tuple[str, ...] | None = None) -> str:
    """The label space of a dataset labelled in `own` (and `choices`): `data.label_space` when set (among the
    choices), else its own."""
    from mmolre import MmolreError

    chosen = params["data"].get("label_space") or own
    choices = choices or (own,)
    if chosen not in choices:
        raise MmolreError(f"data.label_space={chosen!r}: {params['data']['dataset']} is labelled in "
                          f"{', '.join(choices)}")
    return chosen


VIDEO_COLUMNS = {MODALITIES["video"].source: str}  # the column of a dataset whose clips can carry video (as audio_path)


def kept_video(path: Path, raw_root: Path) -> str | None:
    """A clip's video_path (relative to raw_root) when download kept its mp4 (data.keep_video), else None."""
    return path.relative_to(raw_root).as_posix() if path.is_file() else None


def video_note(folder: Path) -> str:
    """The counts line on video: how many clips download kept in `folder`, or why there are none."""
    kept = sum(1 for _ in folder.rglob("*.mp4")) if folder.is_dir() else 0
    if not kept:
        return "no video: data.keep_video was false at download (set it and rerun download for the video modality)"
    return (f"video: {kept} clips kept in {folder.name}/ (data.keep_video); one without a video stream is an absent "
            "video in featurize's counts")


def spanning(videos: pd.Series, splits: pd.Series) -> dict[str, list[str]]:
    """The videos (speakers, dialogues) whose utterances sit in more than one split, with those splits, by name."""
    per_video = splits.groupby(videos.to_numpy()).unique()
    return {str(v): sorted(s) for v, s in sorted(per_video.items(), key=lambda i: str(i[0])) if len(s) > 1}


def split_leaks(videos: pd.Series, splits: pd.Series) -> list[str]:
    """The videos (speakers, dialogues) whose utterances sit in more than one split."""
    return list(spanning(videos, splits))


def leak_error(where: str, leaks: list[str]) -> Exception:
    """A split that mmolre or the user made, and that puts a video in several splits: refused, naming them."""
    from mmolre import MmolreError

    return MmolreError(f"{where}: {len(leaks)} video(s) have utterances in more than one split ("
                       f"{', '.join(leaks[:10])}{' ...' if len(leaks) > 10 else ''}): the splits must be "
                       "speaker-independent; fix the split, or set prepare.split_overlap=warn to keep it (recorded "
                       "in counts.txt and the report)")


OVERLAP = "split overlap: "  # how counts.txt says it (the report's data section reads it)


def overlap_warning(where: str, leaks: list[str], whose: str = "this release's split") -> str:
    """The one line download and prepare print for a split that puts videos in several splits, kept."""
    return (f"{where}: warning: {whose} is not video-independent: {len(leaks)} video(s) span train/valid/test "
            f"({', '.join(leaks[:5])}{' ...' if len(leaks) > 5 else ''}); results on it are not speaker-independent")


def overlap_lines(videos: pd.Series, splits: pd.Series, whose: str = "this release's split") -> list[str]:
    """counts.txt lines: the count, then every such video with its splits (empty when there is none)."""
    several = spanning(videos, splits)
    if not several:
        return []
    return [f"{OVERLAP}{whose} is not video-independent: {len(several)} video(s) span train/valid/test; results "
            "on it are not speaker-independent", *(f"  {video}: {', '.join(s)}" for video, s in several.items())]


def record_sources(folder: Path, entries: dict[str, dict]) -> None:
    """The dataset folder's MANIFEST.json gains `entries` (file name -> where from, SHA-256, ...), keeping the
    others (a corpus may come from several routes: MMSA's label.csv and the SDK's label sequence)."""
    import json

    manifest = folder / "MANIFEST.json"
    recorded = json.loads(manifest.read_text()) if manifest.is_file() else {}
    manifest.write_text(json.dumps({**recorded, **entries}, indent=2, sort_keys=True) + "\n")


def overlap_record(leaks: list[str]) -> dict:
    """What MANIFEST.json records of a release's split."""
    return {"video_independent": not leaks, "videos_in_several_splits": len(leaks), "first": leaks[:20]}


@dataclass
class CorpusTable:
    """What a dataset's reader found for one corpus: usable rows, segments left out (reason -> ids), rows
    that broke a cross-check (utterance_id, column, rule, value; failed or quarantined by `prepare`),
    and the lines of its counts report (counts.txt; empty for the demo)."""
    table: pd.DataFrame
    dropped: dict[str, list[str]] = field(default_factory=dict)
    invalid: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    split_from: str = "release"  # who made the split: the release (a video in several splits is reported), or
    # "user" (a manifest's split column) or "mmolre" (splits it draws): refused unless prepare.split_overlap=warn
