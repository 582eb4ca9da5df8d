"""Hand-built lumbar spines with known angles and sizes, shared by the metric and evaluation tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spinelandmarks.schema import LUMBAR_SAGITTAL as S

#: Width of the image the spines are drawn in (``face = -1`` mirrors about it), pixels.
IMG_W = 512.0


def dirs(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors for a patient facing right (anterior = +x), y down.

    ``u`` runs posterior -> anterior along an endplate with the given tilt (positive: anterior end
    lower); ``v`` runs superior -> inferior along the walls, perpendicular to ``u``.
    """
    t = math.radians(tilt_deg)
    return np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])


def spine_points(tilts: Sequence[float] = (-12.0, -6.0, 0.0, 6.0, 12.0), s1_tilt: float = 40.0,
                 widths: Sequence[float] | float = 40.0, heights: Sequence[float] | float = 30.0,
                 s1_width: float = 36.0, face: int = 1) -> np.ndarray:
    """(22, 2) float64 spine of rotated rectangles (W x H); both endplates of L_i tilt tilts[i].

    ``face = -1`` mirrors x (patient facing left); names are unchanged.
    """
    w = [float(widths)] * 5 if isinstance(widths, (int, float)) else list(widths)
    h = [float(heights)] * 5 if isinstance(heights, (int, float)) else list(heights)
    pts = np.zeros((22, 2))
    for i in range(5):
        c = np.array([250.0 + 5 * i, 80.0 + 45.0 * i])
        u, v = dirs(tilts[i])
        corners = {"anterior_superior": c + w[i] / 2 * u - h[i] / 2 * v,
                   "posterior_superior": c - w[i] / 2 * u - h[i] / 2 * v,
                   "posterior_inferior": c - w[i] / 2 * u + h[i] / 2 * v,
                   "anterior_inferior": c + w[i] / 2 * u + h[i] / 2 * v}
        for name, xy in corners.items():
            pts[S.index(f"L{i + 1}", name)] = xy
    c = np.array([260.0, 80.0 + 45.0 * 5 + 10.0])
    u, _ = dirs(s1_tilt)
    pts[S.index("S1", "anterior_superior")] = c + s1_width / 2 * u
    pts[S.index("S1", "posterior_superior")] = c - s1_width / 2 * u
    if face < 0:
        pts[:, 0] = IMG_W - pts[:, 0]
    return pts
