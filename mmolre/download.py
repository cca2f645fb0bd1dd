"""Stage `download`: get the raw corpus into data/raw/<dataset>/.

`demo` (the default) is generated here, offline and deterministically (mmolre/demo.py).
The CMU corpora (mosi, mosei, or cmu for both) come from their official sources (mmolre/cmu.py)
into a download cache, data/downloads/: resumed when cut off, retried, verified against the
SHA-256 recorded on first success (data/downloads/MANIFEST.json, copied into the dataset
folder). `data.mirror` replaces the official URLs by <mirror>/<file name>; files you already
have come in with `--from-archive PATH` (repeatable; named as the official files are).
Only the audio and transcript members of the archives are unpacked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmolre import MmolreError, cmu, demo
from mmolre.fetch import Manifest, fetch, import_archive, safe_extract
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
    cached, manifest = fetch_sources(dataset, params["data"].get("mirror"), downloads, archives)
    with atomic_dir(target) as tmp:
        for part in cmu.parts(dataset):
            folder = tmp / part if dataset == "cmu" else tmp
            folder.mkdir(parents=True, exist_ok=True)
            for name in cmu.SOURCES[part]:
                if name.endswith(".zip"):
                    safe_extract(cached[name], folder, include=cmu.NEEDED[part].search)
                else:
                    import_archive(cached[name], folder / name)
            entries = {name: manifest.entries[name] for name in cmu.SOURCES[part]}
            (folder / "MANIFEST.json").write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return target


def fetch_sources(dataset: str, mirror: str | None, downloads: Path, archives) -> tuple[dict[str, Path], Manifest]:
    """Every file the dataset needs, in the download cache and verified: (file name -> path, the manifest)."""
    wanted = {name: url for part in cmu.parts(dataset) for name, url in cmu.SOURCES[part].items()}
    given = {Path(a).name: Path(a) for a in archives}
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        raise MmolreError(f"--from-archive {unknown[0]}: {dataset} needs files named {sorted(wanted)}")
    manifest = Manifest(downloads / "MANIFEST.json")
    cached = {}
    for name, url in wanted.items():
        path = downloads / name
        source = url if not mirror else f"{mirror.rstrip('/')}/{name}"
        if name in given:
            import_archive(given[name], path)
            source = f"file:{given[name].resolve()}"
        elif not path.exists():
            fetch(source, path)
        manifest.verify_or_record(path, source)
        cached[name] = path
    return cached, manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="where raw corpora go")
    parser.add_argument("--downloads", type=Path, default=Path("data/downloads"),
                        help="download cache: archives, partial downloads, MANIFEST.json")
    parser.add_argument("--from-archive", dest="archives", action="append", type=Path, default=[], metavar="PATH",
                        help="a file you already have (e.g. CMU_MOSI.zip); linked or copied in and verified")


def run(args: argparse.Namespace, params: dict) -> None:
    folder = download(params, args.raw_root, args.downloads, args.archives)
    print(f"download: wrote {folder}")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("download")
