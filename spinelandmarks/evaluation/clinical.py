"""Clinical measurements of predictions against the reference, as a study reports them.

From the predicted and reference points of every image (:mod:`spinelandmarks.anatomy.measurements`):
spinopelvic angles (PI, PT, SS, LL, PI-LL; schemas with femoral heads), vertebral heights and
disc heights (mm where the pixel spacing is known), slip percentages, each with
:func:`~spinelandmarks.evaluation.agreement.continuous_agreement`; and compression fractures from the
Genant grades of both, per vertebra and per patient, with
:func:`~spinelandmarks.evaluation.agreement.fracture_agreement` (any grade, and grade 2 or worse). The
published figures of :data:`CLINICAL_REFERENCE` stand beside them in the report
(:func:`spinelandmarks.evaluation.report.clinical_markdown`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..anatomy.angles import schema_parameters
from ..anatomy.measurements import GENANT_LOSS, clinical_columns, genant_grades, morphometry
from ..schema import FEMORAL_HEADS, LandmarkSchema
from .agreement import continuous_agreement, fracture_agreement, fracture_operating_points

__all__ = ["CLINICAL_REFERENCE", "FRACTURE_LINES", "evaluate_clinical"]

#: Published figures on real radiographs, for the report.
CLINICAL_REFERENCE: dict[str, Any] = {
    "spinopelvic_mae_deg": {  # meta-analysis of 15 deep-learning studies (pooled MAE)
        "lumbar_lordosis": 3.6, "pelvic_tilt": 1.9, "pelvic_incidence": 4.1},
    "fracture": {  # multitask U-Net on lateral lumbar radiographs, 198 test radiographs
        "per_patient": {"accuracy": 0.929, "sensitivity": 0.944, "specificity": 0.917},
        "per_vertebra": {"accuracy": 0.947, "sensitivity": 0.628, "specificity": 0.977}},
}

#: Height-loss lines the evaluation reads the grade >= 2 fractures at, from the grade-1 to
#: the grade-2 line in steps of 1 % (``fracture_lines``; the screen lies in this range).
FRACTURE_LINES: tuple[float, ...] = tuple(
    round(GENANT_LOSS[0] + 0.01 * i, 2)
    for i in range(round(100 * (GENANT_LOSS[1] - GENANT_LOSS[0])) + 1))

_ANGLES = ("pelvic_incidence", "pelvic_tilt", "sacral_slope", "lumbar_lordosis",
           "pi_ll_mismatch")


def _angles(points: Tensor, cols: Mapping[str, Tensor], schema: LandmarkSchema
            ) -> dict[str, Tensor]:
    """SS and L1-S1 lordosis from the points, PI / PT / PI-LL from their clinical ``cols``;
    only those the schema defines."""
    lumbar = schema_parameters(points, schema)
    out = {new: lumbar[old] for old, new in (("sacral_slope", "sacral_slope"),
                                             ("l1_s1_lordosis", "lumbar_lordosis"))
           if old in lumbar}
    if FEMORAL_HEADS.name in schema.level_names:
        out.update({k: cols[f"{k}_deg"] for k in ("pelvic_incidence", "pelvic_tilt",
                                                   "pi_ll_mismatch")})
    for k in ("thoracic_kyphosis_t4_t12", "t1_pelvic_angle"):  # whole-spine schemas
        if f"{k}_deg" in cols:
            out[k] = cols[f"{k}_deg"]
    return out


def _lengths(cols: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-level heights pooled over levels (B * V,) and slip percentages over segments."""
    groups: dict[str, list[Tensor]] = {k: [cols[k]] for k in ("sva_mm", "sva_px")
                                       if k in cols}  # whole-spine schemas
    for name, v in cols.items():
        for suffix in ("_ha", "_hm", "_hp", "_disc_anterior", "_disc_posterior", "_slip_pct"):
            if name.endswith(suffix):
                groups.setdefault(suffix.lstrip("_"), []).append(v)
    return {k: torch.cat(v) for k, v in groups.items()}


def evaluate_clinical(pred: Tensor, gt: Tensor, spacing: Tensor, schema: LandmarkSchema, *,
                      suspected: np.ndarray | None = None, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Clinical agreement of predicted with reference points.

    Parameters
    ----------
    pred, gt : Tensor
        (B, P, 2) image pixels of the same images, NaN where absent.
    spacing : Tensor
        (B, 2) ``(row_mm, col_mm)``, NaN where unknown (those lengths stay in pixels).
    schema : LandmarkSchema
    suspected : np.ndarray, optional
        (B, V) bool, the body levels (``schema.body_levels``) the pipeline listed as
        suspected fractures (``SpineResult.suspected_fractures``).
    n_resamples, seed
        Bootstrap settings of the fracture confidence intervals.

    Returns
    -------
    dict
        ``angles``: per angle :func:`~spinelandmarks.evaluation.agreement.continuous_agreement` (degrees);
        ``lengths``: the same for ``ha``, ``hm``, ``hp``, ``disc_anterior``,
        ``disc_posterior`` (pooled over levels; mm or pixels) and ``slip_pct`` (pooled over
        segments); ``fractures`` and ``fractures_grade2``:
        :func:`~spinelandmarks.evaluation.agreement.fracture_agreement`; with ``suspected``,
        ``fracture_screen``: the same figures for the suspected fractures against reference
        grade >= 2 (bodies the prediction cannot measure left out, as for the grades);
        ``fracture_lines``: :func:`~spinelandmarks.evaluation.agreement.fracture_operating_points`
        against grade >= 2 at each of :data:`FRACTURE_LINES` (the fracture figures for
        schemas with vertebral bodies only); ``length_unit``.
    """
    pc, gc = clinical_columns(pred, schema, spacing), clinical_columns(gt, schema, spacing)
    pa, ga = _angles(pred, pc, schema), _angles(gt, gc, schema)
    pl, gl = _lengths(pc), _lengths(gc)
    known = torch.isfinite(spacing).all(-1)
    out: dict[str, Any] = {
        "angles": {k: continuous_agreement(pa[k].numpy(), ga[k].numpy()) for k in pa},
        "lengths": {k: continuous_agreement(pl[k].numpy(), gl[k].numpy()) for k in pl},
        "length_unit": "mm" if bool(known.all()) else "px" if not bool(known.any())
        else "mm where the spacing is known, else px",
    }
    levels = list(schema.body_levels)
    if not levels:  # no vertebral body: no height, no fracture grade
        return out
    grades_p = genant_grades(morphometry(pred, schema, spacing=None))
    grades_g = genant_grades(morphometry(gt, schema, spacing=None))

    def graded(g: Mapping[str, Tensor]) -> np.ndarray:
        return torch.where(torch.isfinite(g["height_loss"]), g["grade"].to(torch.float64),
                           torch.full_like(g["height_loss"], math.nan)).numpy()

    loss_p = grades_p["height_loss"].numpy()
    pred_grade, truth_grade = graded(grades_p), graded(grades_g)
    for key, min_grade in (("fractures", 1), ("fractures_grade2", 2)):
        out[key] = fracture_agreement(pred_grade, truth_grade, loss_p, levels,
                                      min_grade=min_grade, n_resamples=n_resamples, seed=seed)
    out["fracture_lines"] = fracture_operating_points(loss_p, truth_grade, FRACTURE_LINES,
                                                      min_grade=2)
    if suspected is not None:
        flagged = np.where(np.isfinite(loss_p), np.where(suspected, 2.0, 0.0), np.nan)
        out["fracture_screen"] = fracture_agreement(flagged, truth_grade, loss_p, levels,
                                                    min_grade=2, n_resamples=n_resamples,
                                                    seed=seed)
    return out
