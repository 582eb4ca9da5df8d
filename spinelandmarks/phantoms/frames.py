"""The patient frame (anterior +x, caudal +y, mm): affine helpers, endplates and vertebrae.

The column is a chain of endplates (:class:`_Plate`); :func:`_step` builds the next one from
a wedge angle and a height, so every endplate's tilt is known exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..schema import CORNERS
from .config import Array


def _unit(angle_rad: float) -> Array:
    return np.array([math.cos(angle_rad), math.sin(angle_rad)])


def _up(tilt_rad: float) -> Array:
    """Cranial normal of a plate with the given tilt (patient frame)."""
    return np.array([math.sin(tilt_rad), -math.cos(tilt_rad)])


def _frame(origin: Array, e_u: Array) -> Array:
    """2x3 affine from a local (u anterior, v caudal) frame in mm to the patient frame."""
    e = e_u / np.linalg.norm(e_u)
    ev = np.array([-e[1], e[0]])
    return np.array([[e[0], ev[0], origin[0]], [e[1], ev[1], origin[1]]])


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _apply(m: Array, pts: Array) -> Array:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _compose(a: Array, b: Array) -> Array:
    """Affine ``a o b`` (apply b first)."""
    lin = a[:, :2] @ b[:, :2]
    return np.concatenate([lin, (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]], axis=1)


@dataclass
class _Plate:
    """An endplate: posterior and anterior points and its tilt (patient frame, radians)."""

    p: Array
    a: Array
    tilt: float

    @property
    def mid(self) -> Array:
        return 0.5 * (self.p + self.a)

    @property
    def depth(self) -> float:
        return float(np.linalg.norm(self.a - self.p))


def _plate(mid: Array, tilt: float, depth: float) -> _Plate:
    e = _unit(tilt)
    return _Plate(mid - 0.5 * depth * e, mid + 0.5 * depth * e, tilt)


def _step(lower: _Plate, wedge_deg: float, height: float, depth: float, slip: float = 0.0,
          min_height: float = 1.0, up: bool = True) -> _Plate:
    """Next plate of the chain, ``height`` mm away along the bisector normal.

    Going up, the new plate's tilt is ``lower.tilt - wedge`` (a lordotic wedge, anterior
    taller, is positive); going down it is ``lower.tilt + wedge``. ``slip`` moves the new plate
    anteriorly along the old one (spondylolisthesis, sacral taper). The mid height is raised
    where needed so that both walls are at least ``min_height`` mm.
    """
    w = math.radians(wedge_deg)
    t1 = lower.tilt - w if up else lower.tilt + w
    tb = 0.5 * (lower.tilt + t1)
    half_diff = 0.5 * 0.5 * (lower.depth + depth) * abs(math.tan(w))
    h = max(height, min_height + half_diff)
    n = _up(tb) if up else -_up(tb)
    mid = lower.mid + h * n + slip * _unit(lower.tilt)
    return _plate(mid, t1, depth)


@dataclass
class _Vertebra:
    name: str
    inf: _Plate
    sup: _Plate

    @property
    def corners(self) -> Array:
        """(4, 2) in CORNERS order: AS, PS, PI, AI."""
        return np.stack([self.sup.a, self.sup.p, self.inf.p, self.inf.a])

    def local_frame(self) -> tuple[Array, float, float]:
        """Frame at the posterior-superior corner, posterior wall height, mean depth."""
        e = _unit(self.sup.tilt) + _unit(self.inf.tilt)
        fr = _frame(self.sup.p, e)
        h = float(np.linalg.norm(self.inf.p - self.sup.p))
        return fr, h, 0.5 * (self.sup.depth + self.inf.depth)



assert CORNERS == ("anterior_superior", "posterior_superior", "posterior_inferior",
                   "anterior_inferior")  # the corner order used by _Vertebra.corners
