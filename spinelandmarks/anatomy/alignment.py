"""Whole-spine sagittal alignment: sagittal vertical axis, thoracic kyphosis, T1 pelvic angle.

Measured on a standing full-length lateral radiograph from the points of a schema such as
:data:`~spinelandmarks.schema.WHOLE_SPINE_SAGITTAL` (C7 to L5 corners, the S1 plate, the
femoral heads). Vectorized over a batch (B, P, 2) of image pixels; a measurement whose points
the schema lacks is left out, one whose points are absent is NaN. The facing direction is
taken from the endplates (conventions, "Clinical angles"), so a patient facing left measures
as one facing right. Definitions in ``docs/conventions.md`` ("Whole-spine alignment").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..schema import CORNERS, FEMORAL_HEADS, LandmarkSchema
from .angles import endplate_tilts, facing, wrap_angle

__all__ = ["ALIGNMENT_MEASUREMENTS", "defined_alignment", "sagittal_alignment"]

#: The measurements of :func:`sagittal_alignment`, in order.
ALIGNMENT_MEASUREMENTS: tuple[str, ...] = ("sva_mm", "sva_px", "thoracic_kyphosis_t4_t12",
                                           "t1_pelvic_angle")


def _has_body(schema: LandmarkSchema, level: str) -> bool:
    return level in schema.level_names and schema.level(level).has_body


def _has_plate(schema: LandmarkSchema) -> bool:
    return schema.has_endplate("S1", "superior")


def defined_alignment(schema: LandmarkSchema) -> tuple[str, ...]:
    """The names of :data:`ALIGNMENT_MEASUREMENTS` whose points ``schema`` has.

    Examples
    --------
    >>> from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL, WHOLE_SPINE_SAGITTAL
    >>> defined_alignment(WHOLE_SPINE_SAGITTAL)
    ('sva_mm', 'sva_px', 'thoracic_kyphosis_t4_t12', 't1_pelvic_angle')
    >>> defined_alignment(LUMBOPELVIC_SAGITTAL)
    ()
    """
    heads = FEMORAL_HEADS.name in schema.level_names
    needs = {"sva_mm": _has_body(schema, "C7") and _has_plate(schema),
             "sva_px": _has_body(schema, "C7") and _has_plate(schema),
             "thoracic_kyphosis_t4_t12": (schema.has_endplate("T4", "superior")
                                          and schema.has_endplate("T12", "inferior")),
             "t1_pelvic_angle": _has_body(schema, "T1") and _has_plate(schema) and heads}
    return tuple(name for name in ALIGNMENT_MEASUREMENTS if needs[name])


def _centre(points: Tensor, schema: LandmarkSchema, level: str) -> Tensor:
    """(B, 2) body centre: the mean of the four corners."""
    return points[:, [schema.index(level, c) for c in CORNERS]].mean(dim=1)


def _tilt(tilts: Tensor, schema: LandmarkSchema, level: str,
          side: Literal["superior", "inferior"]) -> Tensor:
    names = [(e.level, e.side) for e in schema.endplates()]
    return tilts[:, names.index((level, side))]


def _from_upward(v: Tensor) -> Tensor:
    """Angle (deg) of vectors (B, 2) from the upward vertical, positive towards +x (anterior
    once x is multiplied by the facing)."""
    return torch.rad2deg(torch.atan2(v[..., 0], -v[..., 1]))


def sagittal_alignment(points: Tensor, schema: LandmarkSchema,
                       spacing: Sequence[float] | Tensor | None = None) -> dict[str, Tensor]:
    """SVA, T4-T12 thoracic kyphosis and T1 pelvic angle of every image.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) image pixels (x right, y down), NaN where absent.
    schema : LandmarkSchema
        Needs C7's corners and S1's superior plate (SVA), the T4 superior and T12 inferior
        endplates (kyphosis), T1's corners, the S1 plate and the femoral heads (T1PA).
    spacing : sequence or Tensor, optional
        ``(row_mm, col_mm)`` for all images, or (B, 2) per image (NaN rows: unknown).

    Returns
    -------
    dict of str to Tensor
        Those of :func:`defined_alignment`, each (B,) float64:

        - ``sva_px`` / ``sva_mm``: horizontal distance from the posterior-superior corner of
          S1 to the C7 plumb line (the vertical through the C7 body centre), positive when
          the plumb line falls anterior to the corner; pixels, and mm with the column
          spacing (NaN where unknown).
        - ``thoracic_kyphosis_t4_t12``: ``tilt(T4 superior) - tilt(T12 inferior)``, degrees,
          positive for a kyphotic (posteriorly convex) thoracic spine.
        - ``t1_pelvic_angle``: the angle at the hip axis (midpoint of the femoral head
          centres) from the line to the middle of the S1 superior plate to the line to the
          T1 body centre, degrees, positive when T1 lies anterior of the first line.
    """
    names = defined_alignment(schema)
    pts = points.double()
    b = pts.shape[0]
    face = facing(pts, schema).to(pts)
    q = pts * torch.stack([face, torch.ones_like(face)], -1)[:, None, :]  # anterior = +x
    out: dict[str, Tensor] = {}
    if "sva_px" in names:
        ps = q[:, schema.index("S1", "posterior_superior")]
        sva_px = _centre(q, schema, "C7")[:, 0] - ps[:, 0]
        if spacing is None:
            col_mm = torch.full((b,), math.nan, dtype=pts.dtype, device=pts.device)
        else:
            sp = torch.as_tensor(spacing, dtype=pts.dtype, device=pts.device).reshape(-1, 2)
            col_mm = sp[:, 1].expand(b)
        out["sva_mm"] = sva_px * col_mm
        out["sva_px"] = sva_px
    if "thoracic_kyphosis_t4_t12" in names:
        tilts = endplate_tilts(pts, schema, facing=face)
        out["thoracic_kyphosis_t4_t12"] = wrap_angle(_tilt(tilts, schema, "T4", "superior")
                                                     - _tilt(tilts, schema, "T12", "inferior"))
    if "t1_pelvic_angle" in names:
        heads = q[:, schema.level_indices(FEMORAL_HEADS.name)]  # (B, 2, 2)
        hip = heads.nanmean(dim=1)
        mid = 0.5 * (q[:, schema.index("S1", "anterior_superior")]
                     + q[:, schema.index("S1", "posterior_superior")])
        t1 = _centre(q, schema, "T1")
        out["t1_pelvic_angle"] = wrap_angle(_from_upward(t1 - hip) - _from_upward(mid - hip))
    return {name: out[name] for name in names}
