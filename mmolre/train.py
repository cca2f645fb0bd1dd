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

Reading order, as a recipe: `train` (per run: `setup_run`, then per seed `train_seed`), `train_seed`
(`setup_seed`, then per epoch `train_epoch`, `validate`, `EarlyStopping.update`; then `save`).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from mmolre import MmolreError
from mmolre.batches import FeatureStore, loader, store_device, to_device
from mmolre.curves import write_curves
from mmolre.device import Distributed, distributed_context, pick_device, process_group, rank_device
from mmolre.features import FeatureFile, feature_path
from mmolre.inference import infer
from mmolre.metrics import score
from mmolre.architectures import build_model
from mmolre.model import MMoLRE
from mmolre.modalities import MODALITIES
from mmolre.field.presets import CORPORA
from mmolre.model_config import FIELD_ARCHS, MMoLREConfig
from mmolre.params import TrainParams, build
from mmolre.runs import run_seeds, run_spec, validate_runs

SECTIONS = ("data", "train", "model", "runs")  # the params it reads


def model_config(params: dict, run: str, cfg: TrainParams, features: FeatureFile, pos_weight=None) -> MMoLREConfig:
    """MMoLREConfig from params `model`, overridden by the run's entry in `runs`, the feature widths and the
    loss weights of `train`."""
    try:
        spec = run_spec(params, run)
        for m in spec.modalities:
            check_readable(features, run, m)
        if spec.arch in FIELD_ARCHS:
            spec = spec.model_copy(update=field_run(spec, params["data"]["dataset"], features, run))
        return spec.config(dims={m: features.dims[m] for m in spec.modalities}, label_space=features.label_space,
                           er_loss_weight=cfg.er_loss_weight, emotion_pos_weight=pos_weight,
                           field_view=features.view)
    except ValueError as e:  # a rule of the features' label space (the params alone were valid)
        raise MmolreError(f"train {run}: {e}") from None


def field_run(spec, dataset: str, features: FeatureFile, run: str) -> dict:
    """A field model's run: MMSA's preset of the data's corpus unless the run names one, and no emotion head
    where the train split labels no emotion (MMSA's models predict sentiment alone)."""
    update = {"field_preset": spec.field_preset or dataset}
    if update["field_preset"] not in CORPORA:
        raise MmolreError(f"train {run}: arch={spec.arch} takes MMSA's preset of mosi, mosei or sims, and the data "
                          f"is {dataset}: name one in the run (field_preset: mosi)")
    if spec.arch == "misa" and features.text_bert is None:
        raise MmolreError(f"train {run}: arch=misa fine-tunes BERT from MMSA's token ids (text_bert), and "
                          f"{features.path} has none: only MMSA's processed files carry them "
                          "(`mmolre download --from-processed`)")
    if "er" in features.tasks and np.isnan(features.emotions[features.indices("train")]).all():
        update["variant"] = "msa_only"
    return update


def check_readable(features: FeatureFile, run: str, modality: str) -> None:
    """Refuse a run reading a modality the file does not hold, or holds for no utterance."""
    if modality not in features.dims:
        raise MmolreError(f"train {run}: {features.path} has no {modality} features; set featurize.{modality}_encoder "
                          f"and rerun `mmolre featurize` (or drop {modality} from runs.{run}.modalities)")
    if not features.lengths(modality).any():
        raise MmolreError(f"train {run}: no utterance of {features.path} has {modality} (the dataset's table gives "
                          f"none: no {MODALITIES[modality].source} column, or no such streams; MMSA's and MELD's clips "
                          f"need data.keep_video: true at download); drop {modality} from runs.{run}.modalities")


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


def drop_modalities(batch: dict, p: float, modalities: tuple[str, ...]) -> dict:
    """With probability p per sample, make one of its modalities (chosen evenly) absent: an all-False mask."""
    n = len(batch["index"])
    device = batch["index"].device
    drop, which = torch.rand(n, device=device) < p, torch.randint(0, len(modalities), (n,), device=device)
    for k, m in enumerate(modalities):
        batch[f"{m}_mask"] = batch[f"{m}_mask"] & ~(drop & (which == k))[:, None]
    return batch


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW, fused (one kernel over all parameters per update) where torch has it: the 340 parameter tensors
    of the paper-size model otherwise cost a dozen small operations each per step
    (`python benchmarks/train_step.py --only optimizer`; figures in benchmarks/RESULTS.md)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                             fused=device.type in ("cpu", "cuda"))


@dataclass
class RunContext:
    """What every seed of a run shares, set up once: the features, where they are held, their statistics."""
    run: str
    cfg: TrainParams
    features: FeatureFile
    model_cfg: MMoLREConfig
    stats: dict
    store: FeatureStore | None
    device: torch.device
    dist: Distributed


@dataclass
class Recipe:
    """How a seed's model is optimised: mmolre's (AdamW, gradient norm clipping, early stopping on the selection
    metric), or a field model's as MMSA trains it (FieldModel.mmsa_recipe: its optimizer and scheduler, losses of
    `accumulation` mini-batches summed into one step (the tail of an epoch never applied), value clipping, the
    valid loss rounded to `decimals` and bettered by `min_improvement`)."""
    optimizer: torch.optim.Optimizer
    patience: int
    batch_size: int
    clip_norm: float | None = None
    clip_value: float | None = None
    accumulation: int = 1
    scheduler: object = None
    min_improvement: float = 0.0
    decimals: int | None = None
    max_epochs: int | None = None  # None: until early stopping alone (MMSA's loop has no cap)


@dataclass
class SeedSetup:
    model: MMoLRE
    forward: torch.nn.Module  # the model as a step calls it: DDP-wrapped and/or compiled
    recipe: Recipe
    batches: object  # a loader whose batch_sampler has set_epoch


@dataclass
class Epoch:
    """One epoch: mean training losses, throughput (validation not included), the validation scores."""
    number: int
    train: dict[str, float]
    utterances: float
    seconds: float
    waiting: float  # seconds the loop waited for batches
    valid: dict[str, float] = field(default_factory=dict)

    def curve(self, lr: float) -> dict:
        return {"epoch": self.number, **self.train, **self.valid, "lr": lr}


@dataclass
class EarlyStopping:
    """Keeps the best epoch's weights; says stop after `patience` epochs without a better score (lower by more
    than `min_improvement`, or by at least it when one is given, after rounding to `decimals`: MMSA's rule)."""
    patience: int
    min_improvement: float = 0.0
    decimals: int | None = None
    best_score: float = float("inf")
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0

    def better(self, score: float) -> bool:
        if self.min_improvement:
            return score <= self.best_score - self.min_improvement
        return score < self.best_score

    def update(self, score: float, epoch: int, model: torch.nn.Module) -> bool:
        if self.decimals is not None:
            score = round(score, self.decimals)
        if self.better(score):
            self.best_state, self.best_epoch, self.best_score, self.stale = copy.deepcopy(model.state_dict()), epoch, score, 0
            return False
        self.stale += 1
        return self.stale >= self.patience


class Step(NamedTuple):
    """A training step's loss, checked for finiteness one step later (the device is already past it)."""
    loss: torch.Tensor
    index: torch.Tensor
    number: int


def train(params: dict, run: str, features_root: Path, models_root: Path, curves_root: Path) -> Path:
    """Train one run; under `torchrun --nproc_per_node=K` each global batch is split across K ranks (DDP),
    every rank validates on the whole valid split (same early-stopping decision), rank 0 writes."""
    cfg = build(TrainParams, params, "train")
    dist_ctx = distributed_context()
    device = rank_device(pick_device(cfg.device), dist_ctx)
    with process_group(dist_ctx, "nccl" if device.type == "cuda" else "gloo"):
        ctx = setup_run(params, run, cfg, FeatureFile(feature_path(params, features_root)), device, dist_ctx)
        for k, seed in enumerate(run_seeds(params, run)):  # the first seed's model is the run's; the others beside it
            model_dir = models_root / run if k == 0 else models_root / run / "seeds" / str(seed)
            train_seed(ctx, params, seed, model_dir, curves_root / run if k == 0 else None)
    return models_root / run


def setup_run(params: dict, run: str, cfg: TrainParams, features: FeatureFile, device: torch.device,
              dist_ctx: Distributed) -> RunContext:
    """Once per run, whatever the number of seeds: the in-memory store, the values' check, the statistics."""
    started = time.perf_counter()
    train_idx, valid_idx = features.indices("train"), features.indices("valid")
    if not len(train_idx) or not len(valid_idx):
        raise MmolreError(f"{features.path}: need train and valid utterances (have {len(train_idx)} train, "
                          f"{len(valid_idx)} valid)")
    presence = "er" in features.tasks and features.tasks["er"].kind == "presence"
    pos_weight = emotion_pos_weight(features.emotions[train_idx]) if cfg.emotion_pos_weight and presence else None
    model_cfg = model_config(params, run, cfg, features, pos_weight)
    store_place = store_device(features, model_cfg.modalities, device, cfg.feature_store)
    store = FeatureStore(features, model_cfg.modalities, store_place) if store_place is not None else None
    values = store.values if store is not None else None  # scanned where they are, else read from the file
    features.check_values(model_cfg.modalities, values=values)  # seconds, and never minutes of training on NaN
    stats = {m: feature_stats(features, train_idx, m, values[m] if values else None) for m in model_cfg.modalities}
    if dist_ctx.rank == 0:
        print(f"train {run}: features of {len(features)} utterances "
              f"{f'loaded into {store_place} memory' if store else 'read lazily from the file'}, values checked, "
              f"statistics over {len(train_idx)} train utterances: {time.perf_counter() - started:.1f} s")
    return RunContext(run, cfg, features, model_cfg, stats, store, device, dist_ctx)


def setup_seed(ctx: RunContext, seed: int) -> SeedSetup:
    """The model (seeded, standardised with the train statistics), its step form, the optimizer, the batches."""
    torch.manual_seed(seed)
    if ctx.cfg.threads:
        torch.set_num_threads(ctx.cfg.threads)
    model = build_model(ctx.model_cfg)
    model.set_feature_stats(ctx.stats)
    model.to(ctx.device)
    forward = model
    if ctx.dist.world > 1:
        forward = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if ctx.cfg.compile:
        forward = torch.compile(forward)
    field = hasattr(model, "mmsa_recipe")
    recipe = (Recipe(**model.mmsa_recipe()) if field else
              Recipe(make_optimizer(model, ctx.cfg.lr, ctx.cfg.weight_decay, ctx.device), ctx.cfg.patience,
                     ctx.cfg.batch_size, clip_norm=ctx.cfg.grad_clip, max_epochs=ctx.cfg.epochs))
    # a field model's batches are drawn at random, as MMSA's (its BatchNorm sees them), never of one utterance
    batches = loader(ctx.features, ctx.features.indices("train"), ctx.model_cfg.modalities, recipe.batch_size,
                     shuffle=True, seed=seed, workers=ctx.cfg.workers, rank=ctx.dist.rank, world=ctx.dist.world,
                     store=ctx.store, dialogues=ctx.model_cfg.context == "dialogue", pool=1 if field else 50,
                     smallest=2 if field else 1)
    return SeedSetup(model, forward, recipe, batches)


def train_seed(ctx: RunContext, params: dict, seed: int, model_dir: Path, curves_dir: Path | None) -> Path:
    """One model of the run trained from `seed` into `model_dir`; its dvclive curves into `curves_dir` (when given)."""
    setup = setup_seed(ctx, seed)
    recipe = setup.recipe
    stopping, epochs = EarlyStopping(recipe.patience, recipe.min_improvement, recipe.decimals), []
    # `with`: the bar is closed (its line ended) before an error message is printed
    epochs_left = itertools.count(1) if recipe.max_epochs is None else range(1, recipe.max_epochs + 1)
    with tqdm(epochs_left, desc=f"train {ctx.run}", unit="epoch", disable=ctx.dist.rank != 0) as progress:
        for number in progress:
            epoch = train_epoch(ctx, setup, number)
            epoch.valid = validate(ctx, setup.model)
            epochs.append(epoch)
            progress.set_postfix(train_loss=f"{epoch.train['train_loss']:.3f}",
                                 valid_mae=f"{epoch.valid['valid_mae']:.3f}",
                                 valid_f1=f"{epoch.valid['valid_emotion_f1']:.1f}",
                                 utt_s=f"{epoch.utterances / epoch.seconds:.0f}")
            if recipe.scheduler is not None:
                recipe.scheduler.step(epoch.valid["valid_loss"])
            if stopping.update(epoch.valid[selection_metric(ctx.model_cfg)], number, setup.model):
                break
    setup.model.load_state_dict(stopping.best_state)
    if ctx.dist.rank == 0:
        save(ctx, params, setup, seed, epochs, stopping.best_epoch, model_dir, curves_dir)
    return model_dir


def selection_metric(cfg: MMoLREConfig) -> str:
    """What picks the checkpoint, on the valid split only: the sentiment MAE of a regression, else the loss; a
    field model's is MMSA's KeyEval, the valid loss."""
    regression = "sa" in cfg.heads and cfg.heads["sa"].kind == "regression"
    return "valid_mae" if regression and cfg.arch not in FIELD_ARCHS else "valid_loss"


def timed_batches(batches, device: torch.device):
    """(batch moved to `device`, the host's seconds spent getting it: read or gather, copy)."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            return
        batch = to_device(batch, device)
        yield batch, time.perf_counter() - started


def train_epoch(ctx: RunContext, setup: SeedSetup, number: int) -> Epoch:
    """One pass over the train split; the losses stay on the device (no sync per step) until the end."""
    setup.model.train()
    setup.batches.batch_sampler.set_epoch(number)
    sums, count = torch.zeros(3, dtype=torch.float64, device=ctx.device), 0
    pending, started, waiting = None, time.perf_counter(), 0.0
    for step, (batch, waited) in enumerate(timed_batches(setup.batches, ctx.device), start=1):
        waiting += waited
        if ctx.cfg.modality_dropout and len(ctx.model_cfg.modalities) >= 2:
            batch = drop_modalities(batch, ctx.cfg.modality_dropout, ctx.model_cfg.modalities)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device.type == "cuda"):
            out = setup.forward(**{k: v for k, v in batch.items() if k != "index"})
        optimise(setup, out.loss, step)
        n = len(batch["index"])
        sums += torch.stack([out.loss.detach(), out.loss_sa.detach(), out.loss_er.detach()]).double() * n
        count += n
        check_finite(pending, ctx.run, number, ctx.features)
        pending = Step(out.loss.detach(), batch["index"], step)
    check_finite(pending, ctx.run, number, ctx.features)
    sums = torch.cat([sums, sums.new_tensor([count])])
    if ctx.dist.world > 1:
        dist.all_reduce(sums)
    sums = sums.cpu()
    means = dict(zip(("train_loss", "train_loss_sa", "train_loss_er"), (sums[:3] / sums[3]).tolist()))
    return Epoch(number, means, float(sums[3]), time.perf_counter() - started, waiting)


def optimise(setup: SeedSetup, loss: torch.Tensor, step: int) -> None:
    """Backward, clip, and an optimizer step after every `accumulation`-th mini-batch of the epoch (whose
    gradients add up until then; the ones after the last full group are dropped at the next epoch's start)."""
    recipe = setup.recipe
    if (step - 1) % recipe.accumulation == 0:
        recipe.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), recipe.clip_norm)
    if recipe.clip_value is not None:
        torch.nn.utils.clip_grad_value_([p for p in setup.model.parameters() if p.requires_grad], recipe.clip_value)
    if step % recipe.accumulation == 0:
        recipe.optimizer.step()


def validate(ctx: RunContext, model: MMoLRE) -> dict[str, float]:
    """Valid loss, sentiment MAE (of a regression) and mean emotion F1 (weighted F1 of emotion classes); NaN
    for a model without the head, a split without the labels, or sentiment as classes."""
    valid_idx = ctx.features.indices("valid")
    valid = infer(model, ctx.features, valid_idx, ctx.cfg.batch_size * 2, ctx.device, store=ctx.store)
    # MMSA's KeyEval averages per-batch losses; this is the mean per utterance (the same but for the last batch)
    heads = ctx.model_cfg.heads
    mae = f1 = float("nan")
    if "sa" in heads and heads["sa"].kind == "regression":
        mae = float(np.nanmean(np.abs(valid["sentiment"] - ctx.features.sentiment[valid_idx])))
    labels = ctx.features.emotions[valid_idx]
    known = ~np.isnan(labels).any(1)
    if "er" in heads and known.any() and (heads["er"].kind == "classes" or known.all()):
        scores = score(heads["er"], valid["emotions"][known], labels[known])
        f1 = scores["avg"]["f1"] if "avg" in scores else scores["f1"]
    return {"valid_loss": valid["loss"], "valid_mae": mae, "valid_emotion_f1": f1}


FEATURE_PROVENANCE = ("text_encoder", "audio_encoder", "video_encoder", "text_encoder_revision",
                      "audio_encoder_revision", "video_encoder_revision", "params_hash", "featurize_config", "text_layer",
                      "audio_layer", "sample_rate", "processed")


def save(ctx: RunContext, params: dict, setup: SeedSetup, seed: int, epochs: list[Epoch], best_epoch: int,
         model_dir: Path, curves_dir: Path | None) -> None:
    """The model folder with its provenance, the dvclive curves, and the seed's summary line."""
    best = epochs[best_epoch - 1]
    attrs = ctx.features.attrs
    setup.model.cpu().save_pretrained(
        model_dir, run=ctx.run, seed=seed, dataset=params["data"]["dataset"], best_epoch=best_epoch,
        valid_mae=best.valid["valid_mae"], selection={"metric": selection_metric(ctx.model_cfg),
                                                      "patience": setup.recipe.patience,
                                                      "max_epochs": setup.recipe.max_epochs,
                                                      "epochs_run": len(epochs)},
        features={k: str(attrs[k]) if isinstance(attrs[k], str) else attrs[k].item() for k in FEATURE_PROVENANCE
                  if k in attrs})
    if curves_dir is not None:
        lr = setup.recipe.optimizer.param_groups[0]["lr"]
        write_curves(curves_dir, [e.curve(lr) for e in epochs], {"epoch": best_epoch, **best.valid})
    utterances, seconds, waiting = (sum(getattr(e, k) for e in epochs) for k in ("utterances", "seconds", "waiting"))
    print(f"train {ctx.run} (seed {seed}): best epoch {best_epoch}/{len(epochs)}, valid MAE "
          f"{best.valid['valid_mae']:.4f} -> {model_dir}; {seconds / len(epochs):.1f} s per epoch "
          f"({utterances / seconds:.0f} utt/s, {waiting / seconds:.0%} of it getting batches)")


def check_finite(pending: Step | None, run: str, epoch: int, features: FeatureFile) -> None:
    """Stop at a non-finite training loss, naming its batch's utterances (nothing is saved)."""
    if pending is not None and not torch.isfinite(pending.loss):
        ids = features.utterance_id[pending.index.cpu().numpy()].tolist()
        raise MmolreError(f"train {run}: loss is {float(pending.loss)} at epoch {epoch}, step {pending.number}; "
                          f"batch utterances "
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
    validate_runs(params)  # before any work, as the CLI validates SECTIONS
    train(params, args.run or args.run_name or "main", args.features_root, args.models_root, args.curves_root)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("train")
