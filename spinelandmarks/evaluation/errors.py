"""Predictions against ground truth: localization, angle and identification errors with
their tails, side by side for step 2 and step 1, and the figures of the reference study
(Cina et al. 2021), with the metric classes of :mod:`spinelandmarks.metrics` (conventions
section 5).

Records are matched by ``file_name``. A ground-truth image without a prediction is *missed*
(all its points count as not found), never dropped; predictions without ground truth are
ignored and counted (with a warning).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._types import StrPath
from ..anatomy.angles import (
    LUMBAR_PARAMETERS,
    defined_parameters,
    schema_parameters,
    segmental_angle_names,
    segmental_angles,
)
from ..data.annotations import ImageRecord
from ..measurement_table import record_points
from ..metrics import (
    AngleError,
    EuclideanError,
    LevelIdentification,
    NormalizedLocalizationError,
    RadialError,
    SuccessDetectionRate,
    level_identification,
)
from ..schema import LandmarkSchema
from .clinical import evaluate_clinical
from .masks import evaluate_masks

__all__ = ["REFERENCE", "SDR_THRESHOLDS_MM", "coverage", "coverage_line", "evaluate",
           "match_to_ground_truth", "metrics_to_json", "pair_records", "tail_figures"]

#: Radii of the success detection rate, millimetres.
SDR_THRESHOLDS_MM: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)

#: Test-set figures of the reference study (medians; NLE in percent, angles in degrees).
REFERENCE: dict[str, Any] = {
    "study": "Cina et al. 2021",
    "study_test_images": 195,
    "median_nle_x_pct": 1.98,
    "median_nle_y_pct": 1.68,
    "l1_l5_lordosis_median_abs_deg": 1.84,
    "l1_s1_lordosis_median_abs_deg": 2.43,
    "sacral_slope_median_abs_deg": 1.98,
}

# (key in the comparison, label, how to read it from a step block, key in REFERENCE)
_HEADLINE: tuple[tuple[str, str, tuple[str, str], str], ...] = (
    ("median_nle_x_pct", "Median normalized error x (%)", ("localization", "median_x"),
     "median_nle_x_pct"),
    ("median_nle_y_pct", "Median normalized error y (%)", ("localization", "median_y"),
     "median_nle_y_pct"),
    ("l1_l5_lordosis_median_abs_deg", "L1-L5 lordosis median abs. error (deg)",
     ("l1_l5_lordosis", "median_abs"), "l1_l5_lordosis_median_abs_deg"),
    ("l1_s1_lordosis_median_abs_deg", "L1-S1 lordosis median abs. error (deg)",
     ("l1_s1_lordosis", "median_abs"), "l1_s1_lordosis_median_abs_deg"),
    ("sacral_slope_median_abs_deg", "Sacral slope median abs. error (deg)",
     ("sacral_slope", "median_abs"), "sacral_slope_median_abs_deg"),
)

#: Figures that show gross failures, next to the medians: (key, label, path in a step block).
_TAILS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("levels_identified_images", "Images with every level identified (%)",
     ("identification", "image_rate")),
    ("levels_identified", "Levels identified (%)", ("identification", "rate")),
    ("mean_nle_x_pct", "Mean normalized error x (%)", ("localization", "mean_x")),
    ("mean_nle_y_pct", "Mean normalized error y (%)", ("localization", "mean_y")),
    ("p95_nle_x_pct", "95th pct. normalized error x (%)", ("localization", "p95_x")),
    ("p95_nle_y_pct", "95th pct. normalized error y (%)", ("localization", "p95_y")),
    ("outliers_10pct", "Points > 10 % of body size off (%)", ("localization", "outlier_rate")),
    ("p95_mm", "95th pct. point error (mm)", ("euclidean", "p95_mm")),
    ("outliers_5mm", "Points > 5 mm off (%)", ("euclidean", "outlier_rate_mm")),
    ("l1_l5_lordosis_mean_abs_deg", "L1-L5 lordosis mean abs. error (deg)",
     ("angles", "l1_l5_lordosis", "mean_abs")),
    ("l1_s1_lordosis_mean_abs_deg", "L1-S1 lordosis mean abs. error (deg)",
     ("angles", "l1_s1_lordosis", "mean_abs")),
    ("sacral_slope_mean_abs_deg", "Sacral slope mean abs. error (deg)",
     ("angles", "sacral_slope", "mean_abs")),
    ("l1_l5_lordosis_pearson_r", "L1-L5 lordosis Pearson r", ("angles", "l1_l5_lordosis",
                                                              "pearson_r")),
    ("l1_s1_lordosis_pearson_r", "L1-S1 lordosis Pearson r", ("angles", "l1_s1_lordosis",
                                                              "pearson_r")),
    ("sacral_slope_pearson_r", "Sacral slope Pearson r", ("angles", "sacral_slope", "pearson_r")),
)
#: Tail figures that are fractions, shown in percent.
_TAIL_FRACTIONS = frozenset({"levels_identified_images", "levels_identified", "outliers_10pct",
                             "outliers_5mm"})

_DT = torch.float64


def _nanless(obj: Any) -> Any:
    """A copy with NaN / inf floats as None and tuples as lists (JSON-ready)."""
    if isinstance(obj, Mapping):
        return {str(k): _nanless(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nanless(v) for v in obj]
    if isinstance(obj, Tensor):
        return _nanless(obj.tolist())
    if isinstance(obj, np.generic):
        return _nanless(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def metrics_to_json(metrics: Mapping[str, Any]) -> str:
    """Strict JSON text of an :func:`evaluate` result (NaN written as ``null``)."""
    return json.dumps(_nanless(metrics), indent=2, allow_nan=False) + "\n"




# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class _Paired:
    """Ground truth and the matching predictions of one step, as tensors."""

    file_names: list[str]
    gt: Tensor  # (B, P, 2) NaN where not labelled
    visibility: Tensor  # (B, P) long
    pred: Tensor  # (B, P, 2) NaN where not found (whole rows for missing images)
    spacing: Tensor  # (B, 2) NaN where unknown
    missing: list[str]  # GT images without a prediction
    unmatched: list[str]  # predictions without GT
    duplicates: int  # predictions whose file_name was already seen (ignored)
    matched: list[ImageRecord | None]  # the prediction of each ground-truth image, or None


def match_to_ground_truth(pred_records: Sequence[ImageRecord],
                          gt_records: Sequence[ImageRecord], root: StrPath
                          ) -> tuple[list[ImageRecord], list[str]]:
    """Name predictions as the ground truth names the same images.

    ``predict`` names files by the path it was given (``/data/x/images/a.png``,
    ``../x/images/a.png``); an annotation file names them relative to its dataset root
    (``images/a.png``). A prediction matches a ground-truth record by (1) the same name, (2)
    its path relative to ``root`` (absolute, or relative to the working directory), (3) its
    file name alone, when exactly one ground-truth record has that file name.

    Parameters
    ----------
    pred_records, gt_records : sequence of ImageRecord
    root : str or PathLike
        The ground truth's dataset root (the folder of its ``annotations.json``).

    Returns
    -------
    matched : list of ImageRecord
        Copies of the matched predictions, named as in the ground truth.
    unmatched : list of str
        Names of the predictions that match no ground-truth record.
    """
    gt_names = {r.file_name for r in gt_records}
    by_base: dict[str, list[str]] = {}
    for name in gt_names:
        by_base.setdefault(PurePath(name).name, []).append(name)
    base = Path(root).resolve()
    matched: list[ImageRecord] = []
    unmatched: list[str] = []
    for rec in pred_records:
        found = _matching_name(rec.file_name, gt_names, by_base, base)
        if found is None:
            unmatched.append(rec.file_name)
        else:
            matched.append(dataclasses.replace(rec, file_name=found))
    return matched, unmatched


def _matching_name(name: str, gt_names: set[str], by_base: Mapping[str, list[str]],
                   root: Path) -> str | None:
    if name in gt_names:
        return name
    try:
        rel: str | None = Path(name).resolve().relative_to(root).as_posix()
    except ValueError:
        rel = None
    if rel is not None and rel in gt_names:
        return rel
    candidates = by_base.get(PurePath(name).name, [])
    return candidates[0] if len(candidates) == 1 else None


def pair_records(pred_records: Sequence[ImageRecord], gt_records: Sequence[ImageRecord],
                 schema: LandmarkSchema, what: str = "prediction") -> _Paired:
    gts = list(gt_records)
    by_name: dict[str, ImageRecord] = {}
    duplicates = 0
    for rec in pred_records:
        if rec.file_name in by_name:
            duplicates += 1
            continue
        by_name[rec.file_name] = rec
    gt_names = {r.file_name for r in gts}
    if len(gt_names) != len(gts):
        raise ValueError("ground truth lists a file_name more than once")
    unmatched = [n for n in by_name if n not in gt_names]
    if unmatched:
        warnings.warn(f"{len(unmatched)} {what}(s) without ground truth ignored "
                      f"(e.g. {unmatched[0]!r})", stacklevel=3)
    if duplicates:
        warnings.warn(f"{duplicates} duplicate {what}(s) of an image ignored (first one kept)",
                      stacklevel=3)
    preds = [by_name.get(r.file_name) for r in gts]
    gt = record_points(gts, schema)
    vis = torch.zeros((len(gts), schema.num_points), dtype=torch.long)
    spacing = torch.full((len(gts), 2), math.nan, dtype=_DT)
    for i, r in enumerate(gts):
        vis[i] = torch.as_tensor(np.asarray(r.visibility, dtype=np.int64))
        if r.pixel_spacing is not None:
            spacing[i] = torch.tensor([float(r.pixel_spacing[0]), float(r.pixel_spacing[1])],
                                      dtype=_DT)
    return _Paired([r.file_name for r in gts], gt, vis, record_points(preds, schema), spacing,
                   [r.file_name for r, p in zip(gts, preds, strict=True) if p is None],
                   unmatched, duplicates, preds)


def _suspected(preds: Sequence[ImageRecord | None], schema: LandmarkSchema
               ) -> np.ndarray | None:
    """(B, V) bool: the body levels each prediction lists in ``meta["suspected_fractures"]``;
    None when no prediction carries the list (not the pipeline's output)."""
    if not any(p is not None and "suspected_fractures" in p.meta for p in preds):
        return None
    listed = [set(p.meta.get("suspected_fractures", ())) if p is not None else set()
              for p in preds]
    return np.array([[lv in s for lv in schema.body_levels] for s in listed],
                    dtype=bool).reshape(len(preds), len(schema.body_levels))


def _floats(d: Mapping[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


def _angle_block(pred: Mapping[str, Tensor], gt: Mapping[str, Tensor],
                 names: Sequence[str]) -> dict[str, dict[str, float]]:
    if not names:
        return {}
    metric = AngleError(names)
    metric.set_dtype(_DT)
    metric.update(pred, gt)
    flat = _floats(metric.compute())
    return {n: {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{n}/")}
            for n in names}


def _radial_block(p: _Paired, schema: LandmarkSchema) -> dict[str, Any]:
    """:class:`~spinelandmarks.metrics.RadialError` figures: overall, ``unit`` ("mm" or
    "px") and ``per_point`` (point name -> figures)."""
    radial = RadialError(schema, SDR_THRESHOLDS_MM)
    radial.set_dtype(_DT)
    radial.update(p.pred, p.gt, p.spacing, p.visibility)
    flat = _floats(radial.compute())
    out: dict[str, Any] = {k: v for k, v in flat.items() if "/" not in k}
    out["unit"] = "mm" if out.pop("unit_mm") == 1.0 else "px"
    per_point: dict[str, dict[str, float]] = {}
    for key, v in flat.items():
        if "/" in key:
            name, figure = key.split("/", 1)
            per_point.setdefault(name, {})[figure] = v
    out["per_point"] = per_point
    return out


def _identification(p: _Paired, schema: LandmarkSchema) -> dict[str, Any]:
    """Level identification figures and the images with a level on the wrong vertebra."""
    lid = LevelIdentification(schema)
    lid.set_dtype(_DT)
    lid.update(p.pred, p.gt, p.visibility)
    flat = _floats(lid.compute())
    status = level_identification(p.pred, p.gt, schema, p.visibility)  # (B, L)
    wrong = {name: [lv for lv, v in zip(schema.level_names, row.tolist(), strict=True) if v == 0]
             for name, row in zip(p.file_names, status, strict=True)}
    out: dict[str, Any] = {k: v for k, v in flat.items() if "/" not in k}
    out["per_level"] = {k.split("/", 1)[0]: v for k, v in flat.items() if "/" in k}
    out["wrong_levels"] = {name: lv for name, lv in wrong.items() if lv}
    return out


def _step_metrics(p: _Paired, schema: LandmarkSchema) -> dict[str, Any]:
    """Every figure of one step (see :func:`evaluate`)."""
    nle = NormalizedLocalizationError(schema)
    euc = EuclideanError()
    sdr = SuccessDetectionRate(SDR_THRESHOLDS_MM)
    for m in (nle, euc, sdr):
        m.set_dtype(_DT)
    nle.update(p.pred, p.gt, p.visibility)
    euc.update(p.pred, p.gt, p.spacing, p.visibility)
    sdr.update(p.pred, p.gt, p.spacing, p.visibility)
    loc = _floats(nle.compute())

    labelled = (p.visibility > 0) & torch.isfinite(p.gt).all(dim=-1)  # (B, P)
    found = torch.isfinite(p.pred).all(dim=-1) & labelled
    per_level: dict[str, dict[str, float]] = {}
    tot_lab = tot_missed = 0
    for lv in schema.level_names:
        idx = schema.level_indices(lv)
        lab = labelled[:, idx].any(dim=1)
        missed = lab & ~found[:, idx].any(dim=1)
        n_lab, n_missed = int(lab.sum()), int(missed.sum())
        tot_lab += n_lab
        tot_missed += n_missed
        block = {k.split("/", 1)[1]: v for k, v in loc.items() if k.startswith(f"{lv}/")}
        block["levels_labelled"] = float(n_lab)
        block["levels_missed"] = float(n_missed)
        block["level_detection_rate"] = (n_lab - n_missed) / n_lab if n_lab else math.nan
        per_level[lv] = block
    localization = {k: v for k, v in loc.items() if "/" not in k}
    identification = _identification(p, schema)

    gt_params = schema_parameters(p.gt, schema)
    pred_params = schema_parameters(p.pred, schema)
    seg_names = segmental_angle_names(schema)
    seg_block: dict[str, dict[str, float]] = {}
    if seg_names:
        sg, sp = segmental_angles(p.gt, schema), segmental_angles(p.pred, schema)
        seg_block = _angle_block({n: sp[:, j] for j, n in enumerate(seg_names)},
                                 {n: sg[:, j] for j, n in enumerate(seg_names)}, seg_names)
    return {
        "localization": localization,
        "per_level": per_level,
        "euclidean": _floats(euc.compute()),
        "sdr": _floats(sdr.compute()),
        "detection": {
            "point_detection_rate": localization["detection_rate"],
            "level_detection_rate": ((tot_lab - tot_missed) / tot_lab if tot_lab else math.nan),
            "levels_labelled": float(tot_lab),
            "levels_missed": float(tot_missed),
            "images_without_prediction": len(p.missing),
        },
        "identification": identification,
        "radial": _radial_block(p, schema),
        "angles": _angle_block(pred_params, gt_params, defined_parameters(schema)),
        "segmental_angles": seg_block,
        "missing_images": list(p.missing),
        "n_unmatched_predictions": len(p.unmatched),
        "n_duplicate_predictions": p.duplicates,
    }


def _headline(step: Mapping[str, Any] | None, where: tuple[str, str]) -> float:
    if step is None:
        return math.nan
    a, b = where
    if a == "radial":  # success detection rates in percent, as the other headline rates
        v = float(step["radial"].get(b, math.nan))
        return 100.0 * v if b.startswith("sdr@") else v
    block = step["localization"] if a == "localization" else step["angles"].get(a, {})
    return float(block.get(b, math.nan))


def _headline_rows(schema: LandmarkSchema, unit: str
                   ) -> list[tuple[str, str, tuple[str, str], str]]:
    """The headline figures the schema defines: normalized errors where it has vertebral
    bodies, else the mean radial error and success detection rates (in ``unit``); the
    lumbar angles it defines."""
    angles = defined_parameters(schema)
    rows = [r for r in _HEADLINE if (r[2][0] == "localization" and bool(schema.body_levels))
            or r[2][0] in angles]
    if not schema.body_levels:
        radial = [("mre", f"Mean radial error ({unit})", ("radial", "mre"), "")]
        radial += [(f"sdr_{t}", f"Points within {t} {unit} (%)", ("radial", f"sdr@{t}"), "")
                   for t in SDR_THRESHOLDS_MM]
        rows = radial + rows
    return rows


def _tail_defined(key: str, schema: LandmarkSchema) -> bool:
    """Whether tail figure ``key`` is defined for ``schema`` (normalized errors and level
    identification need body heights, angle figures their endplates)."""
    if "nle" in key or key == "outliers_10pct" or key.startswith("levels_identified"):
        return bool(schema.body_levels)
    angle = next((a for a in LUMBAR_PARAMETERS if key.startswith(a)), None)
    return angle is None or angle in defined_parameters(schema)


def _tail_value(step: Mapping[str, Any] | None, path: tuple[str, ...], key: str) -> float:
    node: Any = step
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return math.nan
        node = node[part]
    v = float(node)
    return 100.0 * v if key in _TAIL_FRACTIONS and math.isfinite(v) else v


def tail_figures(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The figures that show gross failures, for step 2 and step 1, from :func:`evaluate`.

    Returns
    -------
    dict
        ``key -> {"label", "ours_step2", "ours_step1"}``: level identification (share of
        images with every level on the right vertebra, share of levels), mean and 95th
        percentile normalized errors, outlier rates, the 95th-percentile point error in mm,
        mean absolute angle errors and Pearson r. Fractions are in percent.
    """
    return {key: {"label": label, "ours_step2": _tail_value(metrics.get("step2"), path, key),
                  "ours_step1": _tail_value(metrics.get("step1"), path, key)}
            for key, label, path in _TAILS}


def evaluate(pred_records: Sequence[ImageRecord], gt_records: Sequence[ImageRecord],
             schema: LandmarkSchema, *,
             step1_records: Sequence[ImageRecord] | None = None) -> dict[str, Any]:
    """Evaluate predictions against ground truth (conventions section 5).

    Parameters
    ----------
    pred_records : sequence of ImageRecord
        Predictions (step 2 of the pipeline, or any predictions); points with visibility 0 or
        NaN coordinates are *not found*.
    gt_records : sequence of ImageRecord
        Ground truth; points with visibility 0 are not labelled and take no part. ``file_name``
        must be unique. ``pixel_spacing`` gives the millimetre figures.
    schema : LandmarkSchema
    step1_records : sequence of ImageRecord, optional
        Step-1 predictions, evaluated the same way and reported side by side.

    Returns
    -------
    dict
        JSON-ready apart from NaN floats (see :func:`metrics_to_json`)::

            {"schema": name, "n_images": GT images, "n_predicted": GT images with a prediction,
             "n_unmatched_predictions": ..., "missing_images": [file names],
             "step2": STEP, "step1": STEP or None,
             "comparison": {figure: {"label", "ours_step2", "ours_step1", "reference",
                                     "better_than_reference"}},
             "tails": tail_figures(...),
             "reference": REFERENCE + {"n_images_evaluated"},
             "clinical": evaluate_clinical(...),
             "masks": evaluate_masks(...)}  # when the ground truth has masks

        where ``STEP`` holds ``localization`` (``median_x``, ``median_y``, ``mean_x``,
        ``mean_y``, ``p95_x``, ``p95_y`` in percent, ``outlier_rate``, ``detection_rate``,
        ``n``, ``n_labelled`` from
        :class:`~spinelandmarks.metrics.NormalizedLocalizationError`), ``per_level`` (the same
        per level plus ``levels_labelled``, ``levels_missed``, ``level_detection_rate``: a
        level labelled in the ground truth none of whose labelled points was predicted is
        missed), ``euclidean`` (px and mm, :class:`~spinelandmarks.metrics.EuclideanError`),
        ``sdr`` (``sdr@2.0mm`` ... ``sdr@4.0mm``, ``n``), ``radial`` (mean radial error
        ``mre``, ``sd``, ``median``, success detection rates ``sdr@2.0`` ... ``sdr@4.0``,
        ``detection_rate``, ``n``, ``n_labelled``, ``unit`` "mm" or "px" and ``per_point``,
        from :class:`~spinelandmarks.metrics.RadialError`), ``detection`` (overall rates and
        counts of levels *reported*, whatever their position), ``identification`` (levels on
        the right vertebra: ``rate``, ``image_rate``, ``extra_levels``, ``n_levels``,
        ``n_images``, ``per_level`` and ``wrong_levels``, file name -> levels not identified,
        from :class:`~spinelandmarks.metrics.LevelIdentification`), ``angles`` and
        ``segmental_angles`` (per parameter ``median_abs``, ``mean_abs``, ``p95_abs``,
        ``max_abs``, ``pearson_r``, ``bias``, ``loa_low``, ``loa_high``, ``n``, ``missed``
        from :class:`~spinelandmarks.metrics.AngleError`; the parameters the schema defines).
        Figures without data are NaN. ``comparison`` and ``tails`` hold only the figures the
        schema defines: the normalized errors for schemas with vertebral bodies, the mean
        radial error and success detection rates (percent) for schemas without, the angles
        whose endplates the schema has.
        ``clinical`` (step 2): spinopelvic angles, heights, disc heights and slips with MAE,
        bias, limits of agreement, Pearson r and ICCs, and fracture detection per vertebra
        and per patient (:func:`~spinelandmarks.evaluation.clinical.evaluate_clinical`).

    Warns
    -----
    UserWarning
        When predictions have no ground truth (ignored) or an image is predicted twice.
    """
    gts = list(gt_records)
    p2 = pair_records(pred_records, gts, schema)
    step2 = _step_metrics(p2, schema)
    step1: dict[str, Any] | None = None
    if step1_records is not None:
        step1 = _step_metrics(pair_records(step1_records, gts, schema, "step-1 prediction"), schema)
    comparison: dict[str, dict[str, Any]] = {}
    for key, label, where, ref_key in _headline_rows(schema, step2["radial"]["unit"]):
        ours = _headline(step2, where)
        ref = float(REFERENCE.get(ref_key, math.nan))
        comparison[key] = {"label": label, "ours_step2": ours,
                           "ours_step1": _headline(step1, where), "reference": ref,
                           "better_than_reference": bool(ours < ref)
                           if math.isfinite(ours) and math.isfinite(ref) else None}
    result: dict[str, Any] = {
        "schema": schema.name,
        "n_images": len(gts),
        "n_predicted": len(gts) - len(p2.missing),
        "n_unmatched_predictions": len(p2.unmatched),
        "missing_images": list(p2.missing),
        "step2": step2,
        "step1": step1,
        "comparison": comparison,
        "tails": {},
        "reference": {**REFERENCE, "n_images_evaluated": len(gts)},
    }
    result["tails"] = {k: v for k, v in tail_figures(result).items()
                       if _tail_defined(k, schema)}
    result["clinical"] = evaluate_clinical(p2.pred, p2.gt, p2.spacing, schema,
                                           suspected=_suspected(p2.matched, schema))
    if any(r.masks for r in gts):
        result["masks"] = evaluate_masks(p2.matched, gts, schema)
    return result


def coverage(gt_records: Sequence[ImageRecord], matched: Sequence[ImageRecord],
             unmatched: Sequence[str]) -> dict[str, Any]:
    """How much of the ground truth an evaluation covers.

    Parameters
    ----------
    gt_records : sequence of ImageRecord
        The ground truth.
    matched : sequence of ImageRecord
        Predictions named as the ground truth names them (:func:`match_to_ground_truth`).
    unmatched : sequence of str
        Names of the predictions that match no ground-truth image.

    Returns
    -------
    dict
        ``{"ground_truth_images", "matched", "without_prediction", "predictions",
        "predictions_unmatched", "complete", "missing": [first 20 file names]}``;
        ``complete`` is True when every ground-truth image has a prediction.
    """
    have = {r.file_name for r in matched}
    missing = [r.file_name for r in gt_records if r.file_name not in have]
    return {"ground_truth_images": len(gt_records), "matched": len(gt_records) - len(missing),
            "without_prediction": len(missing), "predictions": len(matched) + len(unmatched),
            "predictions_unmatched": len(unmatched), "complete": not missing,
            "missing": missing[:20]}


def coverage_line(cov: Mapping[str, Any]) -> str:
    """The coverage as the headline of ``evaluate``: ``coverage: 6 of 24 ground-truth images
    have a prediction; 18 prediction(s) match no ground-truth image``."""
    line = (f"coverage: {cov['matched']} of {cov['ground_truth_images']} ground-truth images "
            "have a prediction")
    if cov["predictions_unmatched"]:
        line += f"; {cov['predictions_unmatched']} prediction(s) match no ground-truth image"
    return line
