"""Stage `train`: multi-task MMoLRE training -> models/<run>/ (model.safetensors + config.json) and
reports/train/<run>/ (dvclive).

`--run NAME` picks an entry of params `runs` (its modalities, and any `model` key it
overrides, e.g. `variant: no_shared` for an ablation); the model comes from params `model`,
the optimisation from `train`. AdamW, gradient clipping, early stopping on the valid split's
sentiment MAE (best epoch kept), bf16 autocast on CUDA, optional torch.compile. Runs
unchanged under `torchrun --standalone --nproc_per_node=K -m mmolre.train` (DDP; rank 0
writes). Features are read from an in-memory store (on the GPU when they fit) or lazily
(`train.feature_store`); the store's values are checked and summarised where they are. Each
run prints its setup time, and per seed the epoch time, utterances/s and the share of it spent
getting batches. Curves: dvclive files in reports/train/<run>/ (mmolre/curves.py).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmolre import MmolreError
from mmolre.batches import FeatureStore, loader, store_device
from mmolre.curves import write_curves
from mmolre.device import pick_device
from mmolre.features import FeatureFile, feature_path
from mmolre.metrics import mer_metrics
from mmolre.model import MMoLRE, MMoLREConfig
from mmolre.params import ModelParams, TrainParams as TrainConfig, build, parse  # the section schema is the config



def model_config(params: dict, run: str, features: FeatureFile, pos_weight=None) -> MMoLREConfig:
    """MMoLREConfig from params `model`, overridden by the run's entry in `runs`, and the feature widths."""
    runs = params.get("runs", {})
    if run not in runs:
        raise MmolreError(f"--run {run!r}: params `runs` has {sorted(runs)}")
    section = {k: v for k, v in {**params["model"], **runs[run]}.items() if k != "seeds"}
    section = parse(f"runs.{run}", ModelParams, section).model_dump(exclude_unset=True)  # checked and converted
    train = build(TrainConfig, params, "train")
    try:
        return MMoLREConfig(text_dim=features.dims["text"], audio_dim=features.dims["audio"],
                            er_loss_weight=train.er_loss_weight, emotion_pos_weight=pos_weight, **section)
    except ValueError as e:
        raise MmolreError(f"params model / runs.{run}: {e}") from None


def feature_stats(features: FeatureFile, indices: np.ndarray, modality: str, values: torch.Tensor | None = None,
                  rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a modality's frames over `indices` (float64 sums), block by block from
    the file, or from `values` (a FeatureStore's, where they are: no host round trip per block)."""
    keep = np.zeros(len(features), dtype=bool)
    keep[indices] = True
    device = values.device if values is not None else torch.device("cpu")
    row_weights = torch.from_numpy(np.repeat(keep, features.lengths(modality))).to(device, torch.float64)
    total = torch.zeros(features.dims[modality], dtype=torch.float64, device=device)
    squares = torch.zeros_like(total)
    for start, x in features.blocks(modality, values, rows, torch.float64):
        weights = row_weights[start:start + len(x)]
        total += weights @ x
        squares += weights @ x.square_()  # in place: the block is a reused buffer
    count = max(int(keep @ features.lengths(modality)), 1)
    mean = total / count
    std = (squares / count - mean**2).clamp_min(0).sqrt()
    return mean.float().cpu(), std.float().cpu()


def emotion_pos_weight(emotions: np.ndarray) -> tuple[float, ...] | None:
    """negatives / positives per emotion over the labelled rows (1 where an emotion never occurs)."""
    labelled = emotions[~np.isnan(emotions).any(1)]
    if not len(labelled):
        return None
    positives = (labelled > 0).sum(0)
    return tuple(float((len(labelled) - p) / p) if p else 1.0 for p in positives)


def drop_modalities(batch: dict, p: float) -> dict:
    """With probability p per sample, make one of its modalities (chosen evenly) absent: an all-False mask."""
    n = len(batch["index"])
    device = batch["text_mask"].device
    drop, which = torch.rand(n, device=device) < p, torch.randint(0, 2, (n,), device=device)
    for k, m in enumerate(("text", "audio")):
        batch[f"{m}_mask"] = batch[f"{m}_mask"] & ~(drop & (which == k))[:, None]
    return batch


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW, fused (one kernel over all parameters per update) where torch has it: the 340 parameter tensors
    of the paper-size model otherwise cost a dozen small operations each per step
    (`python benchmarks/train_step.py --only optimizer`; figures in benchmarks/RESULTS.md)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                             fused=device.type in ("cpu", "cuda"))


def timed_batches(batches, device: torch.device, waited: list[float]):
    """The batches moved to `device`, adding the host's seconds spent getting each (read or gather, copy)
    to waited[0]: the share of an epoch the training loop waits for data."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            return
        batch = to_device(batch, device)
        waited[0] += time.perf_counter() - started
        yield batch


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch on `device`, features cast from their stored float16 to float32 there."""
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in moved.items()}


@torch.no_grad()
def predict(model: MMoLRE, features: FeatureFile, indices, batch_size: int, device: torch.device,
            return_routing: bool = False, store: FeatureStore | None = None, transform=None) -> dict:
    """Sentiment predictions (N,), emotion probabilities (N, 6), mean loss, and (optionally) routing,
    in the order of `indices`."""
    model.eval()
    indices = np.asarray(indices)
    position = {int(i): k for k, i in enumerate(indices)}
    sentiment, emotions = np.zeros(len(indices)), np.zeros((len(indices), model.config.n_emotions))
    routing: dict[str, np.ndarray] = {}
    loss_sum = 0.0
    for batch in loader(features, indices, model.config.modalities, batch_size, shuffle=False, store=store):
        batch = to_device(batch, device)
        if transform is not None:  # e.g. a modality made absent or replaced by noise (evaluate's robustness)
            batch = transform(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**{k: v for k, v in batch.items() if k != "index"}, return_routing=return_routing)
        rows = [position[i] for i in batch["index"].tolist()]  # one copy to the host, not one per utterance
        sentiment[rows] = out.sentiment.float().cpu().numpy() if out.sentiment is not None else np.nan
        emotions[rows] = torch.sigmoid(out.emotions.float()).cpu().numpy() if out.emotions is not None else np.nan
        loss_sum += float(out.loss) * len(rows)
        for key, value in out.routing.items():
            routing.setdefault(key, np.zeros((len(indices), value.shape[-1])))[rows] = value.float().cpu().numpy()
    return {"sentiment": sentiment, "emotions": emotions, "loss": loss_sum / max(len(indices), 1),
            "routing": routing}


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[MMoLRE, dict]:
    """The model of a model folder (eval mode) and its provenance (mmolre/hub.py; never a pickle)."""
    model = MMoLRE.from_pretrained(path, device)
    return model, model.provenance


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun, else (0, 1, 0)."""
    if "RANK" not in os.environ:
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def train(params: dict, run: str, features_root: Path, models_root: Path, curves_root: Path) -> Path:
    """Train one run; under `torchrun --nproc_per_node=K` each global batch is split across K ranks (DDP),
    every rank validates on the whole valid split (same early-stopping decision), rank 0 writes."""
    cfg = build(TrainConfig, params, "train")
    rank, world, local_rank = distributed_context()
    device = pick_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        # once per run, whatever the number of seeds: the in-memory store, the values' check, the statistics
        started = time.perf_counter()
        features = FeatureFile(feature_path(params, features_root))
        train_idx = features.indices("train")
        if not len(train_idx) or not len(features.indices("valid")):
            raise MmolreError(f"{features.path}: need train and valid utterances (have {len(train_idx)} train, "
                              f"{len(features.indices('valid'))} valid)")
        pos_weight = emotion_pos_weight(features.emotions[train_idx]) if cfg.emotion_pos_weight else None
        model_cfg = model_config(params, run, features, pos_weight)
        where = store_device(features, model_cfg.modalities, device, cfg.feature_store)
        store = FeatureStore(features, model_cfg.modalities, where) if where is not None else None
        values = store.values if store is not None else None  # scanned where they are, else read from the file
        features.check_values(model_cfg.modalities, values=values)  # seconds, and never minutes of training on NaN
        stats = {m: feature_stats(features, train_idx, m, values[m] if values else None) for m in model_cfg.modalities}
        if rank == 0:
            print(f"train {run}: features of {len(features)} utterances "
                  f"{f'loaded into {where} memory' if store else 'read lazily from the file'}, values checked, "
                  f"statistics over {len(train_idx)} train utterances: {time.perf_counter() - started:.1f} s")
        for k, seed in enumerate(run_seeds(params, run)):  # the first seed's model is the run's; the others beside it
            model_dir = models_root / run if k == 0 else models_root / run / "seeds" / str(seed)
            _train(params, cfg, run, seed, features, model_cfg, stats, store, model_dir,
                   curves_root / run if k == 0 else None, device, rank, world)
        return models_root / run
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_seeds(params: dict, run: str) -> list[int]:
    """The seeds a run trains: its `seeds` entry, else params data.seed."""
    return [int(s) for s in (params.get("runs", {}).get(run) or {}).get("seeds") or [params["data"]["seed"]]]


def _train(params, cfg: TrainConfig, run, seed: int, features: FeatureFile, model_cfg: MMoLREConfig, stats: dict,
           store: FeatureStore | None, model_dir: Path, curves_dir: Path | None, device, rank, world) -> Path:
    """One model of `run` trained from `seed` into `model_dir`; its dvclive curves into `curves_dir` (when given)."""
    torch.manual_seed(seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_idx, valid_idx = features.indices("train"), features.indices("valid")
    model = MMoLRE(model_cfg)
    model.set_feature_stats(stats)
    model.to(device)
    stepper = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    if cfg.compile:
        stepper = torch.compile(stepper)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    batches = loader(features, train_idx, model_cfg.modalities, cfg.batch_size, shuffle=True, seed=seed,
                     workers=cfg.workers, rank=rank, world=world, store=store)
    by_mae = "sa" in model_cfg.tasks  # early stopping on valid MAE; on valid loss for an ER-only model
    curves, best, best_epoch, best_score, stale = [], None, 0, float("inf"), 0
    speed = []  # per epoch: (utterances, seconds, seconds waiting for batches), validation not included
    # `with`: the bar is closed (its line ended) before an error message is printed
    with tqdm(range(1, cfg.epochs + 1), desc=f"train {run}", unit="epoch", disable=rank != 0) as progress:
        for epoch in progress:
            model.train()
            batches.batch_sampler.set_epoch(epoch)
            sums, count = torch.zeros(3, dtype=torch.float64, device=device), 0  # losses stay on the device: no sync
            pending = None  # (loss, batch ids, step) checked one step later, when the device is already past it
            started, waited = time.perf_counter(), [0.0]
            for step, batch in enumerate(timed_batches(batches, device, waited), start=1):
                if cfg.modality_dropout and len(model_cfg.modalities) == 2:
                    batch = drop_modalities(batch, cfg.modality_dropout)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = stepper(**{k: v for k, v in batch.items() if k != "index"})
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                n = len(batch["index"])
                parts = torch.stack([out.loss.detach(), out.loss_sa.detach(), out.loss_er.detach()]).double()
                sums += parts * n
                count += n
                check_finite(pending, run, epoch, features)
                pending = (out.loss.detach(), batch["index"], step)
            check_finite(pending, run, epoch, features)
            sums = torch.cat([sums, sums.new_tensor([count])])
            if world > 1:
                dist.all_reduce(sums)
            sums = sums.cpu()
            speed.append((float(sums[3]), time.perf_counter() - started, waited[0]))
            valid = predict(model, features, valid_idx, cfg.batch_size * 2, device, store=store)
            mae = float(np.mean(np.abs(valid["sentiment"] - features.sentiment[valid_idx])))
            f1 = mer_metrics(valid["emotions"], features.emotions[valid_idx])["avg"]["f1"] \
                if "er" in model_cfg.tasks and not np.isnan(features.emotions[valid_idx]).any() else float("nan")
            train_loss, train_sa, train_er = (sums[:3] / sums[3]).tolist()
            curves.append({"epoch": epoch, "train_loss": train_loss, "train_loss_sa": train_sa, "train_loss_er": train_er,
                           "valid_loss": valid["loss"], "valid_mae": mae, "valid_emotion_f1": f1,
                           "lr": optimizer.param_groups[0]["lr"]})
            progress.set_postfix(train_loss=f"{train_loss:.3f}", valid_mae=f"{mae:.3f}", valid_f1=f"{f1:.1f}",
                                 utt_s=f"{speed[-1][0] / speed[-1][1]:.0f}")
            score = mae if by_mae else valid["loss"]
            if score < best_score:
                best, best_epoch, best_score, stale = copy.deepcopy(model.state_dict()), epoch, score, 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    model.load_state_dict(best)
    best_mae = curves[best_epoch - 1]["valid_mae"]
    if rank == 0:
        model.cpu().save_pretrained(
            model_dir, run=run, seed=seed, dataset=params["data"]["dataset"], best_epoch=best_epoch, valid_mae=best_mae,
            features={k: str(features.attrs[k]) if isinstance(features.attrs[k], str) else features.attrs[k].item()
                      for k in ("text_encoder", "audio_encoder", "text_encoder_revision", "audio_encoder_revision",
                                "params_hash", "featurize_config", "text_layer", "audio_layer", "sample_rate")})
        if curves_dir is not None:
            write_curves(curves_dir, curves, {"epoch": best_epoch, **{k: v for k, v in curves[best_epoch - 1].items()
                                                                       if k in ("valid_mae", "valid_loss",
                                                                                "valid_emotion_f1")}})
        utterances, seconds, waiting = np.sum(speed, axis=0)
        print(f"train {run} (seed {seed}): best epoch {best_epoch}/{len(curves)}, valid MAE {best_mae:.4f} -> {model_dir}; "
              f"{seconds / len(speed):.1f} s per epoch ({utterances / seconds:.0f} utt/s, {waiting / seconds:.0%} "
              "of it getting batches)")
    return model_dir


def check_finite(pending, run: str, epoch: int, features: FeatureFile) -> None:
    """Stop at a non-finite training loss, naming its batch's utterances (nothing is saved)."""
    if pending is not None and not torch.isfinite(pending[0]):
        loss, index, step = pending
        ids = features.utterance_id[index.cpu().numpy()].tolist()
        raise MmolreError(f"train {run}: loss is {float(loss)} at epoch {epoch}, step {step}; batch utterances "
                          f"{', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}; nothing was saved. Check the "
                          "features (`mmolre validate FILE`) or lower train.lr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_name", nargs="?", metavar="RUN",
                        help="which entry of params `runs` to train (default: main); as the first argument it "
                             "also passes through torchrun, whose own --run-path swallows --run")
    parser.add_argument("--run", help="the same as RUN")
    parser.add_argument("--features-root", type=Path, default=Path("data/features"))
    parser.add_argument("--models-root", type=Path, default=Path("models"))
    parser.add_argument("--curves-root", type=Path, default=Path("reports/train"))


def run(args: argparse.Namespace, params: dict) -> None:
    train(params, args.run or args.run_name or "main", args.features_root, args.models_root, args.curves_root)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("train")
