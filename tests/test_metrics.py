"""Metrics against values computed by hand from the definitions in architecture.md."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from mmolre.label_spaces import LABEL_SPACES
from mmolre.metrics import class_metrics, mer_metrics, msa_metrics, score, sims_metrics, vad_metrics


def test_has0_counts_zero_labels_as_non_negative_non0_drops_them():
    label = np.array([0.0, 0.0, -1.0, 2.0])
    pred = np.array([0.5, -0.5, -2.0, 1.0])
    m = msa_metrics(pred, label)
    # has0: truth [T, T, F, T], pred>=0 [T, F, F, T] -> 3/4 right
    assert m["acc2_has0"] == pytest.approx(75.0)
    # non0: only rows 2, 3 remain, both right
    assert m["acc2_non0"] == pytest.approx(100.0)
    assert m["f1_non0"] == pytest.approx(100.0)
    # weighted F1 on has0: class T (support 3): P=2/2, R=2/3 -> F1=0.8; class F (support 1): P=1/2, R=1 -> 2/3
    assert m["f1_has0"] == pytest.approx(100 * (3 * 0.8 + 1 * 2 / 3) / 4)


def test_acc7_and_acc5_clip_then_round_half_to_even():
    label = np.array([3.0, -3.0, 0.0, 2.0, 1.0])
    pred = np.array([4.2, -2.6, 0.5, 2.5, 1.4])
    m = msa_metrics(pred, label)
    # acc7: 4.2 -> clip 3 -> 3 ok; -2.6 -> -3 ok; 0.5 -> 0 (half to even) ok; 2.5 -> 2 ok; 1.4 -> 1 ok
    assert m["acc7"] == pytest.approx(100.0)
    # acc5: labels clip to [2, -2, 0, 2, 1], preds to [2, -2, 0 (0.5 -> 0), 2, 1] -> all equal
    assert m["acc5"] == pytest.approx(100.0)
    m = msa_metrics(np.array([1.6, -0.4]), np.array([1.0, 0.0]))
    assert m["acc7"] == pytest.approx(50.0)  # 1.6 -> 2 != 1; -0.4 -> -0 == 0


def test_mae_and_pearson_corr():
    pred, label = np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.5, 2.0, 2.0, 4.0])
    m = msa_metrics(pred, label)
    assert m["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    pc, lc = pred - pred.mean(), label - label.mean()
    assert m["corr"] == pytest.approx((pc @ lc) / np.sqrt((pc @ pc) * (lc @ lc)))
    assert np.isnan(msa_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["corr"])


def test_weighted_accuracy_formula():
    # one emotion: 2 positives, 4 negatives; TP = 1, TN = 3
    label = np.zeros((6, 6))
    prob = np.zeros((6, 6))
    label[:2, 0] = [1.0, 0.3333]
    prob[:, 0] = [0.9, 0.4, 0.6, 0.1, 0.2, 0.49]
    m = mer_metrics(prob, label)
    tp, tn, p, n = 1, 3, 2, 4
    assert m["happy"]["wa"] == pytest.approx(100 * (tp * n / p + tn) / (2 * n))
    # weighted F1: positives P=1/2 R=1/2 F=1/2 (support 2); negatives P=3/4 R=3/4 F=3/4 (support 4)
    assert m["happy"]["f1"] == pytest.approx(100 * (2 * 0.5 + 4 * 0.75) / 6)


def test_presence_is_intensity_above_zero_and_prob_strictly_above_half():
    """As the field's reference code: predicted presence is prob > 0.5 (logit > 0), so 0.5 is absent."""
    label = np.array([[0.0] * 6, [0.3333] * 6, [1.0] * 6])
    prob = np.array([[0.5] * 6, [0.51] * 6, [0.5] * 6])  # 0.5 on a present emotion is a miss
    m = mer_metrics(prob, label)
    tp, tn, p, n = 1, 1, 2, 1
    assert m["happy"]["wa"] == pytest.approx(100 * (tp * n / p + tn) / (2 * n))  # 75.0
    assert m["fear"]["wa"] == pytest.approx(75.0)


def test_wa_is_nan_without_both_classes_and_avg_skips_it():
    label = np.zeros((4, 6))
    label[:2, 1:] = 1.0  # happy never present
    prob = np.where(label > 0, 0.9, 0.1)
    m = mer_metrics(prob, label)
    assert np.isnan(m["happy"]["wa"])
    assert m["avg"]["wa"] == pytest.approx(100.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="equal"):
        msa_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        mer_metrics(np.zeros((3, 5)), np.zeros((3, 5)))


def test_seeds_aggregate_to_mean_and_sample_std_beside_each_key():
    from mmolre.metrics import mean_std

    seeds = [{"demo": {"msa": {"mae": 1.0, "corr": 0.5}, "mer": {"avg": {"f1": 60.0}}}},
             {"demo": {"msa": {"mae": 2.0, "corr": 0.6}, "mer": {"avg": {"f1": 70.0}}}},
             {"demo": {"msa": {"mae": 4.0, "corr": 0.7}, "mer": {"avg": {"f1": 65.0}}}}]
    out = mean_std(seeds)
    assert out["demo"]["msa"]["mae"] == pytest.approx(7 / 3)
    assert out["demo"]["msa"]["mae_std"] == pytest.approx(np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert out["demo"]["msa"]["corr_std"] == pytest.approx(0.1)
    # 95 % t interval of the mean: t(0.975, df=2) = 4.3027 (a t table), std 5, n 3 -> 4.3027 * 5 / sqrt(3)
    assert out["demo"]["mer"]["avg"] == {"f1": pytest.approx(65.0), "f1_std": pytest.approx(5.0),
                                         "f1_ci95": pytest.approx(4.3027 * 5 / np.sqrt(3), abs=1e-3)}
    assert out["demo"]["msa"]["corr_ci95"] == pytest.approx(4.3027 * 0.1 / np.sqrt(3), abs=1e-4)
    assert "mae_seeds" not in out["demo"]["msa"]
    assert mean_std(seeds, per_seed=True)["demo"]["msa"]["mae_seeds"] == [1.0, 2.0, 4.0]
    assert mean_std(seeds[:1]) == seeds[0]  # one seed: today's keys, no std


def test_sims_clips_then_bins_left_open_right_closed_as_mmsa():
    """Labels [-1.0, 0.0, 0.1, 0.7, 1.0] and predictions [-1.4, 0.05, 0.1, 0.75, 0.3]: after clipping, the
    predictions are [-1, 0.05, 0.1, 0.75, 0.3]."""
    label = np.array([-1.0, 0.0, 0.1, 0.7, 1.0])
    pred = np.array([-1.4, 0.05, 0.1, 0.75, 0.3])
    m = sims_metrics(pred, label)
    # acc2 ((-1.01, 0], (0, 1.01]): labels [0, 0, 1, 1, 1] (0 is negative), preds [0, 1, 1, 1, 1] -> 4/5
    assert m["acc2"] == pytest.approx(80.0)
    # acc3 (-0.1, 0.1 edges): labels [0, 1, 1, 2, 2], preds [0, 1, 1, 2, 2] -> 5/5 (0.1 is in (-0.1, 0.1])
    assert m["acc3"] == pytest.approx(100.0)
    # acc5 (-0.7, -0.1, 0.1, 0.7): labels [0, 2, 2, 3, 4], preds [0, 2, 2, 4, 3] -> 3/5
    assert m["acc5"] == pytest.approx(60.0)
    clipped = np.clip(pred, -1, 1)
    assert m["mae"] == pytest.approx(np.mean(np.abs(clipped - label)))
    assert m["corr"] == pytest.approx(np.corrcoef(clipped, label)[0, 1])
    assert m["f1"] == pytest.approx(100 * f1_score([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], average="weighted"))


def test_classes_accuracy_ua_and_weighted_f1_are_sklearns():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 4, 40)
    true[true == 3] = 2  # class 3 never true: UA averages the classes present
    prob = rng.random((40, 4))
    pred = prob.argmax(1)
    m = class_metrics(prob, true, ("neu", "hap", "ang", "sad"))
    assert m["acc"] == pytest.approx(100 * accuracy_score(true, pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["ua"] == pytest.approx(100 * balanced_accuracy_score(true, pred))
    assert m["f1"] == pytest.approx(100 * f1_score(true, pred, average="weighted"))
    hand = [np.mean(pred[true == k] == k) for k in range(3)]
    assert m["ua"] == pytest.approx(100 * np.mean(hand))  # UA = mean per-class recall, by hand
    assert [m["recall"][c] for c in ("neu", "hap", "ang")] == pytest.approx([100 * r for r in hand])
    assert np.isnan(m["recall"]["sad"])


def test_class_labels_stored_as_numbers_or_one_hot_score_alike():
    meld = LABEL_SPACES["meld"]
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    assert score(meld["sa"], prob, np.array([-1.0, 1.0, -1.0]))["acc"] == pytest.approx(200 / 3)
    onehot = np.eye(7)[[0, 3]]
    emotions = np.zeros((2, 7))
    emotions[0, 0], emotions[1, 1] = 0.9, 0.9
    assert score(meld["er"], emotions, onehot)["acc"] == pytest.approx(50.0)


def test_vad_mae_corr_and_concordance():
    pred = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 4.0], [3.0, 5.0, 5.0]])
    label = np.array([[1.0, 3.0, 3.0], [2.5, 2.0, 4.0], [3.5, 4.0, 5.0]])
    m = vad_metrics(pred, label, ("valence", "arousal", "dominance"))
    p, t = pred[:, 0], label[:, 0]  # means 2 and 7/3; population variances 2/3 and 19/18; cov 5/6
    assert m["valence"]["mae"] == pytest.approx(1 / 3)
    assert m["valence"]["ccc"] == pytest.approx(2 * (5 / 6) / (2 / 3 + 19 / 18 + (2 - 7 / 3) ** 2))
    assert m["valence"]["corr"] == pytest.approx(np.corrcoef(p, t)[0, 1])
    assert m["dominance"] == {"mae": 0.0, "corr": pytest.approx(1.0), "ccc": pytest.approx(1.0)}
