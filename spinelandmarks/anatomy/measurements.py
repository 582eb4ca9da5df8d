"""Clinical measurements beyond the lumbar angles: spinopelvic balance, vertebral morphometry
with Genant fracture grading, disc heights and spondylolisthesis.

Every function is vectorized over a batch of point sets (B, P, 2) in image pixels, reads the
points it needs from the schema by name, and returns NaN where a needed point is absent (so a
schema without femoral heads simply gives NaN pelvic parameters). Angles are in degrees and do
not depend on the facing direction (x is multiplied by the image's facing, CONVENTIONS
section 4); lengths are in pixels, or in mm when ``spacing`` (row_mm, col_mm) is given.
Definitions, with the thresholds below, are in ``docs/conventions.md`` ("Spinopelvic
parameters", "Vertebral morphometry", "Spondylolisthesis").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..schema import (
    CORNERS,
    FEMORAL_HEADS,
    LUMBAR_MORPHOMETRY,
    LUMBAR_SAGITTAL,
    LUMBOPELVIC_SAGITTAL,
    LandmarkSchema,
)
from .alignment import sagittal_alignment
from .angles import facing, schema_parameters, wrap_angle

__all__ = [
    "GENANT_LOSS",
    "MEYERDING_MIN_SLIP_PCT",
    "SCREEN_SPECIFICITY",
    "clinical_columns",
    "disc_heights",
    "fit_fracture_screen",
    "genant_grades",
    "height_loss",
    "listhesis",
    "morphometry",
    "patient_fracture_status",
    "spinopelvic_parameters",
]

#: Genant semi-quantitative grades by height loss: grade g when loss >= GENANT_LOSS[g - 1].
GENANT_LOSS: tuple[float, float, float] = (0.20, 0.25, 0.40)

#: Specificity per vertebra (against Genant grade >= 2) :func:`fit_fracture_screen` aims at.
SCREEN_SPECIFICITY = 0.98

#: A slip below this percentage of the lower endplate is Meyerding grade 0 (no listhesis).
MEYERDING_MIN_SLIP_PCT = 5.0


def _point(points: Tensor, schema: LandmarkSchema, level: str, name: str) -> Tensor:
    """(B, 2) the named point, NaN when the schema lacks it."""
    if level in schema.level_names and name in schema.level(level).points:
        return points[:, schema.index(level, name)]
    return points.new_full((points.shape[0], 2), math.nan)


def _scale(spacing: Sequence[float] | Tensor | None, points: Tensor) -> Tensor:
    """(B, 1, 2) mm per pixel along (x, y); ones without spacing."""
    if spacing is None:
        return points.new_ones(1, 1, 2)
    sp = torch.as_tensor(spacing, dtype=points.dtype, device=points.device).reshape(-1, 2)
    return sp.flip(-1)[:, None, :]  # (row_mm, col_mm) -> (x, y)


def _length(a: Tensor, b: Tensor, scale: Tensor) -> Tensor:
    return torch.linalg.vector_norm((a - b) * scale, dim=-1)


def _from_vertical(v: Tensor) -> Tensor:
    """Angle (deg) of vectors (B, 2) from the downward vertical, positive towards +x (anterior
    once x is multiplied by the facing)."""
    return torch.rad2deg(torch.atan2(v[..., 0], v[..., 1]))


# -- spinopelvic balance ---------------------------------------------------------------------------
def spinopelvic_parameters(points: Tensor, schema: LandmarkSchema = LUMBOPELVIC_SAGITTAL
                           ) -> dict[str, Tensor]:
    """Pelvic incidence, pelvic tilt, sacral slope, lumbar lordosis and PI-LL mismatch.

    The hip axis is the midpoint of the two femoral head centres (one centre if only one is
    marked). With M the middle of the S1 superior endplate: PT is the angle between the
    vertical and the line M -> hip axis, positive when the hip axis lies anterior to M; PI
    the angle between the perpendicular to the S1 endplate at M (pointing into the sacrum)
    and the same line; SS the tilt of the S1 endplate; LL the L1-S1 lordosis. Geometrically
    PI = PT + SS.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) image pixels; NaN where absent.
    schema : LandmarkSchema
        Needs S1's superior corners, L1's superior corners and the ``femoral_heads`` level.

    Returns
    -------
    dict of str to Tensor
        ``pelvic_incidence``, ``pelvic_tilt``, ``sacral_slope``, ``lumbar_lordosis``,
        ``pi_ll_mismatch``: (B,) degrees in (-180, 180], NaN where not measurable.
    """
    pts = points.double()
    face = facing(pts, schema).to(pts)
    q = pts * torch.stack([face, torch.ones_like(face)], -1)[:, None, :]  # anterior = +x
    heads = torch.stack([_point(q, schema, FEMORAL_HEADS.name, n)
                         for n in FEMORAL_HEADS.points], dim=1)  # (B, 2, 2)
    hip = heads.nanmean(dim=1)
    ant, post = (_point(q, schema, "S1", n) for n in ("anterior_superior",
                                                       "posterior_superior"))
    mid = 0.5 * (ant + post)
    plate = ant - post  # posterior -> anterior
    normal = torch.stack([-plate[:, 1], plate[:, 0]], -1)
    normal = torch.where(normal[:, 1:2] < 0, -normal, normal)  # into the sacrum (caudal)
    to_hip = hip - mid
    pt = wrap_angle(_from_vertical(to_hip))
    pi = wrap_angle(_from_vertical(to_hip) - _from_vertical(normal))
    lumbar = schema_parameters(pts, schema)  # NaN for those the schema cannot measure
    nan = torch.full_like(pi, math.nan)
    ll = lumbar.get("l1_s1_lordosis", nan)
    return {"pelvic_incidence": pi, "pelvic_tilt": pt,
            "sacral_slope": lumbar.get("sacral_slope", nan),
            "lumbar_lordosis": ll, "pi_ll_mismatch": wrap_angle(pi - ll)}


# -- vertebral morphometry -----------------------------------------------------------------------
def morphometry(points: Tensor, schema: LandmarkSchema = LUMBAR_MORPHOMETRY,
                spacing: Sequence[float] | Tensor | None = None) -> dict[str, Tensor]:
    """Anterior, middle and posterior body heights and their ratios, per vertebral body.

    Ha and Hp are the anterior and posterior wall lengths; Hm the distance between the middles
    of the superior and inferior endplates (``middle_superior`` / ``middle_inferior``; NaN
    for schemas without them). Wedge ratio Ha / Hp, biconcavity ratio Hm / Hp, crush ratio Hp
    over the mean Hp of the adjacent bodies (the one neighbour at the ends of the column).

    Returns
    -------
    dict of str to Tensor
        ``ha``, ``hm``, ``hp`` (B, V) pixels or mm; ``wedge``, ``biconcavity``, ``crush``
        (B, V) ratios, for the V = ``schema.body_levels`` in order.
    """
    pts = points.double()
    scale = _scale(spacing, pts)
    body = list(schema.body_levels)
    cols: dict[str, list[Tensor]] = {"ha": [], "hm": [], "hp": []}
    for lv in body:
        p = {n: _point(pts, schema, lv, n) for n in (*CORNERS, "middle_superior",
                                                       "middle_inferior")}
        cols["ha"].append(_length(p["anterior_superior"], p["anterior_inferior"], scale[:, 0]))
        cols["hp"].append(_length(p["posterior_superior"], p["posterior_inferior"], scale[:, 0]))
        cols["hm"].append(_length(p["middle_superior"], p["middle_inferior"], scale[:, 0]))
    out = {k: torch.stack(v, dim=1) if v else pts.new_zeros(pts.shape[0], 0)
           for k, v in cols.items()}
    hp = out["hp"]
    padded = torch.nn.functional.pad(hp, (1, 1), value=math.nan)
    neighbours = torch.stack([padded[:, :-2], padded[:, 2:]], -1).nanmean(-1)
    out.update(wedge=out["ha"] / hp, biconcavity=out["hm"] / hp, crush=hp / neighbours)
    return out


def genant_grades(morph: dict[str, Tensor]) -> dict[str, Tensor]:
    """Genant semi-quantitative grade and shape of each body from :func:`morphometry`.

    Height loss of each shape: wedge ``1 - Ha/Hp``, biconcave ``1 - Hm/Hp``, crush
    ``1 - Hp/Hp(adjacent)``; the largest one (NaN ratios ignored) gives the shape and the
    grade: 0 below 20 %, 1 from 20 %, 2 from 25 %, 3 from 40 % (:data:`GENANT_LOSS`).

    Returns
    -------
    dict of str to Tensor
        ``height_loss`` (B, V) fraction, NaN when no ratio is measurable; ``grade`` (B, V)
        int64 0-3 (0 where not measurable); ``shape`` (B, V) int64: 0 wedge, 1 biconcave,
        2 crush; ``fractured`` (B, V) bool, grade >= 1.
    """
    loss = torch.stack([1.0 - morph["wedge"], 1.0 - morph["biconcavity"],
                        1.0 - morph["crush"]], dim=-1)
    filled = torch.nan_to_num(loss, nan=-math.inf)
    worst, shape = filled.max(dim=-1)
    measurable = torch.isfinite(worst)
    height_loss = torch.where(measurable, worst, torch.full_like(worst, math.nan))
    thresholds = torch.tensor(GENANT_LOSS, dtype=height_loss.dtype, device=height_loss.device)
    grade = (torch.nan_to_num(height_loss, nan=-1.0)[..., None] >= thresholds).sum(-1)
    return {"height_loss": height_loss, "grade": grade, "shape": shape,
            "fractured": grade >= 1}


def height_loss(points: Tensor, schema: LandmarkSchema = LUMBAR_MORPHOMETRY) -> Tensor:
    """Genant height loss of every body, straight from the points.

    ``genant_grades(morphometry(points, schema))["height_loss"]``: the largest of the wedge,
    biconcave (with endplate middles in the schema) and crush losses.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) image pixels, NaN where absent.

    Returns
    -------
    Tensor
        (B, V) float64 fraction for the V = ``schema.body_levels``; NaN where not measurable.
    """
    return genant_grades(morphometry(points, schema))["height_loss"]


def fit_fracture_screen(pred_loss: np.ndarray, true_loss: np.ndarray,
                        specificity: float = SCREEN_SPECIFICITY) -> float:
    """Height-loss threshold of the fracture screen, fitted on annotated images.

    The Genant grade reads the predicted height loss at the 25 % line, so a model that
    under-estimates fractured bodies' loss by a little misses the fractures just past it.
    The screen flags a body as a suspected fracture (grade >= 2) from a lower loss: the
    ``specificity`` quantile of the predicted loss of the bodies whose reference loss is under
    25 % (so about ``1 - specificity`` of them are flagged on these images), kept between the
    grade-1 and grade-2 lines (20-25 %): a suspected fracture is at least a measured grade-1
    deformity. Fit it on images the models were not trained on.

    Parameters
    ----------
    pred_loss, true_loss : np.ndarray
        Predicted and reference height loss (fraction) of the same bodies, any shape; NaN
        where not measurable (left out).
    specificity : float
        In (0, 1).

    Returns
    -------
    float
        The threshold (fraction) in [0.20, 0.25]; 0.25 when no body under the 25 % line was
        measurable.
    """
    if not 0.0 < specificity < 1.0:
        raise ValueError(f"specificity must be in (0, 1), got {specificity}")
    pred, true = np.asarray(pred_loss, np.float64), np.asarray(true_loss, np.float64)
    negatives = pred[np.isfinite(pred) & np.isfinite(true) & (true < GENANT_LOSS[1])]
    if negatives.size == 0:
        return GENANT_LOSS[1]
    quantile = float(np.quantile(negatives, specificity, method="higher"))
    return min(GENANT_LOSS[1], max(GENANT_LOSS[0], quantile))


def patient_fracture_status(grades: dict[str, Tensor], level_names: Sequence[str],
                            min_grade: int = 1) -> list[list[str]]:
    """Per image, the levels graded ``min_grade`` or worse (empty: no fracture)."""
    flagged = grades["grade"] >= min_grade
    return [[lv for lv, on in zip(level_names, row, strict=True) if on]
            for row in flagged.tolist()]


# -- discs and listhesis ---------------------------------------------------------------------------
def _segments(schema: LandmarkSchema) -> list[tuple[str, str]]:
    """(upper, lower) consecutive levels with an inferior and a superior endplate."""
    names = [lv.name for lv in schema.levels if lv.name != FEMORAL_HEADS.name]
    return [(u, low) for u, low in itertools.pairwise(names)
            if {"anterior_inferior", "posterior_inferior"} <= set(schema.level(u).points)
            and {"anterior_superior", "posterior_superior"} <= set(schema.level(low).points)]


def disc_heights(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                 spacing: Sequence[float] | Tensor | None = None) -> dict[str, Tensor]:
    """Anterior and posterior height of each disc space (upper body's inferior corner to the
    lower body's superior corner), pixels or mm.

    Returns
    -------
    dict of str to Tensor
        ``"<upper>-<lower>"`` -> (B, 2): anterior, posterior height.
    """
    pts = points.double()
    scale = _scale(spacing, pts)[:, 0]
    out = {}
    for up, low in _segments(schema):
        ant = _length(_point(pts, schema, up, "anterior_inferior"),
                      _point(pts, schema, low, "anterior_superior"), scale)
        post = _length(_point(pts, schema, up, "posterior_inferior"),
                       _point(pts, schema, low, "posterior_superior"), scale)
        out[f"{up}-{low}"] = torch.stack([ant, post], dim=-1)
    return out


def listhesis(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL) -> dict[str, Tensor]:
    """Slip of each body over the one below, in percent of the lower superior endplate, and
    its Meyerding grade.

    The slip is the displacement of the upper body's posterior-inferior corner from the lower
    body's posterior-superior corner, along the lower superior endplate (posterior to
    anterior): positive for anterolisthesis, negative for retrolisthesis. Meyerding grade: 0
    below :data:`MEYERDING_MIN_SLIP_PCT`, I up to 25 %, II to 50 %, III to 75 %, IV to 100 %,
    V beyond (retrolisthesis is grade 0).

    Returns
    -------
    dict of str to Tensor
        ``"<upper>-<lower>"`` -> (B, 2): slip percent, Meyerding grade (NaN, NaN when not
        measurable).
    """
    pts = points.double()
    out = {}
    for up, low in _segments(schema):
        lp = _point(pts, schema, low, "posterior_superior")
        plate = _point(pts, schema, low, "anterior_superior") - lp
        length = torch.linalg.vector_norm(plate, dim=-1)
        shift = ((_point(pts, schema, up, "posterior_inferior") - lp) * plate).sum(-1) / length
        slip = 100.0 * shift / length
        grade = torch.ceil(slip / 25.0).clamp(1, 5)
        grade = torch.where(slip < MEYERDING_MIN_SLIP_PCT, torch.zeros_like(grade), grade)
        grade = torch.where(torch.isfinite(slip), grade, torch.full_like(grade, math.nan))
        out[f"{up}-{low}"] = torch.stack([slip, grade], dim=-1)
    return out


# -- one table row per image -----------------------------------------------------------------------
def clinical_columns(points: Tensor, schema: LandmarkSchema,
                     spacing: Tensor | None = None) -> dict[str, Tensor]:
    """Every measurement the schema allows, as flat ``column -> (B,)`` values.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) image pixels, NaN where absent.
    schema : LandmarkSchema
    spacing : Tensor, optional
        (B, 2) ``(row_mm, col_mm)`` per image; rows with NaN (unknown spacing) are measured in
        pixels. ``length_unit_mm`` says which: 1 for mm, 0 for pixels.

    Returns
    -------
    dict of str to Tensor
        ``sva_mm`` (NaN where the spacing is unknown), ``sva_px``,
        ``thoracic_kyphosis_t4_t12_deg``, ``t1_pelvic_angle_deg`` (whole-spine schemas,
        :func:`~spinelandmarks.anatomy.alignment.sagittal_alignment`);
        ``pelvic_incidence_deg``, ``pelvic_tilt_deg``, ``pi_ll_mismatch_deg`` (schemas with
        femoral heads); per body ``<L>_ha``, ``<L>_hm`` (schemas with endplate middles),
        ``<L>_hp``, ``<L>_genant_grade``; per segment ``<U>-<L>_disc_anterior``,
        ``<U>-<L>_disc_posterior``, ``<U>-<L>_slip_pct``, ``<U>-<L>_meyerding``;
        ``length_unit_mm``.
    """
    pts = points.double()
    b = pts.shape[0]
    sp = (torch.full((b, 2), math.nan, dtype=pts.dtype, device=pts.device) if spacing is None
          else spacing.to(pts))
    known = torch.isfinite(sp).all(-1)
    cols: dict[str, Tensor] = {}
    for name, value in sagittal_alignment(pts, schema, sp).items():  # whole-spine schemas
        cols[name if name.startswith("sva") else f"{name}_deg"] = value
    sp = torch.where(known[:, None], sp, torch.ones_like(sp))
    if FEMORAL_HEADS.name in schema.level_names:
        par = spinopelvic_parameters(pts, schema)
        for k in ("pelvic_incidence", "pelvic_tilt", "pi_ll_mismatch"):
            cols[f"{k}_deg"] = par[k]
    morph = morphometry(pts, schema, spacing=sp)
    grades = genant_grades(morph)
    with_middles = any("middle_superior" in schema.level(lv).points
                       for lv in schema.body_levels)
    for j, lv in enumerate(schema.body_levels):
        cols[f"{lv}_ha"] = morph["ha"][:, j]
        if with_middles:
            cols[f"{lv}_hm"] = morph["hm"][:, j]
        cols[f"{lv}_hp"] = morph["hp"][:, j]
        measurable = torch.isfinite(grades["height_loss"][:, j])
        cols[f"{lv}_genant_grade"] = torch.where(measurable, grades["grade"][:, j].to(pts),
                                                 torch.full_like(pts[:, 0, 0], math.nan))
    discs, slips = disc_heights(pts, schema, spacing=sp), listhesis(pts, schema)
    for seg, d in discs.items():
        cols[f"{seg}_disc_anterior"], cols[f"{seg}_disc_posterior"] = d[:, 0], d[:, 1]
        cols[f"{seg}_slip_pct"], cols[f"{seg}_meyerding"] = slips[seg][:, 0], slips[seg][:, 1]
    cols["length_unit_mm"] = known.to(pts)
    return cols
