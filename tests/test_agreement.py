"""Agreement statistics against published and hand-computed values."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from spinelandmarks.evaluation.agreement import (
    binary_agreement,
    continuous_agreement,
    fracture_agreement,
    fracture_operating_points,
    icc,
)

needs_pingouin = pytest.mark.skipif(importlib.util.find_spec("pingouin") is None,
                                    reason="pingouin (the stats extra) not installed")

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. Published: ICC(2,1) = 0.29,
# ICC(3,1) = 0.71 (and ICC(1,1) = 0.17).
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6],
                          [10, 5, 6, 9], [6, 2, 4, 7]], float)


@needs_pingouin
def test_icc_matches_shrout_fleiss_worked_example() -> None:
    got = icc(SHROUT_FLEISS)
    assert got["icc2_1"] == pytest.approx(0.29, abs=0.005)
    assert got["icc3_1"] == pytest.approx(0.71, abs=0.005)
    rows_with_nan = np.vstack([SHROUT_FLEISS, [np.nan, 1, 2, 3]])
    assert icc(rows_with_nan) == got  # incomplete rows are left out


def test_continuous_agreement_by_hand() -> None:
    truth = np.array([10.0, 20.0, 30.0, 40.0, np.nan])
    pred = np.array([12.0, 19.0, 33.0, 40.0, 5.0])  # errors 2, -1, 3, 0; the NaN pair dropped
    a = continuous_agreement(pred, truth)
    assert a["n"] == 4
    assert a["mae"] == pytest.approx(1.5) and a["median_ae"] == pytest.approx(1.5)
    assert a["bias"] == pytest.approx(1.0)
    sd = math.sqrt(((1.0 ** 2) + 2.0 ** 2 + 2.0 ** 2 + 1.0 ** 2) / 3)  # deviations 1,-2,2,-1
    assert a["loa_low"] == pytest.approx(1.0 - 1.96 * sd)
    assert a["loa_high"] == pytest.approx(1.0 + 1.96 * sd)
    assert a["pearson_r"] == pytest.approx(np.corrcoef(pred[:4], truth[:4])[0, 1])
    if importlib.util.find_spec("pingouin") is not None:
        assert 0.95 < a["icc2_1"] <= 1.0 and 0.95 < a["icc3_1"] <= 1.0
    else:
        assert "pingouin" in a["icc_note"]


def test_binary_agreement_by_hand() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1], bool)  # TP 3, FN 1, TN 5, FP 1
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.0, 0.15, 0.6])
    a = binary_agreement(pred, truth, score, n_resamples=200)
    assert a["accuracy"] == pytest.approx(0.8)
    assert a["sensitivity"] == pytest.approx(0.75) and a["specificity"] == pytest.approx(5 / 6)
    # AUC = P(score of a positive > score of a negative): 6 + 6 + 6 + 2 of 24 pairs
    assert a["auc"] == pytest.approx(20 / 24)
    for name in ("accuracy", "sensitivity", "specificity", "auc"):
        lo, hi = a[f"{name}_ci"]
        assert lo <= a[name] <= hi
    again = binary_agreement(pred, truth, score, n_resamples=200)
    assert again["auc_ci"] == a["auc_ci"]  # seeded
    none = binary_agreement(pred[4:], truth[4:])
    assert math.isnan(none["sensitivity"]) and none["specificity"] == pytest.approx(5 / 6)


def test_fracture_agreement_per_vertebra_patient_and_level() -> None:
    levels = ["L1", "L2", "L3"]
    truth = np.array([[0, 2, 0], [0, 0, 0], [1, 0, 0], [0, 0, 3]], float)
    pred = np.array([[0, 2, 0], [0, 0, 1], [0, 1, 0], [0, 0, np.nan]], float)
    loss = np.array([[0.05, 0.3, 0.1], [0.0, 0.05, 0.21], [0.1, 0.22, 0.0], [0.0, 0.1, np.nan]])
    f = fracture_agreement(pred, truth, loss, levels, n_resamples=100)
    v = f["per_vertebra"]  # 11 measurable pairs: TP 1 (P1 L2), FN 1 (P3 L1), FP 2, TN 7
    assert v["n"] == 11 and v["positives"] == 2
    assert v["sensitivity"] == pytest.approx(0.5) and v["specificity"] == pytest.approx(7 / 9)
    p = f["per_patient"]  # truth: P1, P3, P4 fractured; pred: P1, P2, P3
    assert p["sensitivity"] == pytest.approx(2 / 3) and p["specificity"] == pytest.approx(0.0)
    # found: P1 (L2 = L2, right) and P3 (L2 predicted, L1 true: wrong level)
    assert f["right_levels"] == {"n": 2, "share": 0.5}
    grade2 = fracture_agreement(pred, truth, loss, levels, min_grade=2, n_resamples=100)
    assert grade2["per_vertebra"]["positives"] == 1


def test_fracture_operating_points_read_the_loss_at_each_line() -> None:
    truth = np.array([[0, 2, 0], [0, 0, 0], [1, 0, 0], [0, 0, 3]], float)
    loss = np.array([[0.05, 0.3, 0.1], [0.0, 0.05, 0.21], [0.1, 0.22, 0.0], [0.0, 0.1, np.nan]])
    low, high = fracture_operating_points(loss, truth, [0.2, 0.25])
    # measurable bodies: 11 (P4 L3 has no loss); grade >= 2 among them: P1 L2 only
    # line 0.20: flagged P1 L2 (TP), P2 L3 and P3 L2 (FP) -> sensitivity 1, specificity 8/10
    assert low["sensitivity"] == 1.0 and low["specificity"] == pytest.approx(0.8)
    # patients: truth P1, P4 (P4's grade 3 has no predicted loss); flagged P1, P2, P3
    assert low["patient_sensitivity"] == 0.5 and low["patient_specificity"] == 0.0
    assert low["patient_accuracy"] == 0.25 and low["right_levels"] == 1.0
    # line 0.25: only P1 L2 -> every measurable body right; P4 missed per patient
    assert high["specificity"] == 1.0 and high["patient_accuracy"] == 0.75
    # the same reading as fracture_agreement on the thresholded grades
    graded = np.where(np.isfinite(loss), np.where(loss >= 0.2, 2.0, 0.0), np.nan)
    f = fracture_agreement(graded, truth, loss, ["L1", "L2", "L3"], min_grade=2, n_resamples=10)
    assert f["per_patient"]["accuracy"] == low["patient_accuracy"]
    assert f["right_levels"]["share"] == low["right_levels"]
