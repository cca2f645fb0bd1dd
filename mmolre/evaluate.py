"""Stage `evaluate`: every trained run on valid and test -> reports/metrics.json and predictions.

reports/metrics.json: the `main` run on `evaluate.split`, shaped
{dataset: {"msa": {...}, "mer": {...}}} (mer where the dataset has emotion labels); each block holds the
metrics of its task in the dataset's label space (mmolre/label_spaces.py, mmolre/metrics.py: `score`).
reports/runs.json: the same for every run (modality comparison, ablations). A run trained from several
`seeds` reports their mean under each key and beside it the sample std (`mae_std`), the half-width of the 95 %
t interval of the mean (`mae_ci95`) and, in runs.json only, each seed's value in the order of its `seeds`
(`mae_seeds`); its written predictions, routing and robustness come from its first seed's model.
reports/eval/comparisons.json: the main run against every other run (their predictions averaged over seeds),
and each robustness condition against the full input, on the same utterances of `evaluate.split`: each
headline metric's difference, 95 % bootstrap interval and permutation-test p-value (mmolre/stats.py).
reports/eval/selection.json: per run, how its checkpoints were chosen (metric on the valid split, patience,
epochs) and the epoch chosen for each seed.
reports/robustness.json: each text+audio model on `evaluate.split` in full, with the audio absent, the
text absent (a mask, not zeros), and the audio replaced by noise (`evaluate.robustness`).
reports/costs.json: per run, its model's parameters and forward FLOPs per utterance of the split's mean
length (mmolre/model_info.py's closed form, exact for every arch): the runs table's cost columns. Wall-clock
times stay out of the pipeline's outputs, which reproduce byte for byte (seconds per epoch:
benchmarks/ablations.py, or `mmolre train`'s own log).
reports/predictions/<run>_<split>.csv: labels, predictions and probabilities per utterance.
reports/eval/details.json: feature provenance and the main run's mean router and fusion gates
on the split (plot data for the report).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmolre import MmolreError
from mmolre.cli import add_scoring_roots
from mmolre.batches import FeatureStore, store_device
from mmolre.device import pick_device
from mmolre.features import LABEL_ARRAYS, FeatureFile, feature_path
from mmolre.files import atomic_file, write_json
from mmolre.label_spaces import Task
from mmolre.metrics import class_index, labelled, mean_std, score, without_seeds
from mmolre.inference import infer, trained_model
from mmolre.modalities import PAPER_MODALITIES
from mmolre.field.base import count_parameters
from mmolre.model_config import FIELD_ARCHS
from mmolre.model_info import closed_form_flops, measured_flops
from mmolre.params import EvaluateParams, build
from mmolre.runs import MAIN_RUN, run_seeds, validate_runs
from mmolre.stats import CONFIDENCE, HEADLINES, STATS_RESAMPLES, paired

SECTIONS = ("data", "evaluate", "train", "model", "runs")  # the params it reads

def absent(modality: str):
    """A batch transform: `modality` absent in every sample (its mask all False)."""
    def transform(batch: dict) -> dict:
        return {**batch, f"{modality}_mask": torch.zeros_like(batch[f"{modality}_mask"])}
    return transform


def noise(modality: str, mean: torch.Tensor, std: torch.Tensor, seed: int):
    """A batch transform: `modality`'s features replaced by Gaussian noise with the train split's per-channel
    mean and std (so the model's standardisation sees N(0, 1)), the same noise on every run."""
    generator = torch.Generator().manual_seed(seed)

    def transform(batch: dict) -> dict:
        x = batch[modality]
        fake = torch.randn(x.shape, generator=generator).to(x.device) * std.to(x.device) + mean.to(x.device)
        return {**batch, modality: fake.to(x.dtype)}
    return transform


def robustness(model, features: FeatureFile, indices: np.ndarray, batch_size: int, device, seed: int,
               store: FeatureStore | None = None) -> dict:
    """{condition: predictions} of a multimodal model with each of its modalities absent (the last of the
    registry first: audio absent, then text absent for text+audio), and with audio the audio replaced by noise."""
    conditions = {f"{m} absent": absent(m) for m in reversed(model.config.modalities)}
    if "audio" in model.config.modalities:
        conditions["audio noise"] = noise("audio", model.inputs["audio"].mean, model.inputs["audio"].std, seed)
    return {name: infer(model, features, indices, batch_size, device, transform=transform, store=store)
            for name, transform in conditions.items()}


def split_metrics(features: FeatureFile, indices: np.ndarray, sentiment: np.ndarray, emotions: np.ndarray) -> dict:
    """{dataset: {task key ("msa", "mer", ...): metrics}} over `indices` (predictions aligned with them); a
    task is scored where the utterance has its label and the model a prediction (NaN: it has no such head)."""
    predicted = dict(zip(LABEL_ARRAYS, (sentiment, emotions)))
    out = {}
    for dataset in sorted(set(features.dataset[indices])):
        rows = features.dataset[indices] == dataset
        ids = indices[rows]
        block = {}
        for task, spec in features.tasks.items():
            pred, label = predicted[task][rows], features.labels(task)[ids]
            known = labelled(label) & labelled(pred)
            if known.any():
                block[spec.key] = score(spec, pred[known], label[known])
        out[dataset] = block
    return out


def prediction_columns(name: str, spec: Task, label: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """One task's columns of the predictions table: labels and predictions (regression), intensities and
    presence probabilities (presence), the class and each class's probability (classes)."""
    if spec.kind == "regression" and spec.width == 1:
        return {name: label, f"{name}_pred": pred}
    if spec.kind == "regression":
        return {c: v for j, t in enumerate(spec.labels) for c, v in ((t, label[:, j]), (f"{t}_pred", pred[:, j]))}
    if spec.kind == "presence":
        return {c: v for j, e in enumerate(spec.labels) for c, v in ((e, label[:, j]), (f"{e}_prob", pred[:, j]))}
    column, names = spec.columns[0], np.array(spec.labels, dtype=object)
    index = class_index(spec, label).clip(0, len(names) - 1)  # an unlabelled row's index is never shown
    out = {column: np.where(labelled(label), names[index], None),
           f"{column}_pred": np.where(labelled(pred), names[pred.argmax(1)], None) if pred.ndim == 2 else pred}
    return out | {f"{column}_{c}_prob": pred[:, j] if pred.ndim == 2 else pred for j, c in enumerate(spec.labels)}


def predictions_table(features: FeatureFile, indices: np.ndarray, result: dict) -> pd.DataFrame:
    table = pd.DataFrame({"utterance_id": features.utterance_id[indices], "dataset": features.dataset[indices]})
    for task, name in LABEL_ARRAYS.items():
        if task in features.tasks:
            columns = prediction_columns(name, features.tasks[task], features.labels(task)[indices], result[name])
            table = table.assign(**columns)
    return table


def write_confusion(folder: Path, features: FeatureFile, indices: np.ndarray, emotions: np.ndarray) -> None:
    """Per emotion, one row per utterance: actual and predicted presence (DVC's confusion plots); for
    emotions as classes, one file `emotion.csv` of actual and predicted class."""
    spec = features.tasks.get("er")
    if spec is None or np.isnan(emotions).all():
        return
    labels = features.labels("er")[indices]
    folder.mkdir(parents=True, exist_ok=True)
    if spec.kind == "classes":
        known = labelled(labels)
        frames = {"emotion": pd.DataFrame({"actual": np.array(spec.labels)[labels[known].argmax(1)],
                                           "predicted": np.array(spec.labels)[emotions[known].argmax(1)]})}
    else:
        word = np.array(["absent", "present"])
        frames = {e: pd.DataFrame({"actual": word[(labels[~np.isnan(labels[:, j]), j] > 0).astype(int)],
                                   "predicted": word[(emotions[~np.isnan(labels[:, j]), j] > 0.5).astype(int)]})
                  for j, e in enumerate(spec.labels)}
    for name, frame in frames.items():
        with atomic_file(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)


def refuse_non_finite(what: str, ids: np.ndarray, result: dict, tasks) -> None:
    """NaN or Inf predictions fail the stage (naming utterances) instead of becoming NaN metrics."""
    bad = np.zeros(len(ids), bool)
    for task, name in LABEL_ARRAYS.items():
        if task in tasks:
            bad |= ~np.isfinite(result[name].reshape(len(ids), -1)).all(1)
    if bad.any():
        raise MmolreError(f"{what}: {int(bad.sum())} non-finite prediction(s), e.g. for "
                          f"{', '.join(ids[bad][:5].tolist())}; nothing was written. Check the features "
                          "(`mmolre validate FILE`) and the model")


@dataclass
class RunScores:
    """One run on `evaluate.split`: metrics (mean, spread and values over its seeds), its predictions averaged
    over the seeds and its first seed's, robustness (metrics, and the first seed's predictions per condition), the
    main run's routing, and how each seed's checkpoint was chosen."""
    metrics: dict
    predictions: dict
    first: dict
    robustness: dict | None = None
    conditions: dict = field(default_factory=dict)
    routing: dict = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)


def evaluate(params: dict, features_root: Path, models_root: Path, reports: Path) -> dict:
    cfg = build(EvaluateParams, params, "evaluate")
    runs = list(params.get("runs", {}))
    if MAIN_RUN not in runs:
        raise MmolreError(f"params `runs` must include {MAIN_RUN!r} (the model metrics.json reports)")
    features = FeatureFile(feature_path(params, features_root))
    device = pick_device(params["train"]["device"])
    # every run, split, seed and robustness condition reads the same features: load them once (as train does)
    store_place = store_device(features, tuple(features.offsets), device, params["train"]["feature_store"])
    store = FeatureStore(features, tuple(features.offsets), store_place) if store_place is not None else None
    scores = {run: evaluate_run(params, cfg, run, features, models_root, reports, device, store) for run in runs}
    all_metrics = {run: s.metrics for run, s in scores.items()}
    write_json(reports / "metrics.json", without_seeds(all_metrics[MAIN_RUN]))
    write_json(reports / "runs.json", all_metrics)
    indices = features.indices(cfg.split)
    write_json(reports / "eval" / "comparisons.json",
               comparisons(scores, features, indices, int(params["data"]["seed"])))
    write_json(reports / "eval" / "selection.json", {run: s.selection for run, s in scores.items()})
    write_json(reports / "robustness.json", {run: s.robustness for run, s in scores.items() if s.robustness})
    write_json(reports / "costs.json", {run: s.costs for run, s in scores.items()})
    write_details(reports / "eval" / "details.json", cfg.split, features, scores[MAIN_RUN].routing)
    for dataset, block in all_metrics[MAIN_RUN].items():
        print(f"evaluate: {dataset} {cfg.split}: {headline(block)}")
    return all_metrics


def headline(block: dict) -> str:
    """The metrics a summary line names: MAE and Corr of a regression, mean emotion F1 of presence,
    accuracy and weighted F1 of classes."""
    parts = []
    for key, metrics in block.items():
        if "avg" in metrics:
            parts.append(f"emotion F1 {metrics['avg']['f1']:.1f}")
        elif "mae" in metrics or "acc" in metrics:
            parts += [f"{k} {metrics[k]:.3f}" for k in ("mae", "corr", "acc", "f1") if k in metrics]
        else:  # one block per regression target
            parts += [f"{t} MAE {m['mae']:.3f}" for t, m in metrics.items()]
    return ", ".join(parts)


def evaluate_run(params: dict, cfg: EvaluateParams, run: str, features: FeatureFile, models_root: Path,
                 reports: Path, device: torch.device, store: FeatureStore | None) -> RunScores:
    """Predictions on valid and test written out; the run's scores on `cfg.split`."""
    model = trained_model(models_root / run, run, features, device)
    for split in ("valid", "test"):
        indices = features.indices(split)
        result = infer(model, features, indices, cfg.batch_size, device, store=store,
                       return_routing=run == MAIN_RUN and split == cfg.split)
        refuse_non_finite(f"{run} on {split}", features.utterance_id[indices], result, model.config.tasks)
        with atomic_file(reports / "predictions" / f"{run}_{split}.csv") as tmp:
            predictions_table(features, indices, result).to_csv(tmp, index=False, float_format="%.6g")
        if split == cfg.split:
            scores = score_run(params, cfg, run, model, result, features, indices, models_root, device, store)
            if run == MAIN_RUN:
                write_confusion(reports / "eval" / "confusion", features, indices, result["emotions"])
    return scores


def score_run(params: dict, cfg: EvaluateParams, run: str, model, result: dict, features: FeatureFile,
              indices: np.ndarray, models_root: Path, device: torch.device, store: FeatureStore | None) -> RunScores:
    """Metrics of the run's first seed (`result`) and of its other seeds, robustness of its text+audio model."""
    seeds = run_seeds(params, run)
    results, selection = [result], {str(seeds[0]): chosen(model)}
    for seed in seeds[1:]:  # the run's other seeds: scored, not written out
        other = trained_model(models_root / run / "seeds" / str(seed), run, features, device)
        again = infer(other, features, indices, cfg.batch_size, device, store=store)
        refuse_non_finite(f"{run} (seed {seed}) on {cfg.split}", features.utterance_id[indices], again,
                          other.config.tasks)
        results.append(again)
        selection[str(seed)] = chosen(other)
    per_seed = [split_metrics(features, indices, r["sentiment"], r["emotions"]) for r in results]
    averaged = {k: np.mean([r[k] for r in results], axis=0) for k in LABEL_ARRAYS.values()}
    robust, conditions = None, {}
    if cfg.robustness and len(model.config.modalities) >= 2:
        conditions = robustness(model, features, indices, cfg.batch_size, device, int(params["data"]["seed"]), store)
        robust = {"full": per_seed[0], **{c: split_metrics(features, indices, r["sentiment"], r["emotions"])
                                          for c, r in conditions.items()}}
    routing = {k: v.mean(0).tolist() for k, v in result["routing"].items()}
    return RunScores(mean_std(per_seed, per_seed=True), averaged, result, robust, conditions, routing,
                     costs(model, features, indices), selection)


def chosen(model) -> dict | None:
    """How the model's checkpoint was chosen (train's `selection`) and the epoch it chose; None for a model
    trained before train recorded it."""
    rule = model.provenance.get("selection")
    return {**rule, "best_epoch": model.provenance["best_epoch"]} if rule else None


def compare(features: FeatureFile, indices: np.ndarray, a: dict, b: dict, seed: int) -> list[dict]:
    """Each headline metric (mmolre/stats.py HEADLINES) of predictions `a` against `b` on the same utterances
    of `indices`, per dataset, on the rows where both predict and the label is known."""
    out = []
    for dataset in sorted(set(features.dataset[indices])):
        rows = features.dataset[indices] == dataset
        for task, spec in features.tasks.items():
            name = LABEL_ARRAYS[task]
            label, x, y = features.labels(task)[indices][rows], a[name][rows], b[name][rows]
            known = labelled(label) & labelled(x) & labelled(y)
            if spec.metrics not in HEADLINES or known.sum() < 2:
                continue
            x, y, label = x[known], y[known], label[known]
            label = class_index(spec, label) if spec.kind == "classes" else label
            out += [{"dataset": dataset, "metric": f"{spec.key}.{key}", **paired(x, y, label, metric, seed)}
                    for key, metric in HEADLINES[spec.metrics].items()]
    return out


def comparisons(scores: dict[str, RunScores], features: FeatureFile, indices: np.ndarray, seed: int) -> dict:
    """The main run against every other run (seed-averaged predictions), each robustness condition against the
    full input (the run's first seed): reports/eval/comparisons.json."""
    pairs = [{"a": MAIN_RUN, "b": run, "kind": "runs",
              **entry} for run in scores if run != MAIN_RUN
             for entry in compare(features, indices, scores[MAIN_RUN].predictions, scores[run].predictions, seed)]
    for run, s in scores.items():
        for condition, predicted in s.conditions.items():
            pairs += [{"a": f"{run}, {condition}", "b": f"{run}, full input", "kind": "robustness", **entry}
                      for entry in compare(features, indices, predicted, s.first, seed)]
    return {"method": {"interval": f"paired bootstrap over utterances, percentile, {CONFIDENCE:.0%}",
                       "p": "paired permutation test (each utterance's two predictions swapped), two-sided",
                       "resamples": STATS_RESAMPLES, "seed": seed}, "pairs": pairs}


def costs(model, features: FeatureFile, indices: np.ndarray) -> dict:
    """The model's parameters and forward FLOPs for one utterance of the split's mean lengths (of the paper's two
    modalities, and of any other the run reads)."""
    read = [m for m in features.offsets if m in PAPER_MODALITIES or m in model.config.modalities]
    lengths = {m: int(round(float(features.lengths(m)[indices].mean()))) for m in read}
    if model.config.arch in FIELD_ARCHS:  # MMSA's model: its FLOPs counted, its own parameters and our addition
        return {"params": sum(p.numel() for p in model.parameters()), "flops_per_utterance":
                measured_flops(model, lengths), "lengths": lengths, "params_mmsa_model": count_parameters(model.net),
                "params_added": {"emotion_head": sum(p.numel() for p in model.emotion_head.parameters())
                                 if model.emotion_head is not None else 0}}
    flops = closed_form_flops(model.config, lengths)
    return {"params": sum(p.numel() for p in model.parameters()), "flops_per_utterance": flops,
            "lengths": lengths}


def write_details(path: Path, split: str, features: FeatureFile, routing: dict) -> None:
    """Feature provenance, the main run's mean router gates and top-1 shares, and with a sparse router the mean
    number of experts a token uses per block (the report's plot data)."""
    gates = {k: v for k, v in routing.items() if not k.startswith(("top1/", "active/"))}
    part = lambda prefix: {k.removeprefix(prefix): v for k, v in routing.items() if k.startswith(prefix)}
    active = {k: v[0] for k, v in part("active/").items()}  # experts per token (top-k / top-p routers only)
    write_json(path, {"split": split, "features": {k: str(v) for k, v in features.attrs.items()}, "gates": gates,
                      "top1": part("top1/"), **({"active": active} if active else {})})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scoring_roots(parser)


def run(args: argparse.Namespace, params: dict) -> None:
    validate_runs(params)  # before any work, as the CLI validates SECTIONS
    evaluate(params, args.features_root, args.models_root, args.reports)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("evaluate")
