"""How sure a reported number is (docs/comparisons.md): over seeds and over test utterances.

- A run over several seeds: the mean, the sample std and the 95 % confidence interval of the mean, Student t
  with n - 1 degrees of freedom (mmolre/metrics.py `t_halfwidth`, beside the seeds' mean and std: the interval
  is mean ± that).
- Two models on the same test utterances (`paired`): the difference of a headline metric computed on their
  seed-averaged predictions, a 95 % percentile interval from a paired bootstrap over utterances
  (scipy.stats.bootstrap, paired=True) and a two-sided p-value from a paired permutation test
  (scipy.stats.permutation_test, permutation_type="samples": each utterance's two predictions swapped at random).
  Why a permutation test for the p-value: it is exact under the null hypothesis that the two models' predictions
  are exchangeable on every utterance, and valid for metrics that are not means (Corr, F1), where a bootstrap
  p-value would need a shifted null distribution built by hand. Both use STATS_RESAMPLES resamples, seeded.
- A published mean against our seeds (`placement`): inside our 95 % interval, or how many of our stds away.

The headline metrics are computed here vectorised over resamples (`HEADLINES`); tests/test_stats.py checks each
against mmolre/metrics.py, whose definitions they follow.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
from scipy import stats

from mmolre.metrics import CONFIDENCE, t_halfwidth

STATS_RESAMPLES = 10_000
BATCH = 200  # resamples per vectorised call (bounds the memory: BATCH x utterances x emotions)


def _weighted_f1(true: np.ndarray, pred: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """sklearn's weighted F1 of binary labels (zero_division=0) over the rows `keep`, along the last axis."""
    total = keep.sum(-1)
    out = 0.0
    for cls in (True, False):
        t, p = (true == cls) & keep, (pred == cls) & keep
        tp, support, predicted = (t & p).sum(-1), t.sum(-1), p.sum(-1)
        denominator = support + predicted
        f1 = np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp)), where=denominator > 0)
        out = out + f1 * support
    return 100 * np.divide(out, total, out=np.full(np.shape(total), np.nan), where=total > 0)


def _corr(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    p, t = pred - pred.mean(-1, keepdims=True), label - label.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant resample: undefined (NaN), as in msa_metrics
        return (p * t).sum(-1) / np.sqrt((p * p).sum(-1) * (t * t).sum(-1))


def _acc2_non0(pred, label):
    keep = label != 0
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without a non-zero label: undefined (NaN)
        return 100 * ((pred > 0) == (label > 0)).sum(-1, where=keep) / keep.sum(-1)


def _emotion(kind: str) -> Callable:
    """The mean over emotions (last axis, moved first) of WA (balanced accuracy; an emotion with one class in the
    rows is left out, as mer_metrics does) or weighted F1 of presence (intensity > 0, probability > 0.5)."""
    def statistic(prob, label):
        true, pred = np.moveaxis(label > 0, -1, 0), np.moveaxis(prob > 0.5, -1, 0)
        if kind == "f1":
            return _weighted_f1(true, pred, np.ones_like(true)).mean(0)
        positives, negatives = true.sum(-1), (~true).sum(-1)
        defined = (positives > 0) & (negatives > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            wa = 50 * ((true & pred).sum(-1) / positives + (~true & ~pred).sum(-1) / negatives)
        return np.nanmean(np.where(defined, wa, np.nan), axis=0)
    return statistic


# task key -> {metric: statistic(pred, label)} along the utterances' axis (the last; emotions: the one before)
HEADLINES: dict[str, dict[str, Callable]] = {
    "msa": {"mae": lambda p, t: np.abs(p - t).mean(-1), "corr": _corr, "acc2_non0": _acc2_non0,
            "f1_non0": lambda p, t: _weighted_f1(t > 0, p > 0, t != 0)},
    "mer": {"avg.wa": _emotion("wa"), "avg.f1": _emotion("f1")},
}


def paired(pred_a: np.ndarray, pred_b: np.ndarray, label: np.ndarray, statistic: Callable, seed: int,
           n_resamples: int = STATS_RESAMPLES) -> dict:
    """Difference `statistic(a) - statistic(b)` on the same N utterances (arrays (N,), or (N, E) for emotions),
    its bootstrap 95 % interval and the permutation test's two-sided p-value. Both resample utterance indices:
    the bootstrap draws them with replacement; the permutation test flips each one's sign, which swaps that
    utterance's two predictions (scipy's paired test of one sample)."""
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, label))

    def difference(index, swap=None):
        x, y, truth = a[index], b[index], t[index]
        if swap is not None:
            swap = swap.reshape(swap.shape + (1,) * (x.ndim - swap.ndim))
            x, y = np.where(swap, y, x), np.where(swap, x, y)
        return statistic(x, truth) - statistic(y, truth)

    n = len(t)
    with warnings.catch_warnings():  # a tiny split's degenerate distribution: its interval is what it is
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap((np.arange(n),), lambda i, axis: difference(i), vectorized=True, n_resamples=n_resamples,
                               batch=BATCH, confidence_level=CONFIDENCE, method="percentile",
                               random_state=np.random.default_rng(seed))
    perm = stats.permutation_test((np.arange(1, n + 1),), lambda s, axis: difference(np.abs(s) - 1, swap=s < 0),
                                  permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                                  batch=BATCH, alternative="two-sided", random_state=np.random.default_rng(seed))
    # the percentile interval over the resamples where the metric is defined (a resample of constant predictions
    # has no Corr); scipy's own percentile interval is NaN as soon as one resample is
    low, high = np.nanpercentile(boot.bootstrap_distribution, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"diff": float(difference(np.arange(n))), "ci95": [float(low), float(high)], "p": float(perm.pvalue),
            "n": n}


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def sentence(a: str, b: str, result: dict, metric: str, digits: int, lower_is_better: bool) -> str:
    """"MMoLRE vs MulT: MAE -0.021 [-0.034, -0.008], p = 0.002 (MMoLRE better)", or "... within noise
    (p = 0.41)" when the permutation test does not reject at the 5 % level."""
    low, high = result["ci95"]
    head = f"{a} vs {b}: {metric} {result['diff']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
    if not result["p"] < 1 - CONFIDENCE:
        return f"{head}, within noise ({p_text(result['p'])})"
    better = a if (result["diff"] < 0) == lower_is_better else b
    return f"{head}, {p_text(result['p'])} ({better} better)"


def placement(values, published: float) -> dict:
    """Where a published mean falls against our per-seed `values`: inside our 95 % interval, or how many of our
    sample stds it lies from our mean (signed: published minus ours)."""
    values = np.asarray(values, dtype=np.float64)
    mean, half = float(values.mean()), t_halfwidth(values)
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    inside = half is not None and abs(published - mean) <= half
    return {"mean": mean, "ci95": half, "std": std, "published": published, "inside": inside,
            "stds_away": (published - mean) / std if std > 0 else math.nan}


def placement_text(place: dict, digits: int) -> str:
    if place["ci95"] is None:
        return "one seed: no interval"
    if place["inside"]:
        return f"inside our 95 % interval ({place['mean']:.{digits}f} ± {place['ci95']:.{digits}f})"
    return f"{abs(place['stds_away']):.1f} of our stds {'above' if place['stds_away'] > 0 else 'below'} our mean"
