"""Drawing on an attenuation map: signed-distance shapes in local mm frames, rasterized on
the pixel window of their bounding box (so a 1024 px image takes a fraction of a second)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from .config import Array
from .frames import _IDENTITY, _apply, _compose, _frame, _unit, _Vertebra


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


#: A concave edge pushes the outline in by ``depth (1 - d / reach)`` at distance ``d`` inside,
#: with ``reach = max(_CONCAVE_REACH * depth, _CONCAVE_MIN_REACH_MM)``.
_CONCAVE_REACH = 3.0
_CONCAVE_MIN_REACH_MM = 6.0


def _concavity_for_depression(depth: float) -> float:
    """The ``concave`` depth of :func:`_sd_convex` that moves an edge's middle inward by
    ``depth`` mm: there the outline sits where ``c (1 - d / reach) = d``."""
    k, r0 = _CONCAVE_REACH, _CONCAVE_MIN_REACH_MM
    if depth * (1.0 + 1.0 / k) >= r0 / k:  # reach = k c: d = c k / (k + 1)
        return depth * (k + 1.0) / k
    return depth / (1.0 - depth / r0)  # reach = r0: d = c / (1 + c / r0)


def _sd_convex(u: Array, v: Array, poly: Array, r: float = 0.0,
               concave: Sequence[tuple[int, float, float]] = (), band: float = 1.0) -> Array:
    """Signed distance (mm) to a convex polygon with corners rounded by ``r``.

    The distance is exact inside and within ``band`` mm outside the rounded outline; farther
    out a lower bound (larger than ``band``) is returned, which is all rendering needs.
    ``concave`` lists ``(edge index, depth mm, rim)``: the boundary of that edge (from vertex
    i to i + 1 of the positively oriented polygon, at fraction ``t`` along it) is pushed
    inward by ``depth * sin(pi t)`` when ``rim`` is 0 (one arc from vertex to vertex), else
    by ``depth * sin(pi s)**2``, ``s = clip((t - rim) / (1 - 2 rim), 0, 1)``: a bowl that
    leaves the end ``rim`` fractions of the edge straight and meets them without a kink.
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
    for i, depth, rim in concave:
        a, b = poly[i], poly[(i + 1) % len(poly)]
        dx, dy = b[0] - a[0], b[1] - a[1]
        ln = math.hypot(dx, dy)
        pu, pv = u - a[0], v - a[1]
        t = np.clip((pu * dx + pv * dy) / (ln * ln), 0.0, 1.0)
        profile = (np.sin(np.pi * np.clip((t - rim) / (1.0 - 2.0 * rim), 0.0, 1.0)) ** 2
                   if rim > 0 else np.sin(np.pi * t))
        d_in = (dx * pv - dy * pu) / ln
        reach = max(_CONCAVE_REACH * depth, _CONCAVE_MIN_REACH_MM)
        sd += depth * profile * np.clip(1.0 - d_in / reach, 0.0, 1.0)
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
               concave: Sequence[tuple[int, float, float]] = (),
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


def _body_polygon(vb: _Vertebra, concave_sup: float, concave_inf: float, concave_ant: float,
                  rim: float) -> tuple[Array, list[tuple[int, float, float]]]:
    """The body's positively oriented polygon and its concave edges (for :func:`_sd_convex`);
    ``rim`` is the fraction of each endplate, at each end, left straight (the ring
    apophysis)."""
    # polygon PS, AS, AI, PI (edges: superior, anterior, inferior, posterior)
    poly = np.stack([vb.sup.p, vb.sup.a, vb.inf.a, vb.inf.p])
    oriented = _orient(poly)
    flipped = oriented[0, 0] != poly[0, 0] or oriented[0, 1] != poly[0, 1]
    # edge indices in the oriented polygon
    edges = {"sup": 0, "ant": 1, "inf": 2, "post": 3}
    if flipped:  # reversed order PI, AI, AS, PS -> edges inf, ant, sup, post
        edges = {"inf": 0, "ant": 1, "sup": 2, "post": 3}
    return oriented, [(edges["sup"], concave_sup, rim), (edges["inf"], concave_inf, rim),
                      (edges["ant"], concave_ant, 0.0), (edges["post"], 0.4, 0.0)]


def _draw_body(cv: _Canvas, vb: _Vertebra, dens: float, cortex: float, r: float,
               concave_sup: float, concave_inf: float, concave_ant: float,
               texture: float, rim: float) -> None:
    oriented, conc = _body_polygon(vb, concave_sup, concave_inf, concave_ant, rim)
    _draw_poly(cv, _IDENTITY, oriented, r, dens, cortex, rim_mm=1.1, texture=texture,
               concave=conc)


def _endplate_middle(vb: _Vertebra, side: Literal["sup", "inf"], r: float, concave_sup: float,
                     concave_inf: float, concave_ant: float, rim: float) -> Array:
    """The middle of an endplate on the drawn outline (patient mm): where the line through the
    nominal endplate's mid-point, normal to it, meets the body's outline (concave endplates
    and biconcave fractures included)."""
    poly, conc = _body_polygon(vb, concave_sup, concave_inf, concave_ant, rim)
    plate, other = (vb.sup, vb.inf) if side == "sup" else (vb.inf, vb.sup)
    e = plate.a - plate.p
    n = np.array([-e[1], e[0]]) / np.linalg.norm(e)
    if float(n @ (other.mid - plate.mid)) < 0:
        n = -n  # into the body

    def outline(s: float) -> float:
        q = plate.mid + s * n
        return float(_sd_convex(np.array([[q[0]]]), np.array([[q[1]]]), poly, r, conc)[0, 0])

    half = 0.5 * float(np.linalg.norm(other.mid - plate.mid))
    return plate.mid + brentq(outline, -1.0, half, xtol=1e-6) * n


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



def _body_outline(vb: _Vertebra, r: float, concave_sup: float, concave_inf: float,
                  concave_ant: float, rim: float, n_rays: int = 180,
                  step_mm: float = 0.05) -> Array:
    """(n_rays, 2) the drawn body's outline (patient mm): along rays from the body's centre,
    where the signed distance of :func:`_draw_body`'s shape turns positive (linear
    interpolation between samples ``step_mm`` apart; the shape is star-shaped from its
    centre, fractured shapes included)."""
    poly, conc = _body_polygon(vb, concave_sup, concave_inf, concave_ant, rim)
    centre = poly.mean(axis=0)
    reach = float(np.linalg.norm(poly - centre, axis=1).max()) + 2.0
    s = np.arange(0.0, reach, step_mm)
    theta = np.linspace(0.0, 2 * math.pi, n_rays, endpoint=False)
    dirs = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (R, 2)
    pts = centre + dirs[:, None, :] * s[None, :, None]  # (R, S, 2)
    sd = _sd_convex(pts[..., 0], pts[..., 1], poly, r, conc).astype(np.float64)
    first_out = np.argmax(sd > 0, axis=1)  # the first sample outside, per ray
    i1 = np.maximum(first_out, 1)
    d0, d1 = np.take_along_axis(sd, i1[:, None] - 1, 1)[:, 0], np.take_along_axis(
        sd, i1[:, None], 1)[:, 0]
    s_edge = s[i1 - 1] + step_mm * (-d0) / np.maximum(d1 - d0, 1e-12)
    return centre + dirs * s_edge[:, None]
