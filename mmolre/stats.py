"""How sure a reported number is (docs/comparisons.md): over seeds and over test utterances.

- A run over several seeds: the mean, the sample std and the 95 % confidence interval of the mean, Student t
  with n - 1 degrees of freedom (mmolre/metrics.py `t_halfwidth`, beside the seeds' mean and std: the interval
  is mean ± that).
- Two models on the same test utterances (`paired`): the difference of a headline metric computed on their
  seed-averaged predictions, a 95 % percentile interval from a paired bootstrap over utterances
  (scipy.stats.bootstrap of the utterances' indices: both models' predictions of an utterance drawn together)
  and a two-sided p-value from a paired permutation test
  (scipy.stats.permutation_test, permutation_type="samples": each utterance's two predictions swapped at random).
  Why a permutation test for the p-value: it is exact under the null hypothesis that the two models' predictions
  are exchangeable on every utterance, and valid for metrics that are not means (Corr, F1), where a bootstrap
  p-value would need a shifted null distribution built by hand. Both use STATS_RESAMPLES resamples, seeded.
- A published mean against our seeds (`placement`): inside our 95 % interval, or how many of our stds away.

The headline metrics are computed here from sums over utterances (`Metric`, `HEADLINES`), so that a resample costs
one matrix product; tests/test_stats.py checks each against mmolre/metrics.py, whose definitions they follow.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from mmolre.metrics import CONFIDENCE, t_halfwidth

STATS_RESAMPLES = 10_000
BATCH = 500  # resamples per vectorised call (bounds the memory: BATCH x utterances)


@dataclass(frozen=True)
class Metric:
    """A headline metric as sums over utterances: `parts` maps predictions and labels to per-utterance columns
    (N, k), `combine` maps their (weighted) sums (..., k) to the metric. A resample is then a count per
    utterance, and its metric a matrix product: no resampled copy of the predictions is ever made."""
    parts: Callable[[np.ndarray, np.ndarray], np.ndarray]
    combine: Callable[[np.ndarray], np.ndarray]


def _ratio(top, bottom, scale: float = 1.0):
    """top / bottom, NaN where bottom is 0 (a resample where the metric is undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, scale * top / np.where(bottom > 0, bottom, 1), np.nan)


def _binary_parts(true: np.ndarray, pred: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per class (positive, negative) of the kept rows: true, predicted, both; columns last."""
    cols = []
    for t, p in ((true, pred), (~true, ~pred)):
        cols += [t & keep, p & keep, t & p & keep]
    return np.stack(cols, -1).astype(float)


def _weighted_f1(sums: np.ndarray) -> np.ndarray:
    """sklearn's weighted F1 (zero_division=0) from per-class (true, predicted, both) sums, flattened on the last
    axis: each class's F1 weighted by its true count."""
    per = sums.reshape(*sums.shape[:-1], -1, 3)
    true, predicted, both = per[..., 0], per[..., 1], per[..., 2]
    f1 = np.nan_to_num(_ratio(2 * both, true + predicted))
    return _ratio((f1 * true).sum(-1), true.sum(-1), 100.0)


def _share(sums: np.ndarray) -> np.ndarray:
    """Percent of the rows counted in column 0 that column 1 counts (an accuracy)."""
    return _ratio(sums[..., 1], sums[..., 0], 100.0)


def _per_emotion(sums: np.ndarray) -> np.ndarray:
    """(..., emotions x 6) sums of _emotion_parts -> (..., emotions, 6)."""
    return sums.reshape(*sums.shape[:-1], -1, 6)


def _corr(sums: np.ndarray) -> np.ndarray:
    n, sp, st, spp, stt, spt = np.moveaxis(sums, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (spt - sp * st / n) / np.sqrt((spp - sp * sp / n) * (stt - st * st / n))


def _emotion_wa(sums: np.ndarray) -> np.ndarray:
    """Mean over emotions of balanced accuracy (an emotion with one class in the rows left out, as mer_metrics)."""
    per = _per_emotion(sums)
    positives, negatives, tp, tn = per[..., 0], per[..., 3], per[..., 2], per[..., 5]
    wa = np.where((positives > 0) & (negatives > 0), 50 * (_ratio(tp, positives) + _ratio(tn, negatives)), np.nan)
    with warnings.catch_warnings():  # every emotion undefined in a resample: NaN, as mer_metrics gives
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(wa, -1)


def _emotion_parts(prob, label):
    """Each emotion's presence (intensity > 0) against probability > 0.5: _binary_parts per emotion, flattened."""
    true, pred = label > 0, prob > 0.5
    return _binary_parts(true, pred, np.ones_like(true)).reshape(len(label), -1)


def _emotion_f1(sums):
    return _weighted_f1(_per_emotion(sums)).mean(-1)


def _class_parts(prob, true):
    """Classes: correct, then per class (true, predicted, both), from (N, K) probabilities and (N,) class indices."""
    k = prob.shape[1]
    truth, pred = np.eye(k, dtype=bool)[true.astype(int)], np.eye(k, dtype=bool)[prob.argmax(1)]
    cols = [np.ones(len(true)), (truth & pred).any(1)] + [c for j in range(k)
                                                         for c in (truth[:, j], pred[:, j], truth[:, j] & pred[:, j])]
    return np.stack(cols, -1).astype(float)


def _clipped(parts):
    """SIMS: predictions and labels clipped to [-1, 1] first (mmolre/metrics.py sims_metrics)."""
    return lambda p, t: parts(np.clip(p, -1, 1), np.clip(t, -1, 1))


_MAE = Metric(lambda p, t: np.stack([np.abs(p - t), np.ones_like(t)], -1), lambda s: s[..., 0] / s[..., 1])
_CORR = Metric(lambda p, t: np.stack([np.ones_like(t), p, t, p * p, t * t, p * t], -1), _corr)


def _sign_parts(p, t):
    return np.stack([np.ones_like(t), (p > 0) == (t > 0)], -1).astype(float)


# the metrics of mmolre/metrics.py that the paired tests compare, by task metrics name (VAD has none yet)
HEADLINES: dict[str, dict[str, Metric]] = {
    "msa": {"mae": _MAE, "corr": _CORR,
            "acc2_non0": Metric(lambda p, t: np.stack([t != 0, (t != 0) & ((p > 0) == (t > 0))], -1).astype(float),
                                _share),
            "f1_non0": Metric(lambda p, t: _binary_parts(t > 0, p > 0, t != 0), _weighted_f1)},
    "sims": {"mae": Metric(_clipped(_MAE.parts), _MAE.combine), "corr": Metric(_clipped(_CORR.parts), _CORR.combine),
             "acc2": Metric(_clipped(_sign_parts), _share),
             "f1": Metric(_clipped(lambda p, t: _binary_parts(t > 0, p > 0, np.ones_like(t, bool))), _weighted_f1)},
    "mer": {"avg.wa": Metric(_emotion_parts, _emotion_wa), "avg.f1": Metric(_emotion_parts, _emotion_f1)},
    "classes": {"acc": Metric(_class_parts, _share), "f1": Metric(_class_parts, lambda s: _weighted_f1(s[..., 2:]))},
}


def _counts(index: np.ndarray, n: int) -> np.ndarray:
    """(B, n) draws of utterance indices -> (B, n) how often each utterance was drawn."""
    index = np.atleast_2d(index)
    offsets = n * np.arange(len(index))[:, None]
    return np.bincount((index + offsets).ravel(), minlength=index.size).reshape(index.shape).astype(float)


def _swaps(signed: np.ndarray, n: int) -> np.ndarray:
    """(B, n) utterance numbers 1..n, negative where scipy flipped the sign -> (B, n) 1 where swapped."""
    signed = np.atleast_2d(signed)
    out = np.zeros(signed.shape)
    np.put_along_axis(out, np.abs(signed).astype(int) - 1, (signed < 0).astype(float), axis=-1)
    return out


def paired(pred_a: np.ndarray, pred_b: np.ndarray, label: np.ndarray, metric: Metric, seed: int,
           n_resamples: int = STATS_RESAMPLES) -> dict:
    """metric(a) and metric(b) on the same N utterances (arrays (N,), or (N, E) for emotions), their difference,
    its bootstrap 95 % interval and the permutation test's two-sided p-value. Both resample utterance indices:
    the bootstrap draws them with replacement; the permutation test flips each one's sign, which swaps that
    utterance's two predictions (scipy's paired test of one sample)."""
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, label))
    parts_a, parts_b, n = metric.parts(a, t), metric.parts(b, t), len(t)
    moved = parts_b - parts_a  # what a swapped utterance moves from one side's sums to the other's

    def drawn(index, axis=-1):
        counts = _counts(index, n)
        out = metric.combine(counts @ parts_a) - metric.combine(counts @ parts_b)
        return out if np.ndim(index) > 1 else out[0]

    def swapped(signed, axis=-1):
        swaps = _swaps(signed, n) @ moved
        out = metric.combine(parts_a.sum(0) + swaps) - metric.combine(parts_b.sum(0) - swaps)
        return out if np.ndim(signed) > 1 else out[0]

    with warnings.catch_warnings():  # a tiny split's degenerate distribution: its interval is what it is
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap((np.arange(n),), drawn, vectorized=True, n_resamples=n_resamples, batch=BATCH,
                               confidence_level=CONFIDENCE, method="percentile",
                               random_state=np.random.default_rng(seed))
    perm = stats.permutation_test((np.arange(1, n + 1),), swapped, permutation_type="samples", vectorized=True,
                                  n_resamples=n_resamples, batch=BATCH, alternative="two-sided",
                                  random_state=np.random.default_rng(seed))
    # the percentile interval over the resamples where the metric is defined (a resample of constant predictions
    # has no Corr); scipy's own percentile interval is NaN as soon as one resample is
    low, high = np.nanpercentile(boot.bootstrap_distribution, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    a_value, b_value = (float(metric.combine(parts.sum(0))) for parts in (parts_a, parts_b))
    return {"a_value": a_value, "b_value": b_value, "diff": a_value - b_value, "ci95": [float(low), float(high)],
            "p": float(perm.pvalue), "n": n}


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
