"""Agreement of predicted with reference measurements, in the figures clinical studies report.

- :func:`continuous_agreement`: for an angle or a length, MAE, median absolute error, bias and
  Bland-Altman 95 % limits of agreement, Pearson r and the intraclass correlations ICC(2,1)
  (two-way random effects, absolute agreement, single rater) and ICC(3,1) (two-way mixed,
  consistency), the forms of Shrout & Fleiss (1979) / McGraw & Wong (1996).
- :func:`binary_agreement`: for a yes/no reading (fractured or not), accuracy, sensitivity,
  specificity and the area under the ROC curve of a continuous score, each with a bootstrap
  95 % confidence interval.
- :func:`fracture_agreement`: both of the above per vertebra and per patient for Genant grades,
  and the share of fractured patients found with the right levels.

ICCs come from pingouin (``pip install "spinelandmarks[stats]"``); without it they are NaN and
``icc_note`` says why. Confidence intervals come from :func:`scipy.stats.bootstrap`
(percentile method, resampling the paired cases; resamples where a figure is undefined are left
out); the AUC is the Mann-Whitney U statistic
over ``n_pos * n_neg``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["binary_agreement", "continuous_agreement", "fracture_agreement",
           "fracture_operating_points", "icc"]

_ICC_HINT = 'ICC needs pingouin: pip install "spinelandmarks[stats]"'


def icc(ratings: ArrayLike) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of a (targets, raters) table.

    Parameters
    ----------
    ratings : np.ndarray
        (n, k) one row per target (image, vertebra), one column per rater (prediction,
        reference); rows with a NaN are left out.

    Returns
    -------
    dict of str to float
        ``icc2_1``, ``icc3_1``; NaN with fewer than 3 complete rows.

    Raises
    ------
    ImportError
        pingouin is not installed.
    """
    try:
        import pandas as pd
        import pingouin
    except ImportError as exc:
        raise ImportError(_ICC_HINT) from exc
    r = np.asarray(ratings, dtype=np.float64)
    r = r[np.isfinite(r).all(axis=1)]
    if len(r) < 3 or np.ptp(r) == 0:
        return {"icc2_1": math.nan, "icc3_1": math.nan}
    n, k = r.shape
    long = pd.DataFrame({"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n),
                         "rating": r.reshape(-1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecations inside pingouin
        table = pingouin.intraclass_corr(long, targets="target", raters="rater",
                                         ratings="rating").set_index("Type")
    # pingouin >= 0.7 names the forms after McGraw & Wong (A: agreement, C: consistency)
    a1 = "ICC(A,1)" if "ICC(A,1)" in table.index else "ICC2"
    c1 = "ICC(C,1)" if "ICC(C,1)" in table.index else "ICC3"
    return {"icc2_1": float(table.loc[a1, "ICC"]), "icc3_1": float(table.loc[c1, "ICC"])}


def continuous_agreement(pred: ArrayLike, truth: ArrayLike) -> dict[str, Any]:
    """Agreement of paired values (degrees or mm); pairs with a NaN are left out.

    Returns
    -------
    dict
        ``n``; ``mae``, ``median_ae``, ``bias`` (mean of pred - truth), ``loa_low``,
        ``loa_high`` (bias -/+ 1.96 SD, ddof 1), ``pearson_r``, ``icc2_1``, ``icc3_1`` (NaN
        where undefined), and ``icc_note`` when pingouin is missing.
    """
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    keep = np.isfinite(p) & np.isfinite(t)
    p, t = p[keep], t[keep]
    d = p - t
    n = len(d)
    out: dict[str, Any] = {"n": n, "mae": math.nan, "median_ae": math.nan, "bias": math.nan,
                           "loa_low": math.nan, "loa_high": math.nan, "pearson_r": math.nan,
                           "icc2_1": math.nan, "icc3_1": math.nan}
    if n == 0:
        return out
    out.update(mae=float(np.abs(d).mean()), median_ae=float(np.median(np.abs(d))),
               bias=float(d.mean()))
    if n >= 2:
        sd = float(d.std(ddof=1))
        out.update(loa_low=out["bias"] - 1.96 * sd, loa_high=out["bias"] + 1.96 * sd)
    if n >= 3 and np.ptp(p) > 0 and np.ptp(t) > 0:
        out["pearson_r"] = float(stats.pearsonr(p, t).statistic)
    try:
        out.update(icc(np.stack([p, t], axis=1)))
    except ImportError as exc:
        out["icc_note"] = str(exc)
    return out


def _rates(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = float((pred & truth).sum())
    tn = float((~pred & ~truth).sum())
    pos, neg = float(truth.sum()), float((~truth).sum())
    return {"accuracy": (tp + tn) / len(truth) if len(truth) else math.nan,
            "sensitivity": tp / pos if pos else math.nan,
            "specificity": tn / neg if neg else math.nan}


def _auc(score: np.ndarray, truth: np.ndarray) -> float:
    pos, neg = score[truth], score[~truth]
    if not len(pos) or not len(neg):
        return math.nan
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def _bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_resamples: int,
                  seed: int) -> tuple[float, float]:
    """Percentile 95 % CI of ``statistic(indices)`` over case resamples.

    Resamples where the statistic is undefined (no positive case drawn, for a sensitivity) are
    left out of the percentiles; NaN when fewer than half of them are defined.
    """
    if n < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples are expected, and handled here
        res = stats.bootstrap((np.arange(n),), statistic, vectorized=False, paired=True,
                              n_resamples=n_resamples, method="percentile",
                              rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, np.float64)
    dist = dist[np.isfinite(dist)]
    if len(dist) < n_resamples / 2:
        return math.nan, math.nan
    lo, hi = np.percentile(dist, [2.5, 97.5])
    return float(lo), float(hi)


def binary_agreement(pred: ArrayLike, truth: ArrayLike, score: ArrayLike | None = None, *,
                     n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity (and AUC of ``score``) with bootstrap 95 % CIs.

    Parameters
    ----------
    pred, truth : array of bool
        (n,) the reading to judge and the reference.
    score : array of float, optional
        (n,) higher means more likely positive (e.g. the height loss); NaN scores are left
        out of the AUC.
    n_resamples, seed
        Bootstrap resamples of the n cases, and the generator's seed.

    Returns
    -------
    dict
        ``n``, ``positives``; ``accuracy``, ``sensitivity``, ``specificity``, ``auc`` and
        ``<name>_ci`` = [low, high] for each (NaN where a class is absent).
    """
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    out: dict[str, Any] = {"n": len(t), "positives": int(t.sum()), **_rates(p, t)}
    for name in ("accuracy", "sensitivity", "specificity"):
        def stat(idx: np.ndarray, name: str = name) -> float:
            return _rates(p[idx], t[idx])[name]
        out[f"{name}_ci"] = list(_bootstrap_ci(stat, len(t), n_resamples, seed))
    out["auc"], out["auc_ci"] = math.nan, [math.nan, math.nan]
    if score is not None:
        s = np.asarray(score, np.float64)
        ok = np.isfinite(s)
        s_ok, t_ok = s[ok], t[ok]
        out["auc"] = _auc(s_ok, t_ok)
        out["auc_ci"] = list(_bootstrap_ci(lambda idx: _auc(s_ok[idx], t_ok[idx]), len(s_ok),
                                           n_resamples, seed))
    return out


def fracture_agreement(pred_grade: ArrayLike, truth_grade: ArrayLike, pred_loss: ArrayLike,
                       level_names: Sequence[str], *,
                       min_grade: int = 1, n_resamples: int = 1000, seed: int = 0
                       ) -> dict[str, Any]:
    """Fracture detection per vertebra and per patient from Genant grades.

    Parameters
    ----------
    pred_grade, truth_grade : np.ndarray
        (B, V) Genant grades 0-3, NaN where not measurable (such vertebrae are left out of the
        per-vertebra figures and count as not fractured per patient).
    pred_loss : np.ndarray
        (B, V) predicted height loss (fraction), the score for the AUC.
    level_names : sequence of str
        The V levels.
    min_grade : int
        A vertebra is fractured from this grade on (1: any fracture, 2: moderate or worse).

    Returns
    -------
    dict
        ``per_vertebra`` and ``per_patient``: :func:`binary_agreement` figures;
        ``right_levels``: among patients with a reference fracture predicted as fractured, the
        share whose predicted fractured levels are exactly the reference ones (``n`` beside).
    """
    pg, tg = np.asarray(pred_grade, np.float64), np.asarray(truth_grade, np.float64)
    loss = np.asarray(pred_loss, np.float64)
    both = np.isfinite(pg) & np.isfinite(tg)
    p_frac, t_frac = np.nan_to_num(pg) >= min_grade, np.nan_to_num(tg) >= min_grade
    per_vertebra = binary_agreement(p_frac[both], t_frac[both], loss[both],
                                    n_resamples=n_resamples, seed=seed)
    p_pat, t_pat = np.any(p_frac, axis=1), np.any(t_frac, axis=1)
    per_patient = binary_agreement(p_pat, t_pat, np.nanmax(np.where(np.isfinite(loss), loss,
                                                                    -np.inf), axis=1),
                                   n_resamples=n_resamples, seed=seed)
    return {"min_grade": min_grade, "levels": list(level_names), "per_vertebra": per_vertebra,
            "per_patient": per_patient, "right_levels": _right_levels(p_frac, t_frac)}


def _right_levels(p_frac: np.ndarray, t_frac: np.ndarray) -> dict[str, Any]:
    """Among patients fractured in both (B, V) readings, ``n`` and the ``share`` whose
    fractured levels are exactly the reference ones (NaN when there is none)."""
    found = np.any(p_frac, axis=1) & np.any(t_frac, axis=1)
    exact = (p_frac == t_frac).all(axis=1) & found
    return {"n": int(found.sum()),
            "share": float(exact.sum() / found.sum()) if found.any() else math.nan}


def fracture_operating_points(pred_loss: ArrayLike, truth_grade: ArrayLike,
                              thresholds: Sequence[float], *, min_grade: int = 2
                              ) -> list[dict[str, float]]:
    """How a height-loss line would read the fractures, for each of several lines.

    A body counts as fractured when its predicted loss reaches the line; the figures are
    those of :func:`fracture_agreement` (same rules for unmeasurable bodies), without the
    confidence intervals, so a study can choose its operating point on its own validation
    images (the sensitivity per vertebra and the accuracy per patient pull the line in
    opposite directions when the loss is measured with some error).

    Parameters
    ----------
    pred_loss : np.ndarray
        (B, V) predicted height loss (fraction), NaN where not measurable.
    truth_grade : np.ndarray
        (B, V) reference Genant grades 0-3, NaN where not measurable.
    thresholds : sequence of float
        The lines (fraction of height lost).
    min_grade : int
        Reference fracture from this grade on.

    Returns
    -------
    list of dict
        One per line: ``threshold``; per vertebra ``sensitivity``, ``specificity``; per
        patient ``patient_accuracy``, ``patient_sensitivity``, ``patient_specificity``;
        ``right_levels`` (share of the patients found whose flagged levels are exactly the
        reference ones).
    """
    loss, tg = np.asarray(pred_loss, np.float64), np.asarray(truth_grade, np.float64)
    both = np.isfinite(loss) & np.isfinite(tg)
    t_frac = np.nan_to_num(tg) >= min_grade
    t_pat = np.any(t_frac, axis=1)
    rows = []
    for line in thresholds:  # a handful of lines; each one vectorized over the bodies
        p_frac = np.nan_to_num(loss, nan=-np.inf) >= line
        vert, pat = _rates(p_frac[both], t_frac[both]), _rates(np.any(p_frac, axis=1), t_pat)
        rows.append({"threshold": float(line), "sensitivity": vert["sensitivity"],
                     "specificity": vert["specificity"], "patient_accuracy": pat["accuracy"],
                     "patient_sensitivity": pat["sensitivity"],
                     "patient_specificity": pat["specificity"],
                     "right_levels": _right_levels(p_frac, t_frac)["share"]})
    return rows
