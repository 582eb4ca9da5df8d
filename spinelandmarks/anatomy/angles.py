"""Clinical angles from the points of a schema (degrees, signed; conventions section 4).

Every function works on a batch of point sets ``points`` of shape ``(B, P, 2)`` in pixel
coordinates ``(x, y)`` (conventions section 1), ordered as the flat points of a
:class:`~spinelandmarks.schema.LandmarkSchema`. An absent point is a NaN coordinate and/or a
zero in an optional visibility mask ``(B, P)``; a quantity that needs an absent point is NaN.

- :func:`facing` -- +1 / -1 per image, majority over endplates.
- :func:`endplate_tilts` -- tilt of every endplate of the schema.
- :func:`lordosis`, :func:`lumbar_parameters`, :func:`segmental_angles`.
- :func:`schema_parameters` -- the lumbar parameters a schema defines, and only those.
- :func:`wrap_angle` -- every reported angle lies in (-180, 180].
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from torch import Tensor

from ..schema import LUMBAR_SAGITTAL, LandmarkSchema
from ._points import _check_points, _masked

__all__ = ["LUMBAR_PARAMETERS", "LUMBAR_PARAMETER_ENDPLATES", "defined_parameters",
           "endplate_tilts", "facing", "lordosis", "lumbar_parameters",
           "lumbar_parameters_or_nan", "schema_parameters", "segmental_angle_names",
           "segmental_angles", "wrap_angle"]

#: Names of the parameters returned by :func:`lumbar_parameters`, in order.
LUMBAR_PARAMETERS: tuple[str, str, str] = ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope")

Side = Literal["superior", "inferior"]


def wrap_angle(deg: Tensor) -> Tensor:
    """Angles (or angle differences) in degrees mapped to ``(-180, 180]``; NaN stays NaN.

    A difference of two tilts can leave that interval (e.g. ``170 - (-35) = 205``): the angle
    between two lines is only defined modulo 360 degrees, so every angle this module reports
    goes through this function.

    Examples
    --------
    >>> wrap_angle(torch.tensor([205.0, -180.0, 180.0, -190.0])).tolist()
    [-155.0, 180.0, 180.0, 170.0]
    """
    return 180.0 - torch.remainder(180.0 - deg, 360.0)


def _endplate_position(schema: LandmarkSchema, level: str, side: Side) -> int:
    for i, e in enumerate(schema.endplates()):
        if e.level == level and e.side == side:
            return i
    raise KeyError(f"schema {schema.name!r} has no {side} endplate for level {level!r}")


def _facing(points: Tensor, schema: LandmarkSchema) -> Tensor:
    eps = schema.endplates()
    if not eps:
        return points.new_ones(points.shape[0])
    post = torch.tensor([e.posterior for e in eps], dtype=torch.long, device=points.device)
    ant = torch.tensor([e.anterior for e in eps], dtype=torch.long, device=points.device)
    dx = points[:, ant, 0] - points[:, post, 0]  # (B, E); NaN compares False
    votes = (dx > 0).sum(dim=1) - (dx < 0).sum(dim=1)
    return torch.where(votes < 0, -1.0, 1.0).to(points.dtype)


def facing(points: Tensor, schema: LandmarkSchema, visibility: Tensor | None = None) -> Tensor:
    """Facing direction of every image: sign of (anterior x - posterior x), by majority.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Schema of the points.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    Tensor, shape (B,)
        +1 (anterior to the right) or -1, dtype of ``points``. Endplates with an absent point or
        a vertical direction do not vote; ties (and images without any endplate) give +1.
    """
    _check_points(points, schema)
    return _facing(_masked(points, visibility), schema)


def endplate_tilts(points: Tensor, schema: LandmarkSchema, facing: Tensor | None = None,
                   visibility: Tensor | None = None) -> Tensor:
    """Tilt of every endplate of the schema, ``atan2(A.y - P.y, facing * (A.x - P.x))``.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates (x right, y down), NaN where absent.
    schema : LandmarkSchema
        Schema of the points; columns follow ``schema.endplates()``.
    facing : Tensor, shape (B,), optional
        +1 / -1 per image; computed with :func:`facing` when omitted.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    Tensor, shape (B, E)
        Degrees in (-180, 180]; positive when the anterior end is lower in the image. NaN where
        either point of the endplate is absent.
    """
    _check_points(points, schema)
    points = _masked(points, visibility)
    eps = schema.endplates()
    if facing is None:
        facing = _facing(points, schema)
    f = facing.to(device=points.device, dtype=points.dtype).reshape(-1, 1)
    post = torch.tensor([e.posterior for e in eps], dtype=torch.long, device=points.device)
    ant = torch.tensor([e.anterior for e in eps], dtype=torch.long, device=points.device)
    d = points[:, ant] - points[:, post]  # (B, E, 2)
    return torch.rad2deg(torch.atan2(d[..., 1], f * d[..., 0]))


def lordosis(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
             upper: tuple[str, Side] = ("L1", "superior"),
             lower: tuple[str, Side] = ("L5", "inferior"),
             visibility: Tensor | None = None, facing: Tensor | None = None) -> Tensor:
    """Angle between two endplates, ``tilt(lower) - tilt(upper)``.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Schema of the points.
    upper, lower : (level, side)
        Cranial and caudal endplates, e.g. ``("L1", "superior")`` and ``("S1", "superior")``.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.
    facing : Tensor, shape (B,), optional
        +1 / -1 per image; computed from all endplates when omitted.

    Returns
    -------
    Tensor, shape (B,)
        Degrees in (-180, 180]; lordosis positive, kyphosis negative; NaN where a needed point
        is absent.
    """
    iu = _endplate_position(schema, *upper)
    il = _endplate_position(schema, *lower)
    tilts = endplate_tilts(points, schema, facing=facing, visibility=visibility)
    return wrap_angle(tilts[:, il] - tilts[:, iu])


def lumbar_parameters(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                      visibility: Tensor | None = None) -> dict[str, Tensor]:
    """Lumbar lordosis (L1-L5, L1-S1) and sacral slope of every image.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Must have L1 superior, L5 inferior and S1 superior endplates.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    dict[str, Tensor]
        ``l1_l5_lordosis`` = tilt(L5 inferior) - tilt(L1 superior),
        ``l1_s1_lordosis`` = tilt(S1 superior) - tilt(L1 superior),
        ``sacral_slope`` = tilt(S1 superior); each (B,) degrees in (-180, 180], signed, NaN
        where a needed point is absent. The facing direction is taken by majority over all endplates.
    """
    tilts = endplate_tilts(points, schema, visibility=visibility)
    l1 = tilts[:, _endplate_position(schema, "L1", "superior")]
    l5 = tilts[:, _endplate_position(schema, "L5", "inferior")]
    s1 = tilts[:, _endplate_position(schema, "S1", "superior")]
    return {"l1_l5_lordosis": wrap_angle(l5 - l1), "l1_s1_lordosis": wrap_angle(s1 - l1),
            "sacral_slope": s1}


def lumbar_parameters_or_nan(points: Tensor, schema: LandmarkSchema) -> dict[str, Tensor]:
    """:func:`lumbar_parameters`, or NaN for every parameter when the schema lacks an endplate."""
    try:
        return lumbar_parameters(points, schema)
    except KeyError:
        nan = torch.full((points.shape[0],), math.nan, dtype=points.dtype)
        return {name: nan.clone() for name in LUMBAR_PARAMETERS}


#: The endplates each of :data:`LUMBAR_PARAMETERS` is measured on.
LUMBAR_PARAMETER_ENDPLATES: dict[str, tuple[tuple[str, Side], ...]] = {
    "l1_l5_lordosis": (("L1", "superior"), ("L5", "inferior")),
    "l1_s1_lordosis": (("L1", "superior"), ("S1", "superior")),
    "sacral_slope": (("S1", "superior"),),
}


def defined_parameters(schema: LandmarkSchema) -> tuple[str, ...]:
    """The names of :data:`LUMBAR_PARAMETERS` whose endplates ``schema`` has, in order.

    Examples
    --------
    >>> from spinelandmarks.schema import LandmarkSchema
    >>> defined_parameters(LandmarkSchema.from_levels("c", ["C2", "C3"]))
    ()
    >>> defined_parameters(LUMBAR_SAGITTAL)
    ('l1_l5_lordosis', 'l1_s1_lordosis', 'sacral_slope')
    """
    return tuple(name for name in LUMBAR_PARAMETERS
                 if all(schema.has_endplate(*e) for e in LUMBAR_PARAMETER_ENDPLATES[name]))


def schema_parameters(points: Tensor, schema: LandmarkSchema,
                      visibility: Tensor | None = None) -> dict[str, Tensor]:
    """The lumbar parameters ``schema`` defines (:func:`defined_parameters`), and only those.

    What a pipeline reports: a schema without the lumbar endplates (cervical levels, one
    centre per level) gives an empty dict, not NaN figures or an error.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    dict[str, Tensor]
        Name -> (B,) degrees, defined as in :func:`lumbar_parameters`.
    """
    names = defined_parameters(schema)
    if not names:
        return {}
    tilts = endplate_tilts(points, schema, visibility=visibility)

    def tilt(level: str, side: Side) -> Tensor:
        return tilts[:, _endplate_position(schema, level, side)]

    out: dict[str, Tensor] = {}
    for name in names:
        plates = LUMBAR_PARAMETER_ENDPLATES[name]
        value = tilt(*plates[0]) if len(plates) == 1 else tilt(*plates[1]) - tilt(*plates[0])
        out[name] = wrap_angle(value)
    return out


def _superior_levels(schema: LandmarkSchema) -> list[str]:
    return [e.level for e in schema.endplates() if e.side == "superior"]


def segmental_angle_names(schema: LandmarkSchema) -> list[str]:
    """Names ``"<upper>-<lower>"`` of the columns of :func:`segmental_angles`, e.g. ``"L5-S1"``."""
    lv = _superior_levels(schema)
    return [f"{a}-{b}" for a, b in itertools.pairwise(lv)]


def segmental_angles(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                     visibility: Tensor | None = None) -> Tensor:
    """Segmental lordosis between the superior endplates of consecutive levels.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Schema of the points; every level with a superior endplate takes part (for
        ``LUMBAR_SAGITTAL``: L1 .. L5 and S1, giving L1-L2, ..., L5-S1).
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    Tensor, shape (B, K - 1)
        ``tilt(sup[k + 1]) - tilt(sup[k])`` in degrees (lordosis positive), K = number of levels
        with a superior endplate; column names from :func:`segmental_angle_names`.
    """
    tilts = endplate_tilts(points, schema, visibility=visibility)
    cols = [i for i, e in enumerate(schema.endplates()) if e.side == "superior"]
    sup = tilts[:, torch.tensor(cols, dtype=torch.long, device=tilts.device)]
    return wrap_angle(sup[:, 1:] - sup[:, :-1])
