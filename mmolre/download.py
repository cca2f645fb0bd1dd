"""Stage `download`: get the raw corpus into data/raw/<dataset>/.

`demo` (the default) is generated here, offline and deterministically (mmolre/demo.py).
The CMU corpora (mosi, mosei, or cmu for both) come from their official sources (mmolre/cmu.py)
into a download cache, data/downloads/. When the server honours HTTP Range requests, only the
members the pipeline needs (16 kHz audio, transcripts, MOSI's label table) are fetched from the raw
archives, each checked against its CRC-32 (CMU_MOSEI.zip is about 126 GB, almost all video);
otherwise the whole archive is downloaded, resumed when cut off, and verified against the SHA-256
recorded on first success (data/downloads/MANIFEST.json, copied into the dataset folder).
`data.mirror` replaces the official URLs by <mirror>/<file name>; files you already have come in
with `--from-archive PATH` (repeatable; named as the official files are). The standard folds ship
with mmolre (mmolre/folds/), so no step needs the network for them.

A copy in the MMSA toolkit's raw layout (label.csv beside Raw/<video_id>/<clip_id>.mp4) comes in
with `--from-mmsa PATH` or params `data.mmsa_root` (for `cmu`, PATH holds MOSI/ and MOSEI/): audio
is decoded from the mp4 files; MMSA has no emotion labels, so such a corpus is sentiment only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from mmolre import MmolreError, cmu, demo, mmsa
from mmolre.fetch import Manifest, fetch, fetch_members, import_archive, safe_extract
from mmolre.files import atomic_dir
from mmolre.params import build

DATASETS = ("demo", "mosi", "mosei", "cmu")


def download(params: dict, raw_root: Path, downloads: Path = Path("data/downloads"),
             archives: list[Path] = ()) -> Path:
    """Produce data/raw/<dataset>/ for params['data']['dataset']; returns that folder."""
    dataset = params["data"]["dataset"]
    if dataset not in DATASETS:
        raise MmolreError(f"data.dataset={dataset!r}: choose one of {list(DATASETS)}")
    target = raw_root / dataset
    if dataset == "demo":
        cfg = build(demo.DemoConfig, params, "demo")
        with atomic_dir(target) as tmp:
            demo.generate(cfg, tmp, seed=params["data"]["seed"])
        return target
    mmsa_root = params["data"].get("mmsa_root")
    if mmsa_root:
        return import_mmsa_corpora(dataset, Path(mmsa_root), target)
    cached, manifest, pending = fetch_sources(dataset, params["data"].get("mirror"), downloads, archives)
    with atomic_dir(target) as tmp:
        for part in cmu.parts(dataset):
            folder = tmp / part if dataset == "cmu" else tmp
            folder.mkdir(parents=True, exist_ok=True)
            for name in cmu.SOURCES[part]:
                try:
                    if cached[name].is_dir():  # the needed members, fetched one by one
                        shutil.copytree(cached[name], folder, dirs_exist_ok=True, copy_function=link_or_copy)
                    elif name.endswith(".zip"):
                        safe_extract(cached[name], folder, include=cmu.NEEDED[part].search)
                    else:
                        cmu.read_csd(cached[name])  # opens as a computational sequence
                        import_archive(cached[name], folder / name)
                except MmolreError as e:
                    raise refused(cached[name], name in pending, e) from None
            for name in cmu.SOURCES[part]:  # proved good: opened and unpacked; only now trusted
                if name in pending:
                    manifest.record(name, pending.pop(name))
            entries = {name: manifest.entries[name] for name in cmu.SOURCES[part]}
            (folder / "MANIFEST.json").write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return target


def refused(path: Path, new: bool, error: MmolreError) -> MmolreError:
    """A file that did not open or unpack: a new one is moved aside (never recorded as good)."""
    if not new:
        return MmolreError(f"{error}; its checksum was recorded as good before, so the copy on disk changed: "
                           f"delete {path} and download or import it again")
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return MmolreError(f"{error}; moved aside to {bad}, nothing was recorded: download it again, or import a "
                       f"good copy with --from-archive")


def import_mmsa_corpora(dataset: str, root: Path, target: Path) -> Path:
    """data/raw/<dataset>/ from an MMSA raw layout at `root` (for cmu: root/MOSI and root/MOSEI)."""
    if not root.is_dir():
        raise MmolreError(f"data.mmsa_root={str(root)!r}: no such folder")
    with atomic_dir(target) as tmp:
        for part in cmu.parts(dataset):
            source = root / mmsa.CORPUS_FOLDERS[part] if dataset == "cmu" else root
            mmsa.import_mmsa(source, tmp / part if dataset == "cmu" else tmp)
    return target


def link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def fetch_sources(dataset: str, mirror: str | None, downloads: Path, archives) -> tuple[dict[str, Path], Manifest, dict]:
    """Every file the dataset needs, in the download cache: (file name -> path, the manifest, entries of
    files seen for the first time, to record once they have opened and unpacked). A file whose checksum
    is recorded is checked against it. A raw archive fetched member by member is a folder
    `<name>.members/` of the needed members (each checked by its CRC-32 on the way)."""
    wanted = {name: (url, part) for part in cmu.parts(dataset) for name, url in cmu.SOURCES[part].items()}
    given = {Path(a).name: Path(a) for a in archives}
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        raise MmolreError(f"--from-archive {unknown[0]}: {dataset} needs files named {sorted(wanted)}")
    manifest = Manifest(downloads / "MANIFEST.json")
    cached, pending = {}, {}
    for name, (url, part) in wanted.items():
        path = downloads / name
        source = url if not mirror else f"{mirror.rstrip('/')}/{name}"
        if name in given:
            import_archive(given[name], path)
            source = f"file:{given[name].resolve()}"
        elif not path.exists() and name.endswith(".zip"):
            members = downloads / f"{name}.members"
            if "members" in manifest.entries.get(name, {}) and members.is_dir():  # complete and checked earlier
                cached[name] = members
                continue
            got = fetch_members(source, members, cmu.NEEDED[part].search)
            if got is not None:
                print(f"download: {name}: {got['members']} members complete, CRC-32 checked "
                      f"({got['bytes_received'] / 1e9:.2f} GB transferred now)")
                manifest.entries[name] = {"source": source, "members": got["members"],
                                          "bytes_needed": got["bytes_needed"], "verified": "CRC-32 per member"}
                manifest.save()
                cached[name] = members
                continue
            print(f"download: {source} does not honour Range requests: downloading the whole archive")
            fetch(source, path)
        elif not path.exists():
            fetch(source, path)
        entry = manifest.verify(path)
        if entry is not None:
            pending[name] = {**entry, "source": source}
        cached[name] = path
    return cached, manifest, pending


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="where raw corpora go")
    parser.add_argument("--downloads", type=Path, default=Path("data/downloads"),
                        help="download cache: archives, partial downloads, MANIFEST.json")
    parser.add_argument("--from-archive", dest="archives", action="append", type=Path, default=[], metavar="PATH",
                        help="a file you already have (e.g. CMU_MOSI.zip); linked or copied in and verified")
    parser.add_argument("--from-mmsa", dest="mmsa_root", type=Path, default=None, metavar="PATH",
                        help="import the MMSA toolkit's raw layout (label.csv + Raw/<video>/<clip>.mp4) at PATH "
                             "instead of the CMU archives; same as --set data.mmsa_root=PATH")


def run(args: argparse.Namespace, params: dict) -> None:
    if args.mmsa_root is not None:
        params["data"]["mmsa_root"] = str(args.mmsa_root)
    folder = download(params, args.raw_root, args.downloads, args.archives)
    print(f"download: wrote {folder}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("download")
