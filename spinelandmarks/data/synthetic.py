"""Synthetic lateral lumbar radiographs with exact ground truth.

The generator draws a lumbar spine from clinical ranges (sacral slope, L1-S1 lordosis,
vertebral size and wedging, disc degeneration, compression fractures, spondylolisthesis,
implants), builds it as a chain of endplates from the sacrum upward, renders it with the
surrounding anatomy (posterior elements, sacrum, ilia, femoral heads, lower ribs, soft tissue,
bowel gas, aortic calcification) as a projected attenuation map, and turns that into a
processed radiograph (exposure, blur, quantum noise, scatter haze, gamma, collimation).
Everything is numpy: shapes are signed-distance functions evaluated on pixel grids restricted
to their bounding boxes, so a 1024 px image takes a fraction of a second.

Geometry and ground truth
-------------------------
The column is built in a *patient frame* in millimetres (anterior to +x, caudal to +y, origin
at the middle of the S1 superior endplate). Each step from one endplate to the next turns the
endplate by a known wedge angle, so the tilt of every endplate is known exactly; the
L1-S1 lordosis is the sum of the disc and body wedges from S1 up to L1. The patient frame is
then mapped to the image by a similarity transform (mirror for a patient facing left,
rotation ``rotation_deg`` about the image centre, scale ``1 / pixel_spacing``, shift).

Ground-truth points are the *nominal anatomical corners* of each vertebral body: the vertex
where the endplate line meets the anterior or posterior wall line. The drawn body has rounded
corners (radius ``corner_radius_mm``) and slightly concave endplates and anterior wall, so the
rounded bony rim passes ``r (1 / sin(theta / 2) - 1)`` inside the vertex (about 0.4 mm for
``r = 1 mm`` and a right angle), which is below the annotation precision of the reference
study. S1 carries its two superior corners (the sacral plate).

The angles saved in ``record.meta["synthetic"]`` (``sacral_slope_deg``,
``l1_s1_lordosis_deg``, ``l1_l5_lordosis_deg``) are **computed from the final corner
coordinates in image axes** with the formulas of CONVENTIONS section 4 (also for corners
that fell outside the field of view and are therefore absent from the record), so they match
what a user recomputes from the record exactly. The drawn anatomical values are saved too:
lordosis is invariant to the field-of-view rotation, and
``sacral_slope_deg = sacral_slope_anatomical_deg + facing_sign * rotation_deg`` where
``facing_sign`` is +1 for a patient facing right (anterior to +x) and -1 for facing left.

Example
-------
>>> from spinelandmarks.data.synthetic import PhantomConfig, generate_phantom
>>> img, rec = generate_phantom(7, PhantomConfig(long_side=256))
>>> img.shape, img.dtype, rec.points.shape
((256, 205), dtype('float32'), (22, 2))
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from ..schema import CORNERS, LUMBAR_SAGITTAL
from .annotations import ImageRecord

__all__ = ["PhantomConfig", "generate_dataset", "generate_phantom"]

_LUMBAR = ("L1", "L2", "L3", "L4", "L5")
#: Levels built above S1, caudal to cranial (T12 and T11 are drawn, not annotated).
_CHAIN = ("L5", "L4", "L3", "L2", "L1", "T12", "T11")
_GENANT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.55)}

Array = np.ndarray
SeedLike = int | np.random.Generator | np.random.SeedSequence


@dataclass
class PhantomConfig:
    """Parameters of the synthetic radiograph generator.

    Attributes
    ----------
    long_side : int
        Image height in pixels (portrait images; the long side).
    aspect : float
        Width / height; the width is ``round(long_side * aspect)``.
    pixel_spacing_mm : float or None
        Fixed pixel spacing in mm/px. ``None`` (default): the field of view height is drawn
        from ``fov_height_mm`` and the spacing is ``fov / long_side`` (about 0.3 mm/px at
        1024 px, i.e. a 0.2 mm/px detector image resized to the output size).
    fov_height_mm : (float, float)
        Range of the field-of-view height, mm.
    sacral_slope_deg, lordosis_deg : (float, float)
        Clinical ranges of the anatomical sacral slope and L1-S1 lordosis, degrees.
    size_scale : (float, float)
        Range of the patient size factor applied to every dimension (lumbar body depth
        about 35-45 mm, height 25-30 mm, discs 8-12 mm at scale 1).
    max_rotation_deg : float
        Field-of-view rotation is uniform in +-this, degrees.
    max_shift_frac : float
        Spine centre offset from the image centre, fraction of the image size.
    p_crop : float
        Probability of a larger offset that may push vertebrae out of the field of view.
    p_facing_left, p_fracture, p_listhesis, p_implants : float
        Probabilities per image of a patient facing left (image x mirrored), of one or two
        vertebral compression fractures, of a spondylolisthesis (L4 or L5), of metal implants
        (pedicle screws, rods, interbody cages).
    p_disc_degeneration : float
        Probability per lumbar disc of height loss (30-65 %).
    p_osteophytes, p_aortic_calcification, p_collimation : float
        Probabilities per image of anterior osteophytes, a calcified aorta and visible
        collimator edges.
    bowel_gas : (int, int)
        Range of the number of bowel-gas blobs.
    noise : (float, float)
        Range of the quantum-noise level (attenuation units at zero attenuation).
    blur_mm : (float, float)
        Range of the Gaussian system blur sigma, mm (at least 0.35 px is applied).
    scatter : (float, float)
        Range of the scatter-haze fraction.
    gamma : (float, float)
        Range of the display gamma.
    """

    long_side: int = 1024
    aspect: float = 0.8
    pixel_spacing_mm: float | None = None
    fov_height_mm: tuple[float, float] = (260.0, 330.0)
    sacral_slope_deg: tuple[float, float] = (25.0, 55.0)
    lordosis_deg: tuple[float, float] = (20.0, 70.0)
    size_scale: tuple[float, float] = (0.88, 1.12)
    max_rotation_deg: float = 5.0
    max_shift_frac: float = 0.06
    p_crop: float = 0.06
    p_facing_left: float = 0.5
    p_fracture: float = 0.15
    p_listhesis: float = 0.12
    p_implants: float = 0.08
    p_disc_degeneration: float = 0.2
    p_osteophytes: float = 0.25
    p_aortic_calcification: float = 0.25
    p_collimation: float = 0.5
    bowel_gas: tuple[int, int] = (3, 14)
    noise: tuple[float, float] = (0.01, 0.04)
    blur_mm: tuple[float, float] = (0.15, 0.45)
    scatter: tuple[float, float] = (0.0, 0.25)
    gamma: tuple[float, float] = (0.75, 1.35)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (H, W) in pixels."""
        return int(self.long_side), max(8, round(self.long_side * self.aspect))


# ------------------------------------------------------------------------------------------
# small geometry helpers (patient frame: anterior +x, caudal +y, mm)
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# signed distance functions (local coordinates u, v in mm; negative inside)
# ------------------------------------------------------------------------------------------
def _orient(poly: Array) -> Array:
    x, y = poly[:, 0], poly[:, 1]
    area = float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    return poly if area > 0 else poly[::-1].copy()


def _shrink(poly: Array, r: float) -> Array:
    """Offset a positively oriented convex polygon inward by ``r`` (miter joins)."""
    if r <= 0:
        return poly
    d = np.roll(poly, -1, axis=0) - poly
    n = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    n_prev = np.roll(n, 1, axis=0)
    denom = 1.0 + np.sum(n * n_prev, axis=1, keepdims=True)
    return poly + r * (n + n_prev) / np.maximum(denom, 0.2)


def _sd_convex(u: Array, v: Array, poly: Array, r: float = 0.0,
               concave: Sequence[tuple[int, float]] = (), band: float = 1.0) -> Array:
    """Signed distance (mm) to a convex polygon with corners rounded by ``r``.

    The distance is exact inside and within ``band`` mm outside the rounded outline; farther
    out a lower bound (larger than ``band``) is returned, which is all rendering needs.
    ``concave`` lists ``(edge index, depth mm)``: the boundary of that edge (from vertex i to
    i + 1 of the positively oriented polygon) is pushed inward by ``depth * sin(pi t)``.
    """
    poly = _orient(np.asarray(poly, dtype=np.float64))
    core = _shrink(poly, r)
    k = len(core)
    inside = np.full(u.shape, np.inf, dtype=np.float32)
    for i in range(k):
        a, b = core[i], core[(i + 1) % k]
        dx, dy = b[0] - a[0], b[1] - a[1]
        ln = math.hypot(dx, dy)
        if ln < 1e-9:
            continue
        np.minimum(inside, (dx / ln) * (v - a[1]) - (dy / ln) * (u - a[0]), out=inside)
    sd = -inside
    # exact distance to the core outline only where it matters (near the rounded corners)
    near = (inside < 0) & (inside > -(r + band))
    if near.any():
        pu0, pv0 = u[near], v[near]
        best = np.full(pu0.shape, np.inf, dtype=np.float32)
        for i in range(k):
            a, b = core[i], core[(i + 1) % k]
            dx, dy = b[0] - a[0], b[1] - a[1]
            pu, pv = pu0 - a[0], pv0 - a[1]
            t = np.clip((pu * dx + pv * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
            np.minimum(best, np.hypot(pu - t * dx, pv - t * dy), out=best)
        sd[near] = best
    sd -= r
    for i, depth in concave:
        a, b = poly[i], poly[(i + 1) % len(poly)]
        dx, dy = b[0] - a[0], b[1] - a[1]
        ln = math.hypot(dx, dy)
        pu, pv = u - a[0], v - a[1]
        t = np.clip((pu * dx + pv * dy) / (ln * ln), 0.0, 1.0)
        d_in = (dx * pv - dy * pu) / ln
        reach = max(3.0 * depth, 6.0)
        sd += depth * np.sin(np.pi * t) * np.clip(1.0 - d_in / reach, 0.0, 1.0)
    return sd.astype(np.float32, copy=False)


def _sd_ellipse(u: Array, v: Array, a: float, b: float) -> Array:
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return ((q - 1.0) * min(a, b)).astype(np.float32)


def _bezier(p0: Array, p1: Array, p2: Array, n: int = 12) -> Array:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


# ------------------------------------------------------------------------------------------
# canvas: attenuation maps in image pixels, shapes defined in local mm frames
# ------------------------------------------------------------------------------------------
class _Canvas:
    def __init__(self, shape: tuple[int, int], to_img: Array, spacing: float, tex: Array) -> None:
        self.h, self.w = shape
        self.att = np.zeros(shape, np.float32)
        self.metal = np.zeros(shape, np.float32)
        self.to_img = to_img
        self.aa = spacing  # one pixel in mm
        self.tex = tex

    def region(self, frame: Array, bbox: tuple[float, float, float, float]
               ) -> tuple[slice, slice, Array, Array] | None:
        """Pixel window covering a local bbox and the local (u, v) mm of its pixel centres."""
        m = _compose(self.to_img, frame)
        u0, v0, u1, v1 = bbox
        c = _apply(m, np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]))
        x0 = max(math.floor(c[:, 0].min()) - 1, 0)
        x1 = min(math.ceil(c[:, 0].max()) + 1, self.w)
        y0 = max(math.floor(c[:, 1].min()) - 1, 0)
        y1 = min(math.ceil(c[:, 1].max()) + 1, self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        inv = np.linalg.inv(m[:, :2])
        off = -inv @ m[:, 2]
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :]
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None]
        u = (inv[0, 0] * xs + inv[0, 1] * ys + off[0]).astype(np.float32)
        v = (inv[1, 0] * xs + inv[1, 1] * ys + off[1]).astype(np.float32)
        return slice(y0, y1), slice(x0, x1), u, v

    def shape(self, frame: Array, bbox: tuple[float, float, float, float],
              sdf: Callable[[Array, Array], Array], dens: float, cortex: float = 0.0,
              rim_mm: float = 1.0, texture: float = 0.0, edge_mm: float = 0.0,
              target: Literal["att", "metal"] = "att") -> None:
        """Add a shape: ``dens`` inside (textured), plus a cortical rim ``cortex`` wide ``rim_mm``."""
        reg = self.region(frame, bbox)
        if reg is None:
            return
        ys, xs, u, v = reg
        self.paint(ys, xs, sdf(u, v), dens, cortex, rim_mm, texture, edge_mm, target)

    def paint(self, ys: slice, xs: slice, sd: Array, dens: float, cortex: float = 0.0,
              rim_mm: float = 1.0, texture: float = 0.0, edge_mm: float = 0.0,
              target: Literal["att", "metal"] = "att") -> None:
        """Add the intensity of a signed-distance field (mm) to a pixel window."""
        soft = max(self.aa, edge_mm)
        fill = np.clip(0.5 - sd / soft, 0.0, 1.0)
        val = fill * dens
        if texture:
            val = val * (1.0 + texture * self.tex[ys, xs])
        if cortex:
            depth = np.maximum(-sd, 0.0)
            val = val + cortex * fill * np.exp(-depth / max(rim_mm, 0.5 * self.aa))
        out = self.att if target == "att" else self.metal
        out[ys, xs] += val.astype(np.float32, copy=False)

    def tube(self, pts: Array, radius: Array | float, dens: float, cortex: float = 0.0,
             rim_mm: float = 1.0, target: Literal["att", "metal"] = "att") -> None:
        """A polyline (patient mm) thickened by a per-vertex radius."""
        pts = np.asarray(pts, dtype=np.float64)
        rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(pts),))
        pad = float(rad.max()) + 2.0 * self.aa + 1.0
        reg = self.region(_IDENTITY, _poly_bbox(pts, pad))
        if reg is None:
            return
        ys, xs, u, v = reg
        sd = np.full(u.shape, np.inf, dtype=np.float32)
        for i in range(len(pts) - 1):
            a, b = pts[i], pts[i + 1]
            seg = self.region(_IDENTITY, _poly_bbox(np.stack([a, b]), pad))
            if seg is None:
                continue
            sy = slice(max(seg[0].start, ys.start) - ys.start,
                       min(seg[0].stop, ys.stop) - ys.start)
            sx = slice(max(seg[1].start, xs.start) - xs.start,
                       min(seg[1].stop, xs.stop) - xs.start)
            if sy.stop <= sy.start or sx.stop <= sx.start:
                continue
            uu, vv = u[sy, sx], v[sy, sx]
            dx, dy = b[0] - a[0], b[1] - a[1]
            ln2 = max(dx * dx + dy * dy, 1e-9)
            pu, pv = uu - a[0], vv - a[1]
            t = np.clip((pu * dx + pv * dy) / ln2, 0.0, 1.0)
            d = np.hypot(pu - t * dx, pv - t * dy) - (rad[i] + t * (rad[i + 1] - rad[i]))
            np.minimum(sd[sy, sx], d, out=sd[sy, sx])
        self.paint(ys, xs, sd, dens, cortex, rim_mm, target=target)


def _poly_bbox(poly: Array, margin: float) -> tuple[float, float, float, float]:
    return (float(poly[:, 0].min() - margin), float(poly[:, 1].min() - margin),
            float(poly[:, 0].max() + margin), float(poly[:, 1].max() + margin))


def _draw_poly(cv: _Canvas, frame: Array, poly: Array, r: float, dens: float, cortex: float,
               rim_mm: float = 1.0, texture: float = 0.0,
               concave: Sequence[tuple[int, float]] = (),
               target: Literal["att", "metal"] = "att") -> None:
    poly = np.asarray(poly, dtype=np.float64)
    cv.shape(frame, _poly_bbox(poly, 2.0),
             lambda u, v: _sd_convex(u, v, poly, r, concave), dens, cortex, rim_mm, texture,
             target=target)


def _draw_ellipse(cv: _Canvas, center: Array, angle: float, a: float, b: float, dens: float,
                  cortex: float = 0.0, rim_mm: float = 1.0, texture: float = 0.0,
                  edge_mm: float = 0.0) -> None:
    fr = _frame(np.asarray(center, dtype=np.float64), _unit(angle))
    m = max(a, b) + 2.0 + edge_mm
    cv.shape(fr, (-m, -m, m, m), lambda u, v: _sd_ellipse(u, v, a, b), dens, cortex, rim_mm,
             texture, edge_mm)


def _draw_tube(cv: _Canvas, pts: Array, radius: Array | float, dens: float,
               cortex: float = 0.0, rim_mm: float = 1.0,
               target: Literal["att", "metal"] = "att") -> None:
    cv.tube(pts, radius, dens, cortex, rim_mm, target)


# ------------------------------------------------------------------------------------------
# anatomy
# ------------------------------------------------------------------------------------------
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


def _draw_body(cv: _Canvas, vb: _Vertebra, dens: float, cortex: float, r: float,
               concave_sup: float, concave_inf: float, concave_ant: float,
               texture: float) -> None:
    # polygon PS, AS, AI, PI (edges: superior, anterior, inferior, posterior)
    poly = np.stack([vb.sup.p, vb.sup.a, vb.inf.a, vb.inf.p])
    oriented = _orient(poly)
    flipped = oriented[0, 0] != poly[0, 0] or oriented[0, 1] != poly[0, 1]
    # edge indices in the oriented polygon
    edges = {"sup": 0, "ant": 1, "inf": 2, "post": 3}
    if flipped:  # reversed order PI, AI, AS, PS -> edges inf, ant, sup, post
        edges = {"inf": 0, "ant": 1, "sup": 2, "post": 3}
    conc = [(edges["sup"], concave_sup), (edges["inf"], concave_inf),
            (edges["ant"], concave_ant), (edges["post"], 0.4)]
    _draw_poly(cv, _IDENTITY, oriented, r, dens, cortex, rim_mm=1.1, texture=texture,
               concave=conc)


def _draw_posterior(cv: _Canvas, vb: _Vertebra, sc: float, dens: float, spinous_mm: float,
                    sacral: bool = False) -> None:
    fr, h, _ = vb.local_frame()
    k = dens
    # pedicle
    _draw_poly(cv, fr, np.array([[1.5, 0.12 * h], [1.5, 0.55 * h], [-15 * sc, 0.5 * h],
                                 [-15 * sc, 0.14 * h]]), 2.0, 0.14 * k, 0.16 * k)
    # articular pillar: superior articular process above, inferior process below
    low = 0.7 if sacral else 1.18
    _draw_poly(cv, fr, np.array([[-11 * sc, -0.33 * h], [-19 * sc, -0.42 * h],
                                 [-28 * sc, (low - 0.1) * h], [-18 * sc, low * h]]),
               3.0, 0.16 * k, 0.16 * k, rim_mm=1.5)
    # transverse process (faint, superimposed)
    _draw_ellipse(cv, _apply(fr, np.array([-10 * sc, 0.35 * h])), 0.0, 9 * sc, 5 * sc,
                  0.08 * k, edge_mm=1.5)
    if sacral:
        return
    # spinous process and its bulbous tip
    L = spinous_mm
    _draw_poly(cv, fr, np.array([[-20 * sc, 0.25 * h], [-22 * sc, 0.88 * h],
                                 [-L, 0.95 * h], [-L + 4 * sc, 0.45 * h]]), 4.0, 0.09 * k,
               0.1 * k, rim_mm=1.5)


def _genant_grade(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))


# ------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------
def _as_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _tilt_img(p: Array, a: Array, facing: int) -> float:
    return math.degrees(math.atan2(a[1] - p[1], facing * (a[0] - p[0])))


def generate_phantom(rng_or_seed: SeedLike, config: PhantomConfig | None = None, *,
                     file_name: str | None = None, image_id: int = 0,
                     patient_id: str | None = None) -> tuple[np.ndarray, ImageRecord]:
    """Generate one synthetic lateral lumbar radiograph and its ground truth.

    Parameters
    ----------
    rng_or_seed : int, numpy Generator or SeedSequence
        Source of randomness; the same seed gives the same image and record.
    config : PhantomConfig, optional
        Generator settings; default ``PhantomConfig()`` (1024 x 819 px).
    file_name : str, optional
        ``record.file_name``; default ``"<patient_id>.png"``.
    image_id : int
        ``record.image_id``.
    patient_id : str, optional
        Default ``"synth-NNNNNN"`` from an integer seed, else drawn from the generator.

    Returns
    -------
    image : np.ndarray
        (H, W) float32 in ``[0, 1]``, bone bright.
    record : ImageRecord
        Points of ``LUMBAR_SAGITTAL`` in pixels (NaN and ``v = 0`` outside the field of view
        or behind the collimator, ``v = 1`` under metal, else ``v = 2``), ``pixel_spacing``
        (row_mm, col_mm), ``patient_id`` and ``meta["synthetic"]``: the generating parameters
        (angles in degrees, lengths in mm; see the module docstring for their frame).
    """
    cfg = config or PhantomConfig()
    rng = _as_rng(rng_or_seed)
    H, W = cfg.shape
    U = rng.uniform

    # ---------------- global draws ----------------
    facing = -1 if rng.random() < cfg.p_facing_left else 1
    sc = float(U(*cfg.size_scale))
    spacing = float(cfg.pixel_spacing_mm or U(*cfg.fov_height_mm) / H)
    ss_lo, ss_hi = cfg.sacral_slope_deg
    ss = float(np.clip(rng.normal(0.5 * (ss_lo + ss_hi), (ss_hi - ss_lo) / 4), ss_lo, ss_hi))
    ll_lo, ll_hi = cfg.lordosis_deg
    ll_draw = float(np.clip(rng.normal(ss + 13.0, 8.0), ll_lo, ll_hi))
    density = float(U(0.55, 1.1))  # bone mineral density factor (osteoporosis < 0.75)
    age_deg = rng.random()  # degenerative burden

    # fractures: Genant grade and type per level
    fractures: dict[str, int] = {}
    fracture_type: dict[str, str] = {}
    fracture_loss: dict[str, float] = {}
    if rng.random() < cfg.p_fracture:
        n_fx = 1 if rng.random() < 0.8 else 2
        levels = rng.choice(list(_LUMBAR), size=n_fx, replace=False,
                            p=[0.36, 0.26, 0.16, 0.12, 0.10])
        for lv in sorted(str(x) for x in levels):
            g = _genant_grade(rng)
            fractures[lv] = g
            fracture_type[lv] = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.6, 0.25,
                                                                                    0.15]))
            fracture_loss[lv] = float(U(*_GENANT_LOSS[g]))
    # spondylolisthesis
    listhesis: dict[str, dict[str, float | int]] = {}
    if rng.random() < cfg.p_listhesis:
        lv = "L4" if rng.random() < 0.55 else "L5"
        grade = 1 if rng.random() < 0.75 else 2
        frac = float(U(0.06, 0.25) if grade == 1 else U(0.25, 0.42))
        listhesis[lv] = {"grade": grade, "slip_fraction": frac}
    # disc heights (mm, mid-disc), degeneration
    disc_names = ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1", "T11-T12"]
    disc_base = np.array([10.5, 11.5, 10.5, 9.5, 8.5, 7.0, 6.0]) * sc
    disc_h = disc_base * U(0.9, 1.1, size=7)
    degen: dict[str, float] = {}
    for i in range(5):
        p = cfg.p_disc_degeneration * (1.6 if i < 2 else 0.8) * (0.5 + age_deg)
        if rng.random() < p:
            loss = float(U(0.3, 0.65))
            disc_h[i] *= 1.0 - loss
            degen[disc_names[i]] = loss
    # bodies: depth and posterior-wall height (mm), caudal to cranial L5..T11
    depth = np.array([42, 41, 40, 38, 36, 34, 32], float) * sc * U(0.96, 1.04, size=7)
    height = np.array([27, 28, 28, 27, 26, 24, 23], float) * sc * U(0.95, 1.05, size=7)
    d_s1 = 44.0 * sc * float(U(0.95, 1.05))

    # ---------------- lordosis distribution over the 10 segments S1 -> L1 ----------------
    # segment order: disc L5-S1, body L5, disc L4-L5, body L4, ..., disc L1-L2, body L1
    seg_names = []
    for i, lv in enumerate(_CHAIN[:5]):
        seg_names += [f"disc {disc_names[i]}", f"body {lv}"]
    wedge = np.zeros(10)
    fixed = np.zeros(10, bool)
    body_h = {lv: float(height[i]) for i, lv in enumerate(_CHAIN)}
    concavity = {lv: float(U(0.6, 1.3)) * sc for lv in _CHAIN}
    for i, lv in enumerate(_CHAIN[:5]):
        j = 2 * i + 1
        if lv in fractures:
            loss, kind = fracture_loss[lv], fracture_type[lv]
            hb = body_h[lv]
            if kind == "wedge":
                wedge[j] = -math.degrees(math.atan(loss * hb / depth[i]))
                body_h[lv] = hb * (1 - 0.5 * loss)  # mid height
            elif kind == "crush":
                wedge[j] = -math.degrees(math.atan(0.25 * loss * hb / depth[i]))
                body_h[lv] = hb * (1 - loss)
            else:  # biconcave: central endplates depressed, walls intact
                wedge[j] = float(rng.normal(0.0, 1.0))
                concavity[lv] = 0.5 * loss * hb
            fixed[j] = True
        elif lv == "L1":
            wedge[j], fixed[j] = float(rng.normal(-2.0, 1.5)), True
        elif lv == "L2":
            wedge[j], fixed[j] = float(rng.normal(-1.0, 1.5)), True
    base = np.array([0.30, 0.12, 0.22, 0.06, 0.14, 0.03, 0.08, 0.0, 0.05, 0.0])
    remaining = float(np.clip(ll_draw - wedge[fixed].sum(), 10.0, 78.0))
    alpha = np.where(fixed, 0.0, base)
    free = alpha > 0
    weights = np.zeros(10)
    weights[free] = rng.dirichlet(alpha[free] * 40.0)
    wedge[free] = remaining * weights[free]
    ll_anat = float(wedge.sum())

    # ---------------- chain: S1 plate, then up to T11 ----------------
    s1 = _plate(np.zeros(2), math.radians(ss), d_s1)
    plates_inf: dict[str, _Plate] = {}
    vertebrae: dict[str, _Vertebra] = {}
    below = s1
    slips_mm: dict[str, float] = {}
    for i, lv in enumerate(_CHAIN):
        w_disc = wedge[2 * i] if i < 5 else float(rng.normal(0.0 if i == 5 else -1.0, 1.5))
        w_body = wedge[2 * i + 1] if i < 5 else float(rng.normal(-3.0, 1.5))
        slip = 0.0
        if lv in listhesis:
            slip = float(listhesis[lv]["slip_fraction"]) * below.depth
            slips_mm[lv] = slip
        d_inf = depth[i] * float(U(1.0, 1.04))
        inf = _step(below, w_disc, disc_h[i], d_inf, slip=slip, min_height=1.2 * sc)
        sup = _step(inf, w_body, body_h[lv], depth[i], min_height=10.0 * sc)
        plates_inf[lv] = inf
        vertebrae[lv] = _Vertebra(lv, inf, sup)
        below = sup
    for lv, info in listhesis.items():
        info["slip_mm"] = round(slips_mm[lv], 4)

    # sacrum segments S1..S5 going down (kyphotic wedges, anterior edges aligned)
    sac_h = np.array([28, 23, 19, 15, 11], float) * sc
    sac_d = d_s1 * np.array([1.0, 0.78, 0.62, 0.48, 0.36])
    sac_w = np.array([5, 9, 12, 13, 12], float) * U(0.6, 1.4)
    sacrum: list[_Vertebra] = []
    top = s1
    for k in range(5):
        d_bot = sac_d[k] * (0.97 if k == 0 else 1.0)
        bot = _step(top, sac_w[k], sac_h[k], d_bot, slip=0.5 * (top.depth - d_bot), up=False)
        sacrum.append(_Vertebra(f"S{k + 1}", inf=bot, sup=top))
        nxt_d = sac_d[k + 1] if k < 4 else d_bot
        top = _step(bot, 0.0, 1.0 * sc, nxt_d, slip=0.5 * (bot.depth - nxt_d), up=False)

    # pelvis: femoral heads from pelvic incidence, in the S1 frame
    pt = float(np.clip(rng.normal(13.0, 6.0), -5.0, 35.0))
    pi_deg = ss + pt
    s1_frame = _frame(s1.mid, _unit(s1.tilt))
    hip_dist = 105.0 * sc * float(U(0.93, 1.07))
    hip_local = hip_dist * np.array([math.sin(math.radians(pi_deg)),
                                     math.cos(math.radians(pi_deg))])
    hip = _apply(s1_frame, hip_local)

    # ---------------- image transform ----------------
    gt_patient = np.concatenate([vertebrae[lv].corners for lv in _LUMBAR]
                                + [np.stack([s1.a, s1.p])])
    center_mm = gt_patient.mean(axis=0) + np.array([U(-10, 15), 0.0])
    rot = float(U(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    shift = U(-cfg.max_shift_frac, cfg.max_shift_frac, size=2) * np.array([W, H])
    cropped = bool(rng.random() < cfg.p_crop)
    if cropped:
        ang = U(0, 2 * math.pi)
        shift = shift + U(0.08, 0.2) * np.array([math.cos(ang) * W, math.sin(ang) * H])
    r = math.radians(rot)
    rmat = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    lin = rmat @ np.diag([float(facing), 1.0]) / spacing
    c_img = np.array([W / 2.0, H / 2.0]) + shift
    to_img = np.concatenate([lin, (c_img - lin @ center_mm)[:, None]], axis=1)

    # textures (trabecular: vertical struts)
    tex = rng.standard_normal((H, W)).astype(np.float32)
    tex = ndimage.gaussian_filter(tex, sigma=(max(1.0 / spacing, 0.5), max(0.45 / spacing, 0.5)))
    tex /= float(tex[:: max(H // 64, 1), :: max(W // 64, 1)].std()) + 1e-6
    cv = _Canvas((H, W), to_img, spacing, tex)

    # ---------------- bones ----------------
    corner_r = 1.0 * sc
    bd = 0.3 * density  # cancellous level
    cort = 0.45 * (0.6 + 0.4 * density)
    trab = float(U(0.15, 0.35))
    for lv in _CHAIN:
        vb = vertebrae[lv]
        c = concavity[lv]
        _draw_body(cv, vb, bd, cort, corner_r, c, c, float(U(0.8, 2.0)) * sc, trab)
        sp = (40.0 if lv == "L5" else 52.0 if lv in ("L4", "L1", "T12", "T11") else 55.0) * sc
        _draw_posterior(cv, vb, sc, 1.0, sp)
    # osteophytes (anterior lipping)
    osteo: list[str] = []
    if rng.random() < cfg.p_osteophytes * (0.5 + age_deg):
        for lv in _LUMBAR:
            if rng.random() < 0.5:
                vb = vertebrae[lv]
                osteo.append(lv)
                for corner, other in ((vb.sup.a, vb.sup.p), (vb.inf.a, vb.inf.p)):
                    out = corner - other
                    out /= np.linalg.norm(out)
                    vert = (vb.sup.a - vb.inf.a) if corner is vb.sup.a else \
                        (vb.inf.a - vb.sup.a)
                    vert /= np.linalg.norm(vert)
                    ln = float(U(1.5, 4.0)) * sc
                    tip = corner + ln * (0.7 * out + 0.7 * vert)
                    _draw_tube(cv, np.stack([corner - 2.0 * out - 1.0 * vert, tip]),
                               np.array([1.8, 0.5]) * sc, 0.18, 0.12)
    # sacrum: segment bodies, dorsal plate, ala, S1 posterior elements
    for k, seg in enumerate(sacrum):
        _draw_body(cv, seg, bd * (1.0 - 0.08 * k), cort * (1.0 if k == 0 else 0.7), corner_r,
                   0.5 if k else concavity["L5"], 0.4, 0.5, trab)
    for k in range(4):  # fused remnant discs: bone bridges between the sacral segments
        a_, b_ = sacrum[k].inf, sacrum[k + 1].sup
        _draw_poly(cv, _IDENTITY, np.stack([a_.p, a_.a, b_.a, b_.p]), 0.0, 0.6 * bd, 0.0)
    _draw_posterior(cv, sacrum[0], sc, 1.0, 0.0, sacral=True)
    dorsal = [seg.sup.p + (seg.sup.p - seg.sup.a) / seg.sup.depth * (14.0 - 2.0 * k) * sc
              for k, seg in enumerate(sacrum)]
    dorsal.append(sacrum[-1].inf.p - 4.0 * sc * _unit(sacrum[-1].inf.tilt))
    _draw_tube(cv, np.stack(dorsal), np.linspace(7.0, 3.0, len(dorsal)) * sc, 0.22, 0.18)
    _draw_ellipse(cv, _apply(s1_frame, np.array([0.1 * d_s1, 0.45 * sac_h[0]])),
                  s1.tilt, 0.55 * d_s1, 0.45 * sac_h[0], 0.1, edge_mm=4.0)
    # coccyx
    cocc_dir = _unit(sacrum[-1].inf.tilt + math.pi / 2 - math.radians(20))
    c0 = sacrum[-1].inf.mid + 3.0 * sc * cocc_dir
    _draw_tube(cv, np.stack([c0, c0 + 22.0 * sc * cocc_dir]), np.array([5.0, 2.5]) * sc,
               0.18, 0.1)

    # ilia (left and right, slightly offset / magnified), femoral heads
    ref_rot = math.radians(40.0)  # landmarks were designed for a 40 deg sacral slope
    rr = np.array([[math.cos(ref_rot), math.sin(ref_rot)],
                   [-math.sin(ref_rot), math.cos(ref_rot)]])
    ilium_ref = np.array([[-48, 28], [-53, -6], [-38, -34], [-12, -50], [22, -44], [50, -24],
                          [60, -4], [60, 18], [0, 0], [-2, 70], [-32, 52]], float)
    crest_ref = np.array([[-48, 26], [-53, -6], [-38, -34], [-12, -50], [22, -44], [50, -24],
                          [60, -4]], float)
    ipl_ref = np.array([[22, 2], [30, 25], [0, 0]], float)
    head_r = 24.0 * sc * float(U(0.95, 1.05))
    for side in range(2):
        off = rng.normal(0.0, 4.0, size=2) * sc
        mag = 1.0 + 0.04 * side
        pts_local = (ilium_ref * sc * mag) @ rr.T
        pts_local[8] = hip_local + np.array([0.0, -head_r - 6.0 * sc])
        crest = (crest_ref * sc * mag) @ rr.T
        ipl = (ipl_ref * sc * mag) @ rr.T
        ipl[2] = hip_local + np.array([-0.7, -0.7]) * head_r
        fr = s1_frame.copy()
        fr[:, 2] += off
        try:
            from scipy.spatial import ConvexHull
            hull = pts_local[ConvexHull(pts_local).vertices]
        except Exception:  # pragma: no cover - degenerate hull
            hull = pts_local
        def wing(u: Array, v: Array, q: Array = hull) -> Array:
            return _sd_convex(u, v, q, 10.0 * sc, band=4.0)

        cv.shape(fr, _poly_bbox(hull, 6.0), wing, 0.07, 0.04, rim_mm=3.0, edge_mm=3.0)
        _draw_tube(cv, _apply(fr, _bezier(crest[0], crest[3], crest[-1], 16)),
                   np.linspace(3.0, 5.0, 16) * sc, 0.07, 0.1, rim_mm=2.5)
        _draw_tube(cv, _apply(fr, _bezier(ipl[0], ipl[1], ipl[2])), 1.0 * sc, 0.06, 0.03)
        h_c = _apply(fr, hip_local * mag)
        _draw_ellipse(cv, h_c, 0.0, head_r * mag, head_r * mag, 0.35, 0.3, rim_mm=2.0,
                      texture=0.2)
        neck_dir = _unit(s1.tilt - math.radians(40.0) + math.radians(float(U(60, 80))))
        neck = np.stack([h_c, h_c + 80.0 * sc * neck_dir])
        _draw_tube(cv, neck, np.array([15.0, 17.0]) * sc, 0.3, 0.25, rim_mm=2.5)
        _draw_ellipse(cv, h_c + np.array([-22.0, 38.0]) * sc, 0.3, 18.0 * sc, 24.0 * sc, 0.2,
                      0.1, rim_mm=2.0)
        # acetabular roof (sourcil)
        arc = np.array([hip_local * mag + (head_r * mag + 2.0) * np.array(
            [math.cos(t), -math.sin(t)]) for t in np.linspace(0.3, 2.6, 9)])
        _draw_tube(cv, _apply(fr, arc), 2.0 * sc, 0.25, 0.1)

    # lower ribs (11th and 12th, both sides)
    for lv, length in (("T12", 1.0), ("T11", 1.35)):
        vb = vertebrae[lv]
        for _side in range(2):
            p0 = vb.sup.p + np.array([-8.0, 8.0]) * sc + rng.normal(0, 3.0, size=2) * sc
            p1 = p0 + np.array([-40.0, 20.0]) * sc * length
            p2 = p0 + np.array([U(10, 60), U(40, 70)]) * sc * length
            _draw_tube(cv, _bezier(p0, p1, p2), np.linspace(5.0, 3.0, 12) * sc, 0.05, 0.1,
                       rim_mm=1.2)

    # aortic calcification along the anterior spine
    aortic = bool(rng.random() < cfg.p_aortic_calcification * (0.4 + age_deg))
    if aortic:
        ant = np.stack([vertebrae[lv].corners[0] for lv in ("L1", "L2", "L3", "L4")]
                       + [vertebrae["L4"].inf.a])
        gap = float(U(6, 18)) * sc
        for wall in (0.0, float(U(18, 24)) * sc):
            for _ in range(int(rng.integers(3, 12))):
                t = float(U(0, len(ant) - 1.3))
                t1 = min(t + float(U(0.05, 0.3)), len(ant) - 1.0)
                plaque: list[Array] = []
                for tt in np.linspace(t, t1, 4):
                    j = min(int(tt), len(ant) - 2)
                    plaque.append(ant[j] + (tt - j) * (ant[j + 1] - ant[j]))
                path = np.array(plaque) + np.array([gap + wall, 0.0])
                path[:, 0] += rng.normal(0.0, 0.4, size=4) * sc
                _draw_tube(cv, path, float(U(0.5, 1.1)) * sc, float(U(0.15, 0.4)), 0.0)

    # ---------------- metal implants ----------------
    implants = bool(rng.random() < cfg.p_implants)
    implant_info: dict[str, Any] = {}
    if implants:
        start = int(rng.integers(1, 4))  # lowest instrumented level: 1 = S1, 2 = L5, 3 = L4
        n_lv = int(rng.integers(2, 4))
        inst = [lv for lv in ("S1", "L5", "L4", "L3", "L2")][max(0, start - 1):][:n_lv]
        heads: list[Array] = []
        for lv in inst:
            if lv == "S1":
                fr, h, dep = _frame(s1.p, _unit(s1.tilt)), float(sac_h[0]), s1.depth
                entry = np.array([-20.0, 0.45 * h]) * np.array([sc, 1.0])
                target_pt = np.array([dep - 2.0, 2.5])  # promontory (tricortical)
            else:
                fr, h, dep = vertebrae[lv].local_frame()
                entry = np.array([-20.0 * sc, 0.38 * h])
                target_pt = np.array([0.82 * dep, 0.38 * h + float(U(-3, 3))])
            for side in range(2):
                dv = np.array([float(U(-1.5, 1.5)), float(rng.normal(0, 1.5))]) * sc + \
                    np.array([0.0, 2.0 * side])
                a, b = entry + dv, target_pt + dv * 0.5
                _draw_tube(cv, _apply(fr, np.stack([a, b])), np.array([3.4, 2.6]) * sc, 4.0,
                           0.0, target="metal")
                heads.append(_apply(fr, a))
                _draw_tube(cv, _apply(fr, np.stack([a - np.array([4.0, 0.0]), a + np.array([2.0, 0.0])])),
                           6.0 * sc, 3.0, 0.0, target="metal")
        # rods through the screw heads
        hp = np.array(heads)
        for side in range(2):
            rod = hp[side::2] + np.array([-5.0, 0.0]) * sc
            order = np.argsort(rod[:, 1])
            rod = rod[order]
            cap = np.array([[0.0, 6.0 * sc]])
            ext = np.concatenate([rod[:1] - cap, rod, rod[-1:] + cap])
            _draw_tube(cv, ext, 2.8 * sc, 3.5, 0.0, target="metal")
        # interbody cages in the fused discs
        cages: list[str] = []
        below_of = {"L5": s1, "L4": vertebrae["L5"].sup, "L3": vertebrae["L4"].sup,
                    "L2": vertebrae["L3"].sup}
        for lv in inst:
            if lv == "S1" or rng.random() > 0.6:
                continue
            lower_pl, upper_pl = below_of[lv], plates_inf[lv]
            t0, t1 = float(U(0.0, 0.08)), float(U(0.7, 0.95))
            quad = np.stack([lower_pl.p + t0 * (lower_pl.a - lower_pl.p),
                             lower_pl.p + t1 * (lower_pl.a - lower_pl.p),
                             upper_pl.p + t1 * (upper_pl.a - upper_pl.p),
                             upper_pl.p + t0 * (upper_pl.a - upper_pl.p)])
            mid = quad.mean(axis=0)
            quad = mid + (quad - mid) * np.array([1.0, 1.08])  # subsidence into the endplates
            titanium = rng.random() < 0.5
            _draw_poly(cv, _IDENTITY, quad, 1.0, 2.5 if titanium else 0.04, 0.0,
                       target="metal" if titanium else "att")
            if not titanium:  # PEEK cage: tantalum markers
                for q in (quad[0], quad[1]):
                    _draw_tube(cv, np.stack([0.8 * q + 0.2 * mid, 0.8 * q + 0.2 * mid]),
                               1.0 * sc, 4.0, 0.0, target="metal")
            cages.append(f"{lv}-{'S1' if lv == 'L5' else _CHAIN[_CHAIN.index(lv) - 1]}"
                         + (" titanium" if titanium else " peek"))
        implant_info = {"levels": inst, "cages": cages}

    # ---------------- soft tissue (full image, patient-frame coordinates) ----------------
    inv_lin = np.linalg.inv(to_img[:, :2])
    off = -inv_lin @ to_img[:, 2]
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    xm = inv_lin[0, 0] * xs + inv_lin[0, 1] * ys + off[0]
    ym = inv_lin[1, 0] * xs + inv_lin[1, 1] * ys + off[1]
    l3 = vertebrae["L3"]
    x_post0 = float(l3.sup.p[0]) - float(U(75, 115)) * sc
    x_ant0 = float(l3.sup.a[0]) + float(U(120, 230)) * sc
    y_crest = float(vertebrae["L5"].sup.mid[1])
    bulge = float(U(15, 45)) * sc
    x_post = x_post0 - bulge / (1.0 + np.exp(-(ym - y_crest) / 25.0))
    belly = float(U(0, 40)) * sc
    x_ant = x_ant0 + belly * np.exp(-(((ym - float(l3.sup.mid[1]) - 40.0) / 120.0) ** 2))
    half = 0.5 * (x_ant - x_post)
    q = np.clip((xm - x_post) * (x_ant - xm) / (half * half), 0.0, 1.0)
    soft = np.sqrt(q) * np.float32(U(0.45, 0.7))
    # psoas / paraspinal muscle bands are denser than fat: a mild band around the spine
    soft *= 1.0 + 0.12 * np.exp(-(((xm - float(l3.sup.p[0]) + 25.0) / 45.0) ** 2))
    cv.att += soft.astype(np.float32)

    # bowel gas (negative attenuation), mostly anterior to the spine
    n_gas = int(rng.integers(cfg.bowel_gas[0], cfg.bowel_gas[1] + 1))
    top_y = float(vertebrae["L1"].sup.mid[1]) - 30.0
    for _ in range(n_gas):
        cx = float(l3.sup.a[0]) + float(U(-25, 140)) * sc
        cy = float(U(top_y, 60.0))
        a, b = float(U(6, 32)) * sc, float(U(5, 20)) * sc
        _draw_ellipse(cv, np.array([cx, cy]), float(U(0, math.pi)), a, b,
                      -float(U(0.05, 0.18)), texture=0.25, edge_mm=float(U(1.5, 5.0)))

    # ---------------- imaging chain ----------------
    att = cv.att
    blur_px = max(float(U(*cfg.blur_mm)) / spacing, 0.35)
    att = ndimage.gaussian_filter(att + cv.metal, blur_px)
    metal_blur = ndimage.gaussian_filter(cv.metal, blur_px) if implants else None
    noise_level = float(U(*cfg.noise))
    mu = float(U(0.7, 1.1))
    if noise_level > 0:
        noise = rng.standard_normal((H, W)).astype(np.float32)
        att = att + noise_level * np.exp(0.5 * mu * np.minimum(att, 3.0)) * noise
    img = 1.0 - np.exp(-mu * att)
    base_img = img if metal_blur is None else 1.0 - np.exp(-mu * (att - metal_blur))
    step = max(H // 128, 1)
    sample = base_img[::step, ::step]
    lo = float(np.percentile(sample, float(U(0.5, 5.0))))
    hi = float(np.percentile(sample, float(U(99.3, 99.95))))
    img = (img - lo) / max(hi - lo, 1e-6)
    np.clip(img, 0.0, 1.0, out=img)
    # scatter haze: low-frequency copy of the image mixed in
    haze = float(U(*cfg.scatter))
    if haze > 0:
        f = max(H // 64, 1)
        small = ndimage.gaussian_filter(img[::f, ::f], 4.0)
        big = ndimage.zoom(small, (H / small.shape[0], W / small.shape[1]), order=1)
        img = (1.0 - haze) * img + haze * (big[:H, :W] + float(U(0.0, 0.15)))
    gamma = float(U(*cfg.gamma))
    img = np.clip(img, 0.0, 1.0) ** gamma
    # heel effect / vignetting gradient
    grad = float(U(-0.08, 0.08))
    img *= (1.0 + grad * (ys / H - 0.5)).astype(np.float32)
    # collimation
    coll_mask = np.zeros((H, W), np.float32)
    collimated: list[str] = []
    if rng.random() < cfg.p_collimation:
        edge = max(1.5 / spacing * 0.5, 0.7)
        for border in ("left", "right", "top", "bottom"):
            if rng.random() < 0.45:
                continue
            frac = float(U(0.015, 0.09))
            tan = math.tan(math.radians(float(U(-1.5, 1.5))))
            if border in ("left", "right"):
                pos = frac * W + tan * (ys - H / 2)
                dist = pos - xs if border == "left" else xs - (W - pos)
            else:
                pos = frac * H + tan * (xs - W / 2)
                dist = pos - ys if border == "top" else ys - (H - pos)
            coll_mask = np.maximum(coll_mask, np.clip(dist / edge + 0.5, 0.0, 1.0))
            collimated.append(border)
        if collimated:
            value = float(U(0.82, 0.97)) if rng.random() < 0.7 else float(U(0.0, 0.05))
            img = img * (1.0 - coll_mask) + coll_mask * value
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    # ---------------- ground truth ----------------
    pts_img = _apply(to_img, gt_patient)
    vis = np.full(len(pts_img), 2, np.int8)
    occl_r = max(1.5 / spacing, 1.0)
    for i, (x, y) in enumerate(pts_img):
        ix, iy = math.floor(x), math.floor(y)
        if not (0.0 <= x < W and 0.0 <= y < H) or coll_mask[iy, ix] > 0.5:
            vis[i] = 0
            continue
        if metal_blur is not None:
            rr_ = math.ceil(occl_r)
            win = metal_blur[max(iy - rr_, 0): iy + rr_ + 1, max(ix - rr_, 0): ix + rr_ + 1]
            if win.size and float(win.max()) > 0.8:
                vis[i] = 1
    points = pts_img.copy()
    points[vis == 0] = np.nan

    def tilt(level: str, side: str) -> float:
        if level == "S1":
            a, p = pts_img[20], pts_img[21]
        else:
            k = _LUMBAR.index(level) * 4
            a, p = (pts_img[k], pts_img[k + 1]) if side == "sup" else \
                (pts_img[k + 3], pts_img[k + 2])
        return _tilt_img(p, a, facing)

    ss_img = tilt("S1", "sup")
    l1_s1 = ss_img - tilt("L1", "sup")
    l1_l5 = tilt("L5", "inf") - tilt("L1", "sup")
    # internal consistency of the construction (exact up to float rounding)
    assert abs(l1_s1 - ll_anat) < 1e-6 and abs(ss_img - (ss + facing * rot)) < 1e-6

    hip_img = _apply(to_img, hip[None])[0]
    s1_mid_img = 0.5 * (pts_img[20] + pts_img[21])
    pt_img = math.degrees(math.atan2(facing * (hip_img[0] - s1_mid_img[0]),
                                     hip_img[1] - s1_mid_img[1]))
    disc_out = {n: round(float(h), 4) for n, h in zip(disc_names[:5], disc_h[:5], strict=True)}
    if patient_id is None:
        patient_id = (f"synth-{int(rng_or_seed):06d}" if isinstance(rng_or_seed, int | np.integer)
                      else f"synth-{int(rng.integers(0, 10**9)):09d}")
    synthetic: dict[str, Any] = {
        "generator": "spinelandmarks.data.synthetic",
        "sacral_slope_deg": ss_img,
        "l1_s1_lordosis_deg": l1_s1,
        "l1_l5_lordosis_deg": l1_l5,
        "sacral_slope_anatomical_deg": ss,
        "pelvic_tilt_deg": pt_img,
        "pelvic_incidence_deg": pi_deg,
        "facing": "left" if facing < 0 else "right",
        "rotation_deg": rot,
        "segment_wedges_deg": {n: float(w) for n, w in zip(seg_names, wedge, strict=True)},
        "fractures": fractures,
        "fracture_types": fracture_type,
        "fracture_height_loss": fracture_loss,
        "listhesis": listhesis,
        "disc_height_mm": disc_out,
        "disc_degeneration": degen,
        "osteophytes": osteo,
        "implants": implants,
        "implant_details": implant_info,
        "aortic_calcification": aortic,
        "size_scale": sc,
        "bone_density": density,
        "noise_level": noise_level,
        "blur_px": blur_px,
        "scatter": haze,
        "gamma": gamma,
        "collimation": collimated,
        "cropped": cropped,
        "bowel_gas_blobs": n_gas,
        "femoral_head_center_px": [float(hip_img[0]), float(hip_img[1])],
    }
    record = ImageRecord(
        file_name=file_name or f"{patient_id}.png", width=W, height=H, points=points,
        visibility=vis, image_id=image_id, pixel_spacing=(spacing, spacing),
        patient_id=patient_id, meta={"synthetic": synthetic})
    return img, record


# ------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------
def _one(args: tuple[int, np.random.SeedSequence, PhantomConfig, str, str, int]
         ) -> ImageRecord:
    from .io import write_dicom, write_png16

    index, ss, cfg, out_dir, fmt, seed = args
    ext = "dcm" if fmt == "dicom" else "png"
    name = f"images/{index:05d}.{ext}"
    img, rec = generate_phantom(np.random.default_rng(ss), cfg, file_name=name,
                                image_id=index + 1, patient_id=f"synth-{seed}-{index:06d}")
    path = Path(out_dir) / name
    if fmt == "dicom":
        write_dicom(path, img, pixel_spacing=rec.pixel_spacing, patient_id=rec.patient_id)
    else:
        write_png16(path, img)
    return rec


def generate_dataset(out_dir: str | os.PathLike[str], num_images: int, seed: int = 0,
                     config: PhantomConfig | None = None,
                     fmt: Literal["png", "dicom"] = "png", workers: int = 1) -> Path:
    """Write a synthetic dataset in the layout of the conventions.

    Parameters
    ----------
    out_dir : str or PathLike
        Dataset root; ``images/NNNNN.png`` (16-bit) or ``.dcm`` and ``annotations.json``
        (COCO keypoints, ``LUMBAR_SAGITTAL``) are written inside.
    num_images : int
        Number of images.
    seed : int
        Image ``i`` uses child ``i`` of ``np.random.SeedSequence(seed)``, so the dataset is
        identical for any ``workers``. Patient ids are ``synth-<seed>-<i:06d>``.
    config : PhantomConfig, optional
        Generator settings.
    fmt : {"png", "dicom"}
        Image file format.
    workers : int
        Worker processes (1: in-process).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from .annotations import write_coco

    if fmt not in ("png", "dicom"):
        raise ValueError(f"fmt must be 'png' or 'dicom', got {fmt!r}")
    cfg = config or PhantomConfig()
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(num_images)
    jobs = [(i, children[i], cfg, str(root), fmt, seed) for i in range(num_images)]
    if workers > 1 and num_images > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            records = list(ex.map(_one, jobs, chunksize=max(1, num_images // (4 * workers))))
    else:
        records = [_one(j) for j in jobs]
    write_coco(records, LUMBAR_SAGITTAL, root / "annotations.json")
    return root


assert CORNERS == ("anterior_superior", "posterior_superior", "posterior_inferior",
                   "anterior_inferior")  # the corner order used by _Vertebra.corners
