"""The field's metrics for each label space's tasks (definitions as in MMSA / MulT / UniMSE for the CMU
corpora and SIMS, as the MELD and IEMOCAP papers report theirs; architecture.md). `score` picks the
function a task names (mmolre/label_spaces.py).

Accuracies and F1 in percent, MAE and Corr as plain numbers. NaN where a metric is
undefined (e.g. a split with no positive example of an emotion).
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import numpy as np

from mmolre import EMOTIONS
from mmolre.label_spaces import Task


def _pct(x: float) -> float:
    return float(100.0 * x)


def msa_metrics(pred, label) -> dict[str, float]:
    """Sentiment metrics from (N,) predictions and labels in [-3, 3].

    has0: negative (< 0) vs non-negative (>= 0); non0: samples with label 0 dropped,
    negative vs positive. F1 is weighted F1. acc7 / acc5: predictions and labels clipped to
    [-3, 3] / [-2, 2] and rounded with np.round (half to even, as MMSA does).
    """
    from sklearn.metrics import accuracy_score, f1_score  # here: reading metrics files (the flows) needs no sklearn

    pred, label = np.asarray(pred, dtype=np.float64), np.asarray(label, dtype=np.float64)
    if pred.shape != label.shape or pred.ndim != 1:
        raise ValueError(f"msa_metrics: pred {pred.shape} and label {label.shape} must be equal (N,) arrays")
    non0 = label != 0
    out = {
        "acc2_has0": _pct(accuracy_score(label >= 0, pred >= 0)),
        "f1_has0": _pct(f1_score(label >= 0, pred >= 0, average="weighted")),
        "acc2_non0": _pct(accuracy_score(label[non0] > 0, pred[non0] > 0)) if non0.any() else float("nan"),
        "f1_non0": _pct(f1_score(label[non0] > 0, pred[non0] > 0, average="weighted")) if non0.any() else float("nan"),
        "acc7": _pct(np.mean(np.round(np.clip(pred, -3, 3)) == np.round(np.clip(label, -3, 3)))),
        "acc5": _pct(np.mean(np.round(np.clip(pred, -2, 2)) == np.round(np.clip(label, -2, 2)))),
        "mae": float(np.mean(np.abs(pred - label))),
        "corr": float(np.corrcoef(pred, label)[0, 1]) if pred.std() > 0 and label.std() > 0 else float("nan"),
    }
    return out


def mer_metrics(prob, label, emotions: tuple[str, ...] = EMOTIONS) -> dict[str, dict[str, float]]:
    """Emotion metrics from (N, 6) presence probabilities and (N, 6) label intensities.

    True presence: intensity > 0; predicted: probability > 0.5 (strictly, i.e. logit > 0, as
    the field's reference code does). WA = (TP * N/P + TN) / (2N)
    (= balanced accuracy), F1 = weighted F1; `avg` is the mean over the six emotions.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

    prob, label = np.asarray(prob, dtype=np.float64), np.asarray(label, dtype=np.float64)
    if prob.shape != label.shape or prob.ndim != 2 or prob.shape[1] != len(emotions):
        raise ValueError(f"mer_metrics: prob {prob.shape} and label {label.shape} must both be (N, {len(emotions)})")
    out = {}
    for j, emotion in enumerate(emotions):
        true, pred = label[:, j] > 0, prob[:, j] > 0.5
        both_classes = 0 < true.sum() < len(true)
        out[emotion] = {"wa": _pct(balanced_accuracy_score(true, pred)) if both_classes else float("nan"),
                        "f1": _pct(f1_score(true, pred, average="weighted", zero_division=0))}
    defined = {k: [out[e][k] for e in emotions if not np.isnan(out[e][k])] for k in ("wa", "f1")}
    out["avg"] = {k: float(np.mean(v)) if v else float("nan") for k, v in defined.items()}
    return out


SIMS_EDGES = {"acc2": (-1.01, 0.0, 1.01), "acc3": (-1.01, -0.1, 0.1, 1.01),
              "acc5": (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)}  # MMSA's bins (low, high], after clipping to [-1, 1]


def sims_metrics(pred, label) -> dict[str, float]:
    """CH-SIMS sentiment metrics as MMSA computes them (metricsTop.py, `__eval_sims_regression`): predictions
    and labels clipped to [-1, 1], then binned on SIMS_EDGES, each bin (low, high] (so 0 is negative in
    Acc-2); F1 = weighted F1 of the Acc-2 classes; MAE and Pearson Corr on the clipped values."""
    from sklearn.metrics import f1_score

    pred = np.clip(np.asarray(pred, dtype=np.float64), -1.0, 1.0)
    label = np.clip(np.asarray(label, dtype=np.float64), -1.0, 1.0)
    binned = {k: (np.digitize(pred, edges[1:-1], right=True), np.digitize(label, edges[1:-1], right=True))
              for k, edges in SIMS_EDGES.items()}
    out = {k: _pct(np.mean(p == t)) for k, (p, t) in binned.items()}
    out["f1"] = _pct(f1_score(binned["acc2"][1], binned["acc2"][0], average="weighted"))
    out["mae"] = float(np.mean(np.abs(pred - label)))
    out["corr"] = float(np.corrcoef(pred, label)[0, 1]) if pred.std() > 0 and label.std() > 0 else float("nan")
    return out


def class_metrics(prob, true, names: tuple[str, ...]) -> dict:
    """One class per utterance, from (N, classes) probabilities and (N,) true class indices; predicted = argmax.

    acc: accuracy (IEMOCAP's WA, "weighted accuracy" there: not MOSEI's WA); ua: unweighted accuracy, the
    mean recall over the classes present in the split (= sklearn balanced_accuracy_score; IEMOCAP's UA);
    f1: weighted F1 (sklearn average="weighted"; MELD's headline metric); and each class's recall."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    pred, true = np.asarray(prob, dtype=np.float64).argmax(1), np.asarray(true, dtype=np.int64)
    every = list(range(len(names)))
    recall = recall_score(true, pred, labels=every, average=None, zero_division=0)
    present = np.isin(every, true)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": UA averages the true ones, as meant
        warnings.simplefilter("ignore", UserWarning)
        ua = balanced_accuracy_score(true, pred)
    return {"acc": _pct(accuracy_score(true, pred)), "ua": _pct(ua),
            "f1": _pct(f1_score(true, pred, labels=every, average="weighted", zero_division=0)),
            "recall": {n: _pct(r) if p else float("nan") for n, r, p in zip(names, recall, present)}}


def vad_metrics(pred, label, targets: tuple[str, ...]) -> dict:
    """Per regression target (IEMOCAP's valence, arousal, dominance): MAE, Pearson Corr, and the
    concordance correlation CCC = 2 cov / (var_p + var_l + (mean_p - mean_l)^2) (population moments)."""
    pred, label = np.asarray(pred, dtype=np.float64), np.asarray(label, dtype=np.float64)
    out = {}
    for j, name in enumerate(targets):
        p, t = pred[:, j], label[:, j]
        cov = np.mean((p - p.mean()) * (t - t.mean()))
        out[name] = {"mae": float(np.mean(np.abs(p - t))),
                     "corr": float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else float("nan"),
                     "ccc": float(2 * cov / (p.var() + t.var() + (p.mean() - t.mean()) ** 2))}
    return out


def class_index(task: Task, label: np.ndarray) -> np.ndarray:
    """(N,) class indices of labels stored as class numbers (N,) or one-hot (N, classes)."""
    if task.values:
        return np.searchsorted(np.asarray(task.values), label)  # values are sorted
    return np.asarray(label).argmax(1)


def score(task: Task, pred, label) -> dict:
    """The metrics of one task (its `metrics` name) on labelled rows: predictions as inference gives them."""
    if task.metrics == "msa":
        return msa_metrics(pred, label)
    if task.metrics == "sims":
        return sims_metrics(pred, label)
    if task.metrics == "mer":
        return mer_metrics(pred, label, task.labels)
    if task.metrics == "vad":
        return vad_metrics(pred, label, task.labels)
    return class_metrics(pred, class_index(task, label), task.labels)


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """{"demo": {"msa": {"mae": x}}} -> {"demo.msa.mae": x}: the names `dvc metrics diff` uses."""
    out = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


CONFIDENCE = 0.95  # of every interval mmolre reports
SPREAD = ("_std", "_ci95", "_seeds")  # what mean_std writes beside a metric: not metrics themselves


def is_spread(key: str) -> bool:
    return key.endswith(SPREAD)


def t_halfwidth(values) -> float | None:
    """Half the width of the 95 % Student t interval of the mean of `values` (None for fewer than two)."""
    from scipy import stats  # here, as sklearn: reading metrics files needs neither

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or not np.isfinite(values).all():
        return None
    return float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * stats.sem(values))


def mean_std(results: list[dict], per_seed: bool = False) -> dict:
    """Metrics of several seeds (same nested shape) -> their mean under the same keys and, with more than one
    seed, beside each: the sample standard deviation (ddof = 1) as `<key>_std`, the half-width of the 95 %
    Student t interval of the mean as `<key>_ci95` (`t_halfwidth`: the interval is mean ± it) and, `per_seed`,
    the seeds' values in order as `<key>_seeds`."""
    out = {}
    for key, value in results[0].items():
        if isinstance(value, dict):
            out[key] = mean_std([r[key] for r in results], per_seed)
            continue
        values = np.array([r[key] for r in results], dtype=np.float64)
        out[key] = float(values.mean())
        if len(values) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
            out[f"{key}_ci95"] = t_halfwidth(values)
            if per_seed:
                out[f"{key}_seeds"] = values.tolist()
    return out


def without_seeds(tree: dict) -> dict:
    """`tree` less its `<key>_seeds` lists (metrics.json holds numbers only, for `dvc metrics`)."""
    return {k: without_seeds(v) if isinstance(v, dict) else v for k, v in tree.items() if not k.endswith("_seeds")}


def accepted_metrics(tag: str, repo: str | Path = ".", path: str = "reports/metrics.json") -> dict | None:
    """metrics.json at the accepted model's git tag (read with git: a stage must not call dvc)."""
    try:
        shown = subprocess.run(["git", "show", f"{tag}:{path}"], cwd=repo, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def labelled(values: np.ndarray) -> np.ndarray:
    """(N,) rows of a label or prediction array (N,) / (N, K) without NaN."""
    return ~np.isnan(values.reshape(len(values), -1)).any(1)
