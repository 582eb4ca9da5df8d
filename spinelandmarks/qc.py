"""Quality control of predicted spines: plausibility checks that flag images for review.

A landmark model that is wrong is usually wrong grossly: a level drawn on the neighbouring
vertebra, two levels on one body, a corner set collapsed or crossed. Such results break the
anatomy of a spine, so they can be caught without ground truth. :func:`quality_flags` checks,
per level and per image (vectorized over a batch):

========================  =========================================================================
flag (per level)          raised when
========================  =========================================================================
``missing``               the level was not found
``overlap``               the level's body runs into the next one by more than a quarter of a
                          body height (or L5 into the sacral plate)
``order``                 the next level does not lie caudal to this one along its own axis
``spacing``               the distance to a neighbour differs from the spine's typical
                          centre-to-centre distance by more than 40 % (a skipped or doubled level)
``shape``                 the corners do not form a convex quadrilateral in their order, or the
                          body's width / height ratio is outside [0.7, 4.0]
``low_confidence``        a point's heatmap spread exceeds 35 % of the body height, or the
                          detector confirmed the level with a score under its threshold
``detector_disagrees``    the level's centre is more than half a box height from the centre of
                          the detector's box for the same level
``refinement_jump``       step 2 moved the level's centre by more than half a body height from
                          step 1 (the refiner found another structure)
========================  =========================================================================

Per image: ``angle_range`` when a clinical parameter lies outside :data:`PLAUSIBLE_DEG`, and
``steps_disagree`` when a clinical parameter measured from the step-1 points differs from the
step-2 one by more than 5 degrees (two estimates of the same angle that disagree: on in-style
validation images it caught every image with an angle more than 5 degrees off, flagging 2 of
37 good ones).
``needs_review`` is raised by any flag. The thresholds are chosen so that the ground truth of
the phantoms of both styles raises no flag (``tests/test_qc.py``) and are documented in
``docs/conventions.md``; they are arguments of :class:`QCThresholds`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .anatomy.angles import wrap_angle
from .anatomy.vertebrae import level_centres, vertebra_size
from .schema import LandmarkSchema

__all__ = ["CALIBRATED", "CALIBRATED_BELOW", "CALIBRATED_IMAGE", "IMAGE_FLAGS", "LEVEL_FLAGS",
           "PLAUSIBLE_DEG", "QCThresholds", "calibrate_thresholds", "disagreeing_parameters",
           "implausible_angles", "qc_statistics", "quality_flags", "steps_disagreement"]

#: Per-level flags, in report order.
LEVEL_FLAGS: tuple[str, ...] = ("missing", "overlap", "order", "spacing", "shape",
                                "low_confidence", "detector_disagrees", "refinement_jump")
#: Per-image flags.
IMAGE_FLAGS: tuple[str, ...] = ("angle_range", "steps_disagree")

#: Physiological ranges of the clinical parameters of a standing lateral radiograph, degrees
#: (image axes; wide enough for hyperlordosis and for kyphotic degenerate spines).
PLAUSIBLE_DEG: dict[str, tuple[float, float]] = {
    "l1_l5_lordosis": (-30.0, 90.0),
    "l1_s1_lordosis": (-20.0, 100.0),
    "sacral_slope": (-5.0, 80.0),
}


@dataclass(frozen=True)
class QCThresholds:
    """Thresholds of :func:`quality_flags` (fractions of a body height unless named otherwise)."""

    overlap_frac: float = 0.25
    spacing_tolerance: float = 0.4
    aspect_range: tuple[float, float] = (0.7, 4.0)
    max_spread_frac: float = 0.35
    min_detector_score: float = 0.3
    detector_distance_frac: float = 0.5
    refinement_jump_frac: float = 0.5
    steps_disagree_deg: float = 5.0


def _endplate_mids(points: Tensor, schema: LandmarkSchema) -> tuple[Tensor, Tensor]:
    """Superior and inferior endplate mid-points per level (B, L, 2), NaN where absent."""
    b, nl = points.shape[0], schema.num_levels
    sup = points.new_full((b, nl, 2), math.nan)
    inf = points.new_full((b, nl, 2), math.nan)
    for e in schema.endplates():
        mid = 0.5 * (points[:, e.posterior] + points[:, e.anterior])
        target = sup if e.side == "superior" else inf
        target[:, schema.level_index(e.level)] = mid
    return sup, inf


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-9)


def _convex_quads(points: Tensor, schema: LandmarkSchema) -> Tensor:
    """(B, L) True where a body level's 4 corners form a convex quadrilateral in order."""
    table = schema.level_point_table().to(points.device)  # (L, K)
    quad = points[:, table.clamp_min(0)][:, :, :4]  # (B, L, 4, 2)
    edge = quad.roll(-1, dims=2) - quad
    nxt = edge.roll(-1, dims=2)
    cross = edge[..., 0] * nxt[..., 1] - edge[..., 1] * nxt[..., 0]  # (B, L, 4)
    same = (cross > 0).all(dim=-1) | (cross < 0).all(dim=-1)
    body = (table >= 0).sum(dim=1) >= 4
    return same | ~body[None, :]


#: Thresholds of :class:`QCThresholds` that depend on the trained networks (how sure and how
#: consistent their outputs are on good predictions), each with the statistic of
#: :func:`qc_statistics` it bounds from above. :func:`calibrate_thresholds` fits them.
CALIBRATED: dict[str, str] = {"max_spread_frac": "spread_frac",
                              "detector_distance_frac": "detector_distance_frac",
                              "refinement_jump_frac": "refinement_jump_frac"}
#: The same for thresholds that bound a statistic from below.
CALIBRATED_BELOW: dict[str, str] = {"min_detector_score": "detector_score"}
#: The same for a per-image statistic (:func:`steps_disagreement`), fitted on the images
#: whose levels are all right: a step 1 that is coarse on a long chain (18 levels on a
#: full-length film) disagrees with step 2 by more than on five lumbar levels.
CALIBRATED_IMAGE: dict[str, str] = {"steps_disagree_deg": "steps_disagree_deg"}


def qc_statistics(points: Tensor, points_step1: Tensor, point_scores: Tensor,
                  schema: LandmarkSchema, boxes: Tensor | None = None,
                  level_scores: Tensor | None = None) -> dict[str, Tensor]:
    """Per-level statistics behind the model-dependent flags, in body heights.

    Parameters
    ----------
    points, points_step1 : Tensor, shape (B, P, 2)
        Step-2 and step-1 points, image pixels; NaN for levels not found.
    point_scores : Tensor, shape (B, P)
        ``1 / (1 + spread)``, spread in image pixels.
    schema : LandmarkSchema
    boxes : Tensor, shape (B, L, 4), optional
        Detector boxes ``(x1, y1, x2, y2)``, NaN where none.
    level_scores : Tensor, shape (B, L), optional
        Detector scores, NaN where none.

    Returns
    -------
    dict of str to Tensor
        ``spread_frac`` (largest heatmap spread of the level's points over its body height),
        ``detector_distance_frac`` (distance from the level's centre to the centre of its
        detector box, over the box height), ``refinement_jump_frac`` (distance step 2 moved
        the level's centre, over the body height) and ``detector_score`` (the detector's
        score of found levels), each (B, L) float64, NaN where undefined.
    """
    pts = points.double()
    _, height = vertebra_size(pts, schema)
    centres = level_centres(pts, schema)
    found = torch.isfinite(centres).all(-1)
    spread = 1.0 / point_scores.double().clamp_min(1e-9) - 1.0  # scores are 1 / (1 + spread)
    rel = torch.nan_to_num(spread / height[:, schema.point_level.to(pts.device)], nan=0.0)
    table = schema.level_point_table().to(pts.device)  # (L, K), -1 padding
    per_level = rel[:, table.clamp_min(0)].masked_fill(~(table >= 0)[None], 0.0).amax(dim=-1)
    nan = torch.full_like(per_level, math.nan)
    out = {"spread_frac": torch.where(found, per_level, nan), "detector_distance_frac": nan}
    if boxes is not None:
        b = boxes.to(pts)
        dist = torch.linalg.vector_norm(centres - 0.5 * (b[..., :2] + b[..., 2:]), dim=-1)
        out["detector_distance_frac"] = dist / (b[..., 3] - b[..., 1])
    jump = torch.linalg.vector_norm(centres - level_centres(points_step1.to(pts), schema), dim=-1)
    out["refinement_jump_frac"] = jump / height
    out["detector_score"] = nan if level_scores is None else torch.where(
        found, level_scores.to(pts), nan)
    return out


def calibrate_thresholds(statistics: Mapping[str, Tensor], good: Tensor, *,
                         good_images: Tensor | None = None, quantile: float = 0.99, margin: float = 1.25,
                         base: QCThresholds | None = None, min_samples: int = 20
                         ) -> QCThresholds:
    """Fit the model-dependent thresholds (:data:`CALIBRATED`) to a trained pipeline.

    Each upper bound becomes ``margin`` times the ``quantile`` of its statistic over levels
    known to be right (on validation images with ground truth), each lower bound
    (:data:`CALIBRATED_BELOW`) the ``1 - quantile`` quantile divided by ``margin``; neither is
    ever tighter than ``base``. A model whose outputs are less peaked (or whose detector is less
    sure) than the one the defaults were set on then does not flag most of its good
    predictions, while the anatomical checks stay as documented.

    Parameters
    ----------
    statistics : dict of str to Tensor
        :func:`qc_statistics` of the validation predictions, each (B, L), and optionally the
        per-image statistics of :data:`CALIBRATED_IMAGE`, each (B,) (fitted on the images
        whose labelled levels are all good).
    good : Tensor, shape (B, L)
        True for levels identified correctly (:func:`~spinelandmarks.metrics.level_identification`).
    good_images : Tensor, shape (B,), optional
        True for images whose per-image statistics count (default: every level good).
    quantile, margin : float
        Quantile of the good levels' statistic, and the factor applied to it.
    base : QCThresholds, optional
        Thresholds to start from (default: :class:`QCThresholds`).
    min_samples : int
        Fewer good levels with a finite statistic leave that threshold at ``base``.

    Returns
    -------
    QCThresholds
    """
    base = base or QCThresholds()
    fitted: dict[str, float] = {}
    for name, stat in (*CALIBRATED.items(), *CALIBRATED_BELOW.items(),
                       *CALIBRATED_IMAGE.items()):
        if stat not in statistics:
            continue
        values = statistics[stat].double()
        keep = good.to(values.device).bool()
        if name in CALIBRATED_IMAGE:
            keep = keep.all(dim=1) if good_images is None else good_images.to(keep)
        values = values[keep & torch.isfinite(values)]
        if values.numel() < min_samples:
            continue
        if name not in CALIBRATED_BELOW:
            fitted[name] = max(float(getattr(base, name)),
                               float(torch.quantile(values, quantile)) * margin)
        else:
            fitted[name] = min(float(getattr(base, name)),
                               float(torch.quantile(values, 1.0 - quantile)) / margin)
    return QCThresholds(**{**dataclasses.asdict(base), **fitted})


def _pair_flags(points: Tensor, schema: LandmarkSchema, height: Tensor,
                th: QCThresholds) -> dict[str, Tensor]:
    """Overlap, order and spacing between consecutive levels, each (B, L) bool."""
    centres = level_centres(points, schema)  # (B, L, 2)
    sup, inf = _endplate_mids(points, schema)
    upper_end = torch.where(torch.isfinite(inf), inf, centres)[:, :-1]
    lower_start = torch.where(torch.isfinite(sup), sup, centres)[:, 1:]
    axis = _unit(inf - sup)[:, :-1]  # cranio-caudal axis of the upper body of each pair
    axis = torch.where(torch.isfinite(axis), axis, _unit(centres[:, 1:] - centres[:, :-1]))
    h = torch.stack([height[:, :-1], height[:, 1:]], -1).nanmean(-1)  # (B, L-1)
    gap = ((lower_start - upper_end) * axis).sum(-1)
    overlap = gap < -th.overlap_frac * h
    order = ((centres[:, 1:] - centres[:, :-1]) * axis).sum(-1) <= 0
    # spacing: centre-to-centre over height, against the spine's own median ratio (body pairs)
    body = torch.tensor([lv.has_body for lv in schema.levels], device=points.device)
    both = body[:-1] & body[1:]
    ratio = torch.linalg.vector_norm(centres[:, 1:] - centres[:, :-1], dim=-1) / h
    ratio = torch.where(both[None, :], ratio, torch.full_like(ratio, math.nan))
    typical = ratio.nanmedian(dim=1, keepdim=True).values
    spacing = (ratio - typical).abs() > th.spacing_tolerance * typical
    out = {}
    for name, pair in (("overlap", overlap), ("order", order), ("spacing", spacing)):
        pair = pair & torch.isfinite(gap)  # pairs with a missing level are not judged
        level = torch.zeros(points.shape[0], schema.num_levels, dtype=torch.bool,
                            device=points.device)
        level[:, :-1] |= pair
        level[:, 1:] |= pair
        out[name] = level
    return out


def implausible_angles(parameters: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per parameter of :data:`PLAUSIBLE_DEG` present in ``parameters``: (B,) bool, outside its
    physiological range (NaN, not measurable, is not flagged here: ``missing`` says why)."""
    out = {}
    for name, (lo, hi) in PLAUSIBLE_DEG.items():
        if name in parameters:
            v = parameters[name]
            out[name] = torch.isfinite(v) & ((v < lo) | (v > hi))
    return out


def _step_differences(parameters: Mapping[str, Tensor], parameters_step1: Mapping[str, Tensor]
                      ) -> dict[str, Tensor]:
    """Per parameter measured from both steps' points: (B,) wrapped absolute difference in
    degrees between step 2 and step 1 (NaN where either is NaN)."""
    return {k: wrap_angle(v.double() - parameters_step1[k].double().to(v.device)).abs()
            for k, v in parameters.items() if k in parameters_step1}


def steps_disagreement(parameters: Mapping[str, Tensor], parameters_step1: Mapping[str, Tensor]
                       ) -> Tensor:
    """(B,) largest absolute difference in degrees between a parameter from the step-2 and
    from the step-1 points (wrapped; over the parameters in both, of which there must be one;
    NaN where none is measurable)."""
    diffs = list(_step_differences(parameters, parameters_step1).values())
    if not diffs:
        raise ValueError("no parameter is measured from both steps' points")
    return torch.stack(diffs, -1).nan_to_num(nan=-math.inf).amax(-1).nan_to_num(
        neginf=math.nan)


def disagreeing_parameters(parameters: Mapping[str, Tensor],
                           parameters_step1: Mapping[str, Tensor], max_deg: float = 5.0
                           ) -> dict[str, Tensor]:
    """Per parameter present in both: (B,) bool, step 1 and step 2 differ by more than
    ``max_deg`` degrees (wrapped difference; NaN on either side is not flagged)."""
    return {name: torch.isfinite(d) & (d > max_deg)
            for name, d in _step_differences(parameters, parameters_step1).items()}


def quality_flags(points: Tensor, points_step1: Tensor, point_scores: Tensor,
                  parameters: Mapping[str, Tensor], schema: LandmarkSchema, *,
                  parameters_step1: Mapping[str, Tensor] | None = None,
                  present: Tensor | None = None, level_scores: Tensor | None = None,
                  boxes: Tensor | None = None, thresholds: QCThresholds | None = None,
                  ) -> dict[str, Tensor]:
    """Plausibility flags of predicted spines (see the module docstring).

    Parameters
    ----------
    points, points_step1 : Tensor, shape (B, P, 2)
        Step-2 and step-1 points in image pixels; NaN for levels not found.
    point_scores : Tensor, shape (B, P)
        ``1 / (1 + spread)`` with the heatmap spread in image pixels (NaN where not found).
    parameters : dict of str to Tensor
        Clinical parameters ``name -> (B,)`` degrees (:func:`~spinelandmarks.anatomy.angles.lumbar_parameters`).
    parameters_step1 : dict of str to Tensor, optional
        The same from the step-1 points (for ``steps_disagree``).
    schema : LandmarkSchema
    present : Tensor, shape (B, L), optional
        Levels reported found; default: levels with finite points.
    level_scores : Tensor, shape (B, L), optional
        Detector scores (NaN without a detector).
    boxes : Tensor, shape (B, L, 4), optional
        Detector boxes ``(x1, y1, x2, y2)`` in image pixels, NaN where none.
    thresholds : QCThresholds, optional

    Returns
    -------
    dict of str to Tensor
        Every name of :data:`LEVEL_FLAGS` -> (B, L) bool, of :data:`IMAGE_FLAGS` -> (B,) bool,
        and ``needs_review`` -> (B,) bool (any flag).
    """
    th = thresholds or QCThresholds()
    pts = points.double()
    present = (torch.isfinite(level_centres(pts, schema)).all(-1) if present is None
               else present.to(pts.device).bool())
    width, height = vertebra_size(pts, schema)
    flags: dict[str, Tensor] = {"missing": ~present}
    flags.update(_pair_flags(pts, schema, height, th))
    aspect = width / height
    lo, hi = th.aspect_range
    body = torch.tensor([lv.has_body for lv in schema.levels], device=pts.device)
    bad_aspect = body[None, :] & torch.isfinite(aspect) & ((aspect < lo) | (aspect > hi))
    flags["shape"] = present & (bad_aspect | ~_convex_quads(pts, schema))
    stats = qc_statistics(pts, points_step1, point_scores, schema, boxes)
    low = stats["spread_frac"] > th.max_spread_frac
    if level_scores is not None:
        low |= present & torch.isfinite(level_scores) & (level_scores < th.min_detector_score)
    flags["low_confidence"] = low
    flags["detector_disagrees"] = present & (stats["detector_distance_frac"]
                                             > th.detector_distance_frac)
    flags["refinement_jump"] = present & (stats["refinement_jump_frac"]
                                          > th.refinement_jump_frac)
    angle = torch.zeros(pts.shape[0], dtype=torch.bool, device=pts.device)
    for out_of_range in implausible_angles(parameters).values():
        angle |= out_of_range.to(angle.device)
    flags["angle_range"] = angle
    flags["steps_disagree"] = torch.zeros_like(angle)
    for out_of_step in disagreeing_parameters(parameters, parameters_step1 or {},
                                              th.steps_disagree_deg).values():
        flags["steps_disagree"] |= out_of_step.to(angle.device)
    review = angle | flags["steps_disagree"]
    for name in LEVEL_FLAGS:
        flags[name] = flags[name] & torch.ones_like(present)  # (B, L) bool on one device
        review |= flags[name].any(dim=1)
    flags["needs_review"] = review
    return flags
