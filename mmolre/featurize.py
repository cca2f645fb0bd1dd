"""Stage `featurize`: frozen encoders -> data/features/<dataset>/<text-tag>__<audio-tag>[__<video-tag>].h5.

Every modality of mmolre/modalities.py whose encoder is set (`featurize.<modality>_encoder`; video only when
`video_encoder` is given) is read and encoded by its registry entry (the encoders and readers are in
mmolre/encoders.py). The file is written under a temporary name and renamed when complete. An utterance
without a video stream (or file) has no video frames: absent, counted in the summary line and in the
group's `stats_absent`.

Validation: every utterance's features must be finite, non-empty, of the encoder's width and
within |value| <= 1e4 (mmolre/features.py). A failing utterance is named (id, modality, what is
wrong) and the stage fails (finished windows are kept, so a rerun resumes), or, with
`featurize.on_invalid: quarantine`, it is left out of the file and listed in
`<file stem>.rejected.csv` beside it. Short audio: a segment shorter than 0.1 s (0 samples
included) is zero-padded to 0.1 s, so every encoder sees at least one frame's worth of samples;
digital silence is encoded as it is (both default encoders give finite features for it: the
filterbank floors the energy, transformers extractors normalise with an epsilon), and whatever an
encoder returns is validated as above.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm import tqdm

from mmolre import MmolreError, __version__
from mmolre.datasets import from_processed
from mmolre.device import distributed_context, pick_device, process_group, rank_device
from mmolre.features import PROCESSED_FILE, FeatureWriter, block_problem, feature_path
from mmolre.files import atomic_file
from mmolre.label_spaces import DEFAULT
from mmolre.modalities import MODALITIES, featurized
from mmolre.params import FeaturizeParams, build, params_hash

SECTIONS = ("data", "featurize")  # the params it reads

def batches_by_length(lengths, batch_size: int, max_total: float = float("inf")) -> list[np.ndarray]:
    """Indices sorted by length, cut into batches of at most `batch_size` items whose padded size
    (items x longest) stays within `max_total` (a batch holds at least one item)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, current = [], []
    for i in order:
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[i] > max_total):
            batches.append(np.array(current))
            current = []
        current.append(i)
    return batches + ([np.array(current)] if current else [])


class RawRows(torch.utils.data.Dataset):
    """Row i of the utterance table -> (i, {modality: raw input}) for the modalities read from files (their
    registry readers), decoded in DataLoader workers."""

    def __init__(self, table: pd.DataFrame, raw_root: Path, cfg: FeaturizeParams, encoders: dict):
        self.rows = table.to_dict("records")
        self.raw_root, self.cfg, self.encoders = raw_root, cfg, encoders
        self.readers = {m: MODALITIES[m].load("reader") for m in encoders}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return i, {m: read(self.rows[i], self.raw_root, self.cfg, self.encoders[m]) for m, read in self.readers.items()}


def as_decoded(items):
    """The DataLoader's collate: the (row, raw inputs) pairs as they are (they differ in length)."""
    return items


def _save_chunk(path: Path, outputs: dict[str, list[np.ndarray]], times: dict[str, list[np.ndarray]],
                rejected: list[dict]) -> None:
    arrays = {}
    for m, blocks in outputs.items():
        arrays |= {m: np.concatenate(blocks).astype(np.float16), f"{m}_lengths": [len(x) for x in blocks]}
    arrays |= {f"{m}_times": np.concatenate(t).astype(np.float32) for m, t in times.items()}
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, rejected=json.dumps(rejected))


def _load_chunk(path: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """A chunk's blocks and frame times per modality."""
    with np.load(path) as chunk:
        modalities = [k.removesuffix("_lengths") for k in chunk.files if k.endswith("_lengths")]
        cuts = {m: np.cumsum(chunk[f"{m}_lengths"])[:-1] for m in modalities}
        return ({m: np.split(chunk[m], cuts[m]) for m in modalities},
                {m: np.split(chunk[f"{m}_times"], cuts[m]) for m in modalities if f"{m}_times" in chunk.files})


def _chunk_rejected(path: Path) -> list[dict]:
    """A chunk's quarantined utterances, read without its features (an .npz member is loaded on access)."""
    with np.load(path) as chunk:
        return json.loads(str(chunk["rejected"]))


def check_window(ids: list[str], outputs: dict[str, list[np.ndarray]], times: dict[str, list[np.ndarray]],
                 dims: dict[str, int], on_invalid: str) -> list[dict]:
    """Validate one window's features. `fail`: raise naming the first bad utterance; `quarantine`:
    empty the bad utterances' blocks and frame times (in place) and return them as (row in window,
    utterance_id, modality, problem) records."""
    rejected = []
    for modality, blocks in outputs.items():
        for k, block in enumerate(blocks):
            problem = block_problem(block, dims[modality], optional=MODALITIES[modality].optional)
            if problem:
                rejected.append({"row": k, "utterance_id": ids[k], "modality": modality, "problem": problem})
    if rejected and on_invalid == "fail":
        first = rejected[0]
        raise MmolreError(f"utterance {first['utterance_id']!r} ({first['modality']}): {first['problem']} "
                          f"({len(rejected)} bad block(s) in this window); set featurize.on_invalid=quarantine "
                          "to leave such utterances out (they are listed in <file>.rejected.csv)")
    for record in rejected:
        for modality, blocks in outputs.items():
            blocks[record["row"]] = np.zeros((0, dims[modality]), np.float32)
        for frame_times in times.values():
            frame_times[record["row"]] = np.zeros(0, np.float32)
    return rejected


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise MmolreError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise MmolreError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


@dataclass
class Chunks:
    """The finished windows of one featurization, one .npz each under `folder` (<out_root>/.partial/...)."""
    folder: Path
    window: int  # rows encoded together (batch_size x 8); batches inside a window are formed by length
    rows: int

    @property
    def windows(self) -> range:
        return range(-(-self.rows // self.window))

    def path(self, w: int) -> Path:
        return self.folder / f"{w:06d}.npz"

    def missing(self, shard: tuple[int, int] | None = None) -> list[int]:
        return [w for w in self.windows if (shard is None or w % shard[1] == shard[0]) and not self.path(w).exists()]


def featurize(params: dict, prepared_root: Path, raw_root: Path, out_root: Path,
              shard: tuple[int, int] | None = None) -> Path | None:
    """Encode the utterance table into the HDF5 file; returns its path (None for a shard that is not the last).

    Work is done in windows of rows, each saved as a chunk under `featurize.partial_dir` when done, so an
    interrupted run resumes where it stopped and `shard=(i, n)` computes windows i, i+n, ...; the HDF5
    file is assembled from the chunks once all exist (any later run, or `--merge`), then they are removed.
    Under torchrun, rank r of W is shard r/W on its LOCAL_RANK's GPU, and rank 0 assembles once every
    rank's windows are saved (the chunk folder must be one that every machine shares).
    """
    cfg = build(FeaturizeParams, params, "featurize")
    if from_processed(params, raw_root):
        return copy_processed(params, cfg, prepared_root, raw_root, out_root)
    ranks = distributed_context()
    shard = rank_shard(ranks, shard)
    table, out = utterance_table(params, prepared_root), feature_path(params, out_root)
    chunks = chunks_of(params, cfg, table, out, out_root)
    device = rank_device(pick_device(cfg.device), ranks)
    encoders = {m: MODALITIES[m].load("encoder")(cfg, device) for m in featurized(params["featurize"])}
    with process_group(ranks, "gloo"):  # coordination only: a barrier before rank 0 assembles
        todo = chunks.missing(shard)
        if todo:
            encode_windows(table, todo, chunks, encoders, cfg, raw_root, device, f"featurize {params['data']['dataset']}")
        if ranks.world > 1:
            dist.barrier()
    if ranks.rank != 0:
        return None
    if chunks.missing():
        print(f"featurize: shard {shard[0]}/{shard[1]} done; {len(chunks.missing())} window(s) left to other "
              "shards, then `mmolre featurize --merge`")
        return None
    kept, absent = assemble(table, chunks, out, {m: e.dim for m, e in encoders.items()},
                            feature_attrs(params, cfg, encoders))
    shutil.rmtree(chunks.folder)
    widths = ", ".join(f"{m} {e.dim}-d" + (f", {absent[m]} without {m} (absent)" if absent.get(m) else "")
                       for m, e in encoders.items())
    print(f"featurize: wrote {out} ({widths}; {kept} utterances)")
    return out


def rank_shard(ranks, shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """The windows this process computes: its rank of torchrun's world, or `--shard`."""
    if ranks.world == 1:
        return shard
    if shard is not None:
        raise MmolreError("--shard under torchrun: torchrun gives each process its shard (RANK/WORLD_SIZE)")
    return ranks.rank, ranks.world


def copy_processed(params: dict, cfg: FeaturizeParams, prepared_root: Path, raw_root: Path, out_root: Path) -> Path:
    """The feature file of a processed import (data.processed): each utterance's frames copied from
    data/raw/<dataset>/processed/ (no encoder runs), validated as an encoder's output is, assembled as any other."""
    from mmolre.datasets.processed_frames import MODALITY_KEYS, Frames, Source

    dataset = params["data"]["dataset"]
    table, out = utterance_table(params, prepared_root), out_root / dataset / PROCESSED_FILE
    source, frames = Source.read(raw_root / dataset), Frames(raw_root / dataset)
    # the view is part of what the chunks hold: an interrupted run's chunks of the other view are not reused
    chunks = chunks_of(params, cfg, table, out, out_root, f"{source.sha256}:{source.view}")
    try:
        for w in tqdm(chunks.missing(), desc=f"featurize {dataset} (copying {source.form}'s features)", unit="window"):
            ids = table.utterance_id.iloc[w * chunks.window:(w + 1) * chunks.window].tolist()
            outputs = {m: frames.window(m, ids) for m in MODALITY_KEYS}
            _save_chunk(chunks.path(w), outputs, {}, check_window(ids, outputs, {}, frames.dims, cfg.on_invalid))
        tokens = frames.tokens(table.utterance_id.tolist())
    finally:
        frames.close()
    kept, absent = assemble(table, chunks, out, frames.dims, processed_attrs(dataset, cfg, source),
                            {} if tokens is None else {"text_bert": tokens})
    shutil.rmtree(chunks.folder)
    shadowing = feature_path(params, out_root)
    if shadowing != out:  # data.processed unset: the stages after this one must find this file, not an older one
        shadowing.unlink()
        print(f"featurize: removed {shadowing}, featurized from clips before this import")
    widths = ", ".join(f"{m} {source.encoders[m]} {d}-d" for m, d in frames.dims.items())
    print(f"featurize: wrote {out} ({widths}; {kept} utterances, {absent.get('video', 0)} without video)")
    return out


def processed_attrs(dataset: str, cfg: FeaturizeParams, source) -> dict:
    """A processed file's provenance as the feature file's: the form's features as its encoders, the pickle's
    SHA-256 as their revision, the form and release (read by train, and by predict to refuse new recordings)."""
    named = {}
    for m, name in source.encoders.items():
        key = MODALITIES[m].encoder_param
        named |= {key: name, f"{key}_revision": f"sha256:{source.sha256[:16]}"}
    provenance = {"file": Path(source.file).name, **{k: getattr(source, k) for k in (
        "sha256", "release", "form", "aligned", "description", "encoders", "view")}}
    which = {"processed": source.sha256} | ({"view": source.view} if source.view != "own" else {})
    return {**named, "text_layer": -1, "audio_layer": -1, "dataset": dataset,
            "processed": json.dumps(provenance, sort_keys=True),
            "featurize_config": json.dumps(which | {"on_invalid": cfg.on_invalid}, sort_keys=True),
            "created_with": f"mmolre {__version__}", "params_hash": params_hash(dataset, which)}


def utterance_table(params: dict, prepared_root: Path) -> pd.DataFrame:
    table_path = prepared_root / params["data"]["dataset"] / "utterances.parquet"
    if not table_path.is_file():
        raise MmolreError(f"{table_path} not found: run `mmolre prepare` first")
    return pd.read_parquet(table_path)


def identity_of(cfg: FeaturizeParams) -> dict:
    """The settings the feature values depend on (not where or how fast they are computed)."""
    return {k: v for k, v in cfg.model_dump().items() if k not in ("workers", "partial_dir")}


def chunks_of(params: dict, cfg: FeaturizeParams, table: pd.DataFrame, out: Path, out_root: Path,
              source: str = "") -> Chunks:
    """The chunk folder of this table and these settings (another table, setting or `source`, the processed file's
    SHA-256 and data view: another folder)."""
    dataset = params["data"]["dataset"]
    chunk_identity = {k: v for k, v in identity_of(cfg).items() if k != "on_invalid"}  # chunks hold every utterance
    config_hash = params_hash(dataset, chunk_identity, pd.util.hash_pandas_object(table).sum(),
                              *([source] if source else []))
    root = Path(cfg.partial_dir) if cfg.partial_dir else out_root / ".partial"
    chunks = Chunks(root / dataset / f"{out.stem}-{config_hash}", cfg.batch_size * 8, len(table))
    chunks.folder.mkdir(parents=True, exist_ok=True)
    return chunks


def feature_attrs(params: dict, cfg: FeaturizeParams, encoders: dict) -> dict:
    """The file's provenance: encoders and their revisions, the settings, the params hash models check."""
    dataset, identity = params["data"]["dataset"], identity_of(cfg)
    named = {}
    for m, encoder in encoders.items():
        key = MODALITIES[m].encoder_param or f"{m}_encoder"
        named |= {key: getattr(cfg, key, encoder.name), f"{key}_revision": encoder.revision}
    audio_rate = {"sample_rate": encoders["audio"].sample_rate} if "audio" in encoders else {}
    return {**named, "text_layer": cfg.text_layer, "audio_layer": cfg.audio_layer, **audio_rate, "dataset": dataset,
            "featurize_config": json.dumps(identity, sort_keys=True),
            "created_with": f"mmolre {__version__}", "params_hash": params_hash(dataset, identity)}


def assemble(table: pd.DataFrame, chunks: Chunks, out: Path, dims: dict[str, int], attrs: dict,
             meta: dict[str, np.ndarray] | None = None) -> tuple[int, dict[str, int]]:
    """The HDF5 file from the chunks, without the quarantined utterances (listed in <stem>.rejected.csv), with
    `meta`'s per-utterance arrays (rows in table order) under meta/; returns the utterances it holds and, per
    optional modality, how many of them lack it (absent)."""
    # the table's rows must be known before the file is written; the features then stream chunk by chunk
    rejected = [{**r, "row": w * chunks.window + r["row"]} for w in chunks.windows
                for r in _chunk_rejected(chunks.path(w))]
    left_out = sorted({r["row"] for r in rejected})
    rejected_csv = out.with_name(f"{out.stem}.rejected.csv")
    with atomic_file(out) as tmp:
        writer = FeatureWriter(tmp, table.drop(index=table.index[left_out]), dims, attrs,
                               table.attrs.get("label_space", DEFAULT),
                               {name: np.delete(values, left_out, axis=0) for name, values in (meta or {}).items()})
        for w in chunks.windows:
            parts, times = _load_chunk(chunks.path(w))
            dropped = {r["row"] for r in _chunk_rejected(chunks.path(w))}
            for modality in dims:
                kept = [k for k in range(len(parts[modality])) if k not in dropped]
                if kept:
                    writer.append(modality, [parts[modality][k] for k in kept],
                                  [times[modality][k] for k in kept] if modality in times else None)
        absent = {m: lengths.count(0) for m, lengths in writer.lengths.items() if MODALITIES[m].optional}
        writer.close()
    if rejected:
        with atomic_file(rejected_csv) as tmp:
            pd.DataFrame(rejected).drop(columns="row").to_csv(tmp, index=False)
        print(f"featurize: {len(left_out)} utterance(s) quarantined (listed in {rejected_csv})")
    else:
        rejected_csv.unlink(missing_ok=True)
    return len(table) - len(left_out), absent


def decode_workers(cfg: FeaturizeParams, device: torch.device) -> int:
    """`auto`: decode in the main process on a CPU (workers would take the encoders' cores),
    in up to 4 worker processes when a GPU does the encoding."""
    if cfg.workers != "auto":
        return int(cfg.workers)
    return 0 if device.type == "cpu" else max(1, min(4, (os.cpu_count() or 2) - 1))


def encode_windows(table, todo, chunks: Chunks, encoders: dict, cfg: FeaturizeParams, raw_root,
                   device: torch.device, desc: str) -> None:
    """Encode the windows `todo`, saving each as a chunk. Modalities read from files are decoded by DataLoader
    workers meanwhile, in batches by duration; a modality held in the table (text) is encoded per window in
    batches by its length."""
    rows = {w: np.arange(w * chunks.window, min((w + 1) * chunks.window, len(table))) for w in todo}
    from_files = {m: e for m, e in encoders.items() if MODALITIES[m].reader}
    durations = (np.minimum(table.end_s.fillna(cfg.max_audio_s) - table.start_s, cfg.max_audio_s)).to_numpy()
    batches = (iter(decoded_batches(table, rows, todo, from_files, durations, cfg, raw_root, device)) if from_files
               else None)
    with tqdm(total=sum(len(r) for r in rows.values()), desc=desc, unit="utt") as progress:
        started, seconds = time.perf_counter(), 0.0
        for w in todo:
            idx = rows[w]
            outputs = {m: [None] * len(idx) for m in encoders}
            times: dict[str, list] = {}
            for m in encoders.keys() - from_files.keys():
                encode_in_table(table[MODALITIES[m].source].tolist(), idx, encoders[m], cfg.batch_size, outputs[m])
            done = 0
            while done < len(idx):
                items = next(batches) if batches else [(i, {}) for i in idx]
                encode_decoded(items, idx[0], from_files, outputs, times)
                done += len(items)
                seconds += float(durations[[i for i, _ in items]].sum())
                progress.update(len(items))
                progress.set_postfix(media_s_per_s=f"{seconds / (time.perf_counter() - started):.1f}")
            ids = table.utterance_id.iloc[idx].tolist()
            rejected = check_window(ids, outputs, times, {m: e.dim for m, e in encoders.items()}, cfg.on_invalid)
            _save_chunk(chunks.path(w), outputs, times, rejected)


def decoded_batches(table, rows: dict, todo, encoders: dict, durations: np.ndarray, cfg: FeaturizeParams, raw_root,
                    device: torch.device):
    """DataLoader of the file modalities' raw inputs, in batches of similar duration within each window."""
    batches = [rows[w][b] for w in todo for b in batches_by_length(durations[rows[w]], cfg.batch_size,
                                                                    cfg.max_batch_audio_s or float("inf"))]
    return torch.utils.data.DataLoader(RawRows(table, raw_root, cfg, encoders), batch_sampler=batches,
                                       num_workers=decode_workers(cfg, device), collate_fn=as_decoded)


def encode_in_table(values: list, idx: np.ndarray, encoder, batch_size: int, out: list) -> None:
    """Encode the window's values held in the table (texts) in batches by length, into `out` (window order)."""
    for b in batches_by_length(np.array([len(values[i]) for i in idx]), batch_size):
        for k, features in zip(b, encoder.encode([values[idx[k]] for k in b]), strict=True):
            out[k] = features


def encode_decoded(items: list, first: int, encoders: dict, outputs: dict, times: dict) -> None:
    """Encode one decoded batch per file modality into `outputs` (window order); frame times where recorded."""
    for m, encoder in encoders.items():
        raws = [raw[m] for _, raw in items]
        for (i, _), raw, features in zip(items, raws, encoder.encode(raws), strict=True):
            outputs[m][i - first] = features
            if hasattr(raw, "times"):
                times.setdefault(m, [None] * len(outputs[m]))[i - first] = raw.times


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepared-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"))
    parser.add_argument("--out-root", type=Path, default=Path("data/features"))
    parser.add_argument("--shard", metavar="I/N", help="compute only share I of N (0-based), e.g. on N GPUs or "
                                                       "machines; the last shard to finish, or --merge, assembles")
    parser.add_argument("--merge", action="store_true", help="assemble the HDF5 file from the shards' chunks "
                                                             "(computes any chunk still missing)")


def run(args: argparse.Namespace, params: dict) -> None:
    featurize(params, args.prepared_root, args.raw_root, args.out_root, None if args.merge else parse_shard(args.shard))


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("featurize")
