"""The uncertainty of reported numbers (mmolre/stats.py): intervals over seeds, paired tests over utterances,
checked against hand-computed values and against mmolre/metrics.py."""

from __future__ import annotations

import numpy as np
import pytest

from mmolre.metrics import mer_metrics, msa_metrics
from mmolre.metrics import t_halfwidth
from mmolre.stats import BATCH, HEADLINES, paired, placement, placement_text, sentence

MAE = HEADLINES["msa"]["mae"]


def value(metric, pred, label) -> float:
    """A metric on all the rows: its parts summed once (no resample)."""
    return float(metric.combine(metric.parts(np.asarray(pred, float), np.asarray(label, float)).sum(0)))


def test_the_t_interval_of_three_known_values():
    # mean 2, sample std 1, sem 1 / sqrt(3); t(0.975, df=2) = 4.3027 (a t table): 4.3027 / sqrt(3) = 2.4841
    assert t_halfwidth([1.0, 2.0, 3.0]) == pytest.approx(2.4841, abs=1e-4)
    assert t_halfwidth([5.0, 5.0, 5.0]) == 0.0  # seeds that agree: no spread
    assert t_halfwidth([1.0]) is None and t_halfwidth([1.0, float("nan")]) is None


def test_the_headline_metrics_equal_the_reference_definitions():
    rng = np.random.default_rng(3)
    label = np.round(rng.uniform(-3, 3, 200) * 3) / 3
    label[:20] = 0.0  # non0 leaves these out
    pred = label + rng.normal(0, 1.0, 200)
    reference = msa_metrics(pred, label)
    for key, metric in HEADLINES["msa"].items():
        assert value(metric, pred, label) == pytest.approx(reference[key], abs=1e-9), key
    intensity = rng.uniform(0, 3, (200, 6)) * (rng.uniform(size=(200, 6)) > 0.7)
    intensity[:, 5] = 0.0  # fear absent everywhere: its WA is undefined and left out of the mean
    prob = rng.uniform(size=(200, 6))
    reference = mer_metrics(prob, intensity)["avg"]
    assert value(HEADLINES["mer"]["avg.wa"], prob, intensity) == pytest.approx(reference["wa"], abs=1e-9)
    assert value(HEADLINES["mer"]["avg.f1"], prob, intensity) == pytest.approx(reference["f1"], abs=1e-9)


def test_the_permutation_p_value_of_a_constant_gap_is_two_of_sixteen():
    # a is 1 off every label, b 0.5: MAE(a) - MAE(b) = +0.5. Swapping utterance i's predictions moves the gap by
    # -1 / 4; of the 2^4 = 16 swaps (enumerated exactly) only none and all reach |gap| >= 0.5: p = 2 / 16.
    label = np.array([0.0, 1.0, -1.0, 2.0])
    result = paired(label + 1.0, label + 0.5, label, MAE, seed=0)
    assert result["diff"] == pytest.approx(0.5) and result["n"] == 4
    assert result["p"] == pytest.approx(2 / 16)
    assert result["ci95"] == pytest.approx([0.5, 0.5])  # every resample has the same gap


def test_the_bootstrap_interval_of_two_utterances():
    # per-utterance gaps 0 and 1: a resample's mean gap is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so with 10,000
    # resamples the 2.5th percentile is 0 and the 97.5th is 1
    label = np.zeros(2)
    result = paired(np.array([1.0, 2.0]), np.array([1.0, 1.0]), label, MAE, seed=1111)
    assert result["diff"] == pytest.approx(0.5) and result["ci95"] == pytest.approx([0.0, 1.0])


def test_the_bootstrap_is_seeded_and_resamples_utterances_with_replacement():
    rng = np.random.default_rng(0)
    label = rng.normal(size=30)
    a, b = label + rng.normal(0, 1, 30), label + rng.normal(0, 1.5, 30)
    first = paired(a, b, label, MAE, seed=7, n_resamples=2000)
    assert paired(a, b, label, MAE, seed=7, n_resamples=2000) == first
    # by hand: the same generator's draws of 30 indices with replacement, in scipy's batches, percentiles 2.5/97.5
    draw, gaps = np.random.default_rng(7), []
    for size in (BATCH,) * (2000 // BATCH):
        index = draw.integers(0, 30, (size, 30))
        gaps.append(np.abs(a[index] - label[index]).mean(1) - np.abs(b[index] - label[index]).mean(1))
    assert first["ci95"] == pytest.approx(list(np.percentile(np.concatenate(gaps), [2.5, 97.5])))


def test_emotions_are_compared_as_a_mean_over_the_emotions():
    rng = np.random.default_rng(1)
    intensity = rng.uniform(0, 3, (40, 6)) * (rng.uniform(size=(40, 6)) > 0.5)
    good, poor = (intensity > 0) * 0.8 + 0.1, rng.uniform(size=(40, 6))
    result = paired(good, poor, intensity, HEADLINES["mer"]["avg.f1"], seed=0, n_resamples=1000)
    expected = mer_metrics(good, intensity)["avg"]["f1"] - mer_metrics(poor, intensity)["avg"]["f1"]
    assert result["diff"] == pytest.approx(expected) and result["ci95"][0] > 0 and result["p"] < 0.01


def test_the_sentences_a_reader_needs():
    result = {"diff": -0.021, "ci95": [-0.034, -0.008], "p": 0.002}
    assert sentence("MMoLRE", "MulT", result, "MAE", 3, True) == \
        "MMoLRE vs MulT: MAE -0.021 [-0.034, -0.008], p = 0.002 (MMoLRE better)"
    assert sentence("MMoLRE", "MulT", {**result, "diff": -1.2, "ci95": [-2.0, -0.4]}, "Acc-2", 1, False) == \
        "MMoLRE vs MulT: Acc-2 -1.2 [-2.0, -0.4], p = 0.002 (MulT better)"
    assert sentence("MMoLRE", "MulT", {**result, "p": 0.41}, "MAE", 3, True) == \
        "MMoLRE vs MulT: MAE -0.021 [-0.034, -0.008], within noise (p = 0.41)"


def test_a_published_mean_is_placed_against_our_seeds():
    inside = placement([0.90, 0.92, 0.91], 0.92)  # mean 0.91, std 0.01, half-width 4.3027 * 0.01 / sqrt(3) = 0.0248
    assert inside["inside"] and placement_text(inside, 3) == "inside our 95 % interval (0.910 ± 0.025)"
    outside = placement([0.90, 0.92, 0.91], 0.95)
    assert not outside["inside"] and outside["stds_away"] == pytest.approx(4.0)
    assert placement_text(outside, 3) == "4.0 of our stds above our mean"
    assert placement_text(placement([0.90, 0.92, 0.91], 0.88), 3) == "3.0 of our stds below our mean"


def test_sims_and_class_metrics_equal_the_reference_definitions():
    from mmolre.metrics import class_metrics, sims_metrics

    rng = np.random.default_rng(5)
    label = np.round(rng.uniform(-1.2, 1.2, 150), 1)  # past [-1, 1]: clipped first, as MMSA does
    pred = label + rng.normal(0, 0.5, 150)
    reference = sims_metrics(pred, label)
    for key, metric in HEADLINES["sims"].items():
        assert value(metric, pred, label) == pytest.approx(reference[key], abs=1e-9), key
    true = rng.integers(0, 4, 150)
    true[true == 3] = 2  # a class that never occurs: no weight in the weighted F1, as in sklearn
    prob = rng.uniform(size=(150, 4))
    reference = class_metrics(prob, true, ("a", "b", "c", "d"))
    assert value(HEADLINES["classes"]["acc"], prob, true) == pytest.approx(reference["acc"], abs=1e-9)
    assert value(HEADLINES["classes"]["f1"], prob, true) == pytest.approx(reference["f1"], abs=1e-9)
    result = paired(prob, rng.uniform(size=(150, 4)), true, HEADLINES["classes"]["f1"], seed=0, n_resamples=500)
    assert result["ci95"][0] <= result["diff"] <= result["ci95"][1] and 0 < result["p"] <= 1
