"""A third, held-out phantom style: smooth bone outlines rendered in the display domain ("style C").

Style A (:mod:`spinelandmarks.phantoms`) and style B (:mod:`spinelandmarks.phantoms.projection`)
are the two styles the cross-style benchmark trains on. This generator exists to *test* a model
trained on them on a source it has seen nothing of, so it shares no code with either and
differs in how every part is drawn:

- **Anatomy as outlines.** Each bone is a closed curve in the patient plane: vertebral bodies
  with concave endplates, a concave anterior wall and rounded corners (the polygon smoothed
  along its arc length); posterior elements with pedicles, laminae and spinous processes; a
  *fused*, tapering sacrum, concave anteriorly, with faint transverse ridges (style A draws
  separate blocks, style B a horn-shaped stack); an iliac wing with a cortical crest over the
  lumbosacral junction; femoral heads placed by a drawn pelvic incidence; T10-T12, sometimes
  with ribs; pedicle screws and rods in some images.
- **Rendering.** Every outline is rasterized and shaded by its distance to the edge (cortical
  shell plus cancellous interior with a streaked trabecular texture), directly as display
  brightness: no attenuation physics. Soft tissue ends at a posterior skin line (air behind
  it); bowel gas as dark blobs, some over the column.
- **Display and files.** Random gamma, partial histogram equalization, a low-frequency
  background, blur and correlated noise; vertical collimation borders and a burnt-in side
  marker in some images; **8-bit** files, half JPEG (quality 55-95), half PNG, 1024 x 832 px,
  field-of-view height 250-420 mm, in-plane rotation up to 12 degrees.

Ground truth. The 22 points of ``LUMBAR_SAGITTAL`` are the corners of the body outlines before
rounding (S1: the anterior and posterior ends of the sacral plate). The patient plane is mapped
to the image by a similarity (facing flip, rotation, scale, shift), so
``meta["synthetic"]`` holds the angles of the conventions (section 4) computed from the drawn
anatomy: L1-S1 lordosis = the drawn lordosis, L1-L5 = it minus the L5-S1 disc wedge, and sacral
slope = the drawn slope + ``facing_sign * rotation_deg``.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .._atomic import atomic_write
from ..data.annotations import ImageRecord
from ..schema import LUMBAR_SAGITTAL

if TYPE_CHECKING:
    from .writer import PhantomJob

__all__ = ["OutlineConfig", "generate_outline_dataset", "generate_outline_phantom"]

Array = np.ndarray
Range = tuple[float, float]

_LUMBAR = ("L1", "L2", "L3", "L4", "L5")
#: Share of the L1-S1 lordosis per wedge, caudal first: disc L5-S1, body L5, disc L4-L5, ...
_WEDGE_SHARE = np.array([0.30, 0.06, 0.22, 0.04, 0.15, 0.02, 0.11, 0.0, 0.08, 0.02])


@dataclass
class OutlineConfig:
    """Parameters of the outline phantom generator (ranges are drawn uniformly per image).

    Attributes
    ----------
    height, width : int
        Image size in pixels.
    fov_height_mm : (float, float)
        Field-of-view height, mm (pixel spacing = fov / height).
    sacral_slope_deg : (float, float)
        Anatomical sacral slope, degrees.
    lordosis_minus_slope_deg : (float, float)
        L1-S1 lordosis minus the sacral slope, degrees (lordosis follows the slope).
    pelvic_incidence_extra_deg : (float, float)
        Pelvic incidence minus the sacral slope (the pelvic tilt), degrees.
    size_scale : (float, float)
        Patient size factor of every bone dimension.
    max_rotation_deg, max_shift_frac : float
        In-plane rotation (+-, degrees) and offset of the column centre from the image centre
        (fraction of the image size).
    p_facing_left, p_jpeg, p_ribs, p_hardware, p_collimation, p_marker : float
        Probabilities per image.
    gas_blobs : float
        Mean number of bowel gas blobs.
    noise : bool
        False: no noise and PNG files only (for tests).
    """

    height: int = 1024
    width: int = 832
    fov_height_mm: Range = (250.0, 420.0)
    sacral_slope_deg: Range = (22.0, 55.0)
    lordosis_minus_slope_deg: Range = (-5.0, 25.0)
    pelvic_incidence_extra_deg: Range = (5.0, 25.0)
    size_scale: Range = (0.85, 1.2)
    max_rotation_deg: float = 12.0
    max_shift_frac: float = 0.1
    p_facing_left: float = 0.5
    p_jpeg: float = 0.5
    p_ribs: float = 0.6
    p_hardware: float = 0.1
    p_collimation: float = 0.4
    p_marker: float = 0.5
    gas_blobs: float = 5.0
    noise: bool = True


# ------------------------------------------------------------------------------------------
# anatomy in the patient plane (mm): x anterior, y caudal; origin at the sacral plate middle
# ------------------------------------------------------------------------------------------
def _along(tilt: float) -> Array:
    """Unit vector posterior -> anterior along a plate tilted by ``tilt`` (radians)."""
    return np.array([math.cos(tilt), math.sin(tilt)])


def _up(tilt: float) -> Array:
    """Cranial unit normal of a plate tilted by ``tilt``."""
    return np.array([math.sin(tilt), -math.cos(tilt)])


@dataclass
class _Level:
    name: str
    corners: Array  # (4, 2) ant.-superior, post.-superior, post.-inferior, ant.-inferior


@dataclass
class _Anatomy:
    levels: list[_Level]  # cranial first: T10..L5
    plate: Array  # (2, 2) sacral plate: anterior, posterior
    slope: float  # radians
    lordosis: float
    l5s1_wedge: float
    incidence: float
    scale: float


def _wedges(rng: np.random.Generator, lordosis: float) -> Array:
    share = _WEDGE_SHARE * rng.uniform(0.6, 1.4, _WEDGE_SHARE.size)
    return lordosis * share / share.sum()


def _stack_levels(rng: np.random.Generator, slope: float, wedges: Array, sc: float
                  ) -> list[_Level]:
    """Bodies from the sacral plate upwards: L5..L1 then T12..T10 (small kyphotic wedges)."""
    names = (*reversed(_LUMBAR), "T12", "T11", "T10")
    mid, tilt = np.zeros(2), slope
    levels = []
    for k, name in enumerate(names):
        lumbar = k < 5
        disc_w = wedges[2 * k] if lumbar else math.radians(rng.uniform(-4.0, 0.5))
        body_w = wedges[2 * k + 1] if lumbar else math.radians(rng.uniform(-4.0, -0.5))
        disc_h = sc * (rng.uniform(8.0, 13.0) if lumbar else rng.uniform(4.0, 7.0))
        body_h = sc * (rng.uniform(25.0, 30.0) - (0.6 * k if lumbar else 2.0))
        depth = sc * (rng.uniform(38.0, 45.0) - (1.2 * k if lumbar else 9.0))
        lo_tilt = tilt - disc_w
        lo_mid = mid + disc_h * _up(0.5 * (tilt + lo_tilt))
        hi_tilt = lo_tilt - body_w
        hi_mid = lo_mid + body_h * _up(0.5 * (lo_tilt + hi_tilt))
        a_hi, a_lo = depth / 2 * _along(hi_tilt), depth / 2 * _along(lo_tilt)
        corners = np.stack([hi_mid + a_hi, hi_mid - a_hi, lo_mid - a_lo, lo_mid + a_lo])
        levels.append(_Level(name, corners))
        mid, tilt = hi_mid, hi_tilt
    return levels[::-1]


def _anatomy(rng: np.random.Generator, cfg: OutlineConfig) -> _Anatomy:
    sc = float(rng.uniform(*cfg.size_scale))
    slope = math.radians(rng.uniform(*cfg.sacral_slope_deg))
    lordosis = slope + math.radians(rng.uniform(*cfg.lordosis_minus_slope_deg))
    incidence = slope + math.radians(rng.uniform(*cfg.pelvic_incidence_extra_deg))
    wedges = _wedges(rng, lordosis)
    depth = sc * rng.uniform(40.0, 47.0)
    plate = np.stack([depth / 2 * _along(slope), -depth / 2 * _along(slope)])
    return _Anatomy(_stack_levels(rng, slope, wedges, sc), plate, slope, lordosis,
                    float(wedges[0]), incidence, sc)


# ------------------------------------------------------------------------------------------
# outlines (closed curves in mm, counter-clockwise irrelevant)
# ------------------------------------------------------------------------------------------
def _edge(a: Array, b: Array, bow: float, toward: Array | None = None, n: int = 24) -> Array:
    """Points from ``a`` towards ``b`` (``b`` excluded), bowed at the middle by ``bow`` mm
    (parabolic) towards the point ``toward``."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    if toward is not None and normal @ (toward - a) < 0:
        normal = -normal
    return a + t * d + 4.0 * bow * t * (1.0 - t) * normal


def _smooth_closed(curve: Array, sigma_pts: float) -> Array:
    return ndimage.gaussian_filter1d(curve, sigma_pts, axis=0, mode="wrap")


def _body_outline(c: Array, rng: np.random.Generator, sc: float) -> Array:
    """Rounded outline of a body with concave endplates and a concave anterior wall; ``c`` are
    the corners anterior-superior, posterior-superior, posterior-inferior, anterior-inferior."""
    cup_sup, cup_inf = sc * rng.uniform(0.3, 2.0, 2)
    wall = sc * rng.uniform(0.3, 1.5)
    centre = c.mean(0)
    curve = np.concatenate([_edge(c[0], c[1], cup_sup, centre), _edge(c[1], c[2], 0.0),
                            _edge(c[2], c[3], cup_inf, centre), _edge(c[3], c[0], wall, centre)])
    return _smooth_closed(curve, 1.4)


def _posterior_outline(c: Array, rng: np.random.Generator, sc: float) -> Array:
    """Pedicle, lamina and spinous process behind a body, as one closed curve."""
    ps, pi = c[1], c[2]
    back = ps - c[0]
    back /= np.linalg.norm(back)
    down = (pi - ps) / np.linalg.norm(pi - ps)
    ped = sc * rng.uniform(16.0, 22.0)
    spin = sc * rng.uniform(28.0, 40.0)
    droop = sc * rng.uniform(5.0, 14.0)
    h = np.linalg.norm(pi - ps)
    pts = [ps + 0.1 * h * down, ps + ped * back + 0.05 * h * down,
           ps + (ped + spin) * back + droop * down, ps + (ped + spin) * back + (droop + 9 * sc) * down,
           ps + ped * back + 0.8 * h * down, ps + 0.55 * h * down]
    return _smooth_closed(np.concatenate([_edge(pts[i], pts[(i + 1) % 6], 0.0, n=10)
                                          for i in range(6)]), 1.5)


def _sacrum_outline(an: _Anatomy, rng: np.random.Generator) -> tuple[Array, Array]:
    """Fused sacrum: a tapering band from the plate, concave anteriorly; returns the outline
    and the (K, 2, 2) transverse ridge segments (fused disc remnants)."""
    n = 40
    length = an.scale * rng.uniform(95.0, 120.0)
    bend = math.radians(rng.uniform(40.0, 70.0))  # concave anteriorly: tip points forwards
    tilt = an.slope - bend * np.linspace(0.0, 1.0, n)
    steps = -np.stack([np.sin(tilt), -np.cos(tilt)], axis=1) * (length / n)
    mid = np.cumsum(np.vstack([np.zeros(2), steps[:-1]]), axis=0)
    depth = np.linalg.norm(an.plate[0] - an.plate[1]) * np.linspace(1.0, 0.25, n)
    across = np.stack([np.cos(tilt), np.sin(tilt)], axis=1)
    ant, post = mid + across * depth[:, None] / 2, mid - across * depth[:, None] / 2
    outline = _smooth_closed(np.concatenate([ant, post[::-1]]), 1.0)
    rows = (np.array([0.24, 0.45, 0.63]) * n).astype(int)
    ridges = np.stack([ant[rows], post[rows]], axis=1)
    return outline, ridges


def _blob(centre: Array, radii: Array, rng: np.random.Generator, wobble: float = 0.12,
          angle: float = 0.0) -> Array:
    t = np.linspace(0.0, 2 * math.pi, 72, endpoint=False)
    r = 1.0 + wobble * sum(rng.normal() * np.cos(k * t + rng.uniform(0, 6.3)) / k
                           for k in range(2, 5))
    pts = np.stack([radii[0] * r * np.cos(t), radii[1] * r * np.sin(t)], axis=1)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + centre


def _hip_axis(an: _Anatomy) -> Array:
    """Femoral head centre from the pelvic incidence: the angle at the plate middle between
    the plate's caudal normal and the line to the hip axis, rotated anteriorly."""
    down = -_up(an.slope)
    ant = _along(an.slope)
    d = math.cos(an.incidence) * down + math.sin(an.incidence) * ant
    return d * an.scale * 100.0


# ------------------------------------------------------------------------------------------
# display-domain rendering
# ------------------------------------------------------------------------------------------
@dataclass
class _Frame:
    """Patient mm -> image px similarity."""

    facing: int
    rot: float
    spacing: float
    shift: Array  # px, where the patient origin lands
    shape: tuple[int, int]

    def px(self, pts: Array) -> Array:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2) * np.array([self.facing, 1.0])
        c, s = math.cos(self.rot), math.sin(self.rot)
        return p @ np.array([[c, s], [-s, c]]) / self.spacing + self.shift


def _mask(shape: tuple[int, int], poly_px: Array) -> tuple[tuple[slice, slice], Array]:
    """Boolean mask of a polygon in its bounding window (clipped to the image)."""
    h, w = shape
    x0, y0 = np.floor(poly_px.min(0)).astype(int) - 2
    x1, y1 = np.ceil(poly_px.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
    img = Image.new("1", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in (poly_px - [x0, y0])], fill=1)
    return (slice(y0, y1), slice(x0, x1)), np.asarray(img, dtype=bool)


def _shade(canvas: Array, poly_px: Array, inner: float, rim: float, rim_px: float,
           texture: Array | None = None) -> None:
    """Add a bone: ``inner`` brightness inside (times ``texture``), plus ``rim`` falling off
    with the distance from the outline over ``rim_px`` pixels (the cortical shell)."""
    win, m = _mask(canvas.shape, poly_px)
    if not m.any():
        return
    dist = ndimage.distance_transform_edt(m)
    fill = inner * (texture[win] if texture is not None else 1.0)
    canvas[win] += np.where(m, fill + rim * np.exp(-(dist / max(rim_px, 0.5)) ** 2), 0.0)


def _line(canvas: Array, a: Array, b: Array, value: float, width_px: float) -> None:
    """A soft straight line segment (pixels)."""
    h, w = canvas.shape
    lo = np.clip(np.floor(np.minimum(a, b) - 3 * width_px).astype(int), 0, [w, h])
    hi = np.clip(np.ceil(np.maximum(a, b) + 3 * width_px).astype(int), 0, [w, h])
    if (hi <= lo).any():
        return
    yy, xx = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float64)
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / (d @ d + 1e-9), 0.0, 1.0)
    dist2 = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2
    canvas[lo[1]:hi[1], lo[0]:hi[0]] += value * np.exp(-dist2 / (2 * width_px ** 2))


def _trabecular(rng: np.random.Generator, shape: tuple[int, int], spacing: float) -> Array:
    """Streaked texture around 1: noise smoothed more along the column than across it."""
    n = rng.normal(size=shape)
    tex = ndimage.gaussian_filter(n, (2.2 / spacing, 0.7 / spacing))
    return 1.0 + 0.25 * tex / (tex.std() + 1e-9)


def _render_column(canvas: Array, an: _Anatomy, fr: _Frame, rng: np.random.Generator) -> None:
    tex = _trabecular(rng, canvas.shape, fr.spacing)
    rim_px = an.scale * rng.uniform(0.8, 1.6) / fr.spacing
    inner, rim = rng.uniform(0.35, 0.55), rng.uniform(0.25, 0.5)
    for lv in an.levels:
        _shade(canvas, fr.px(_posterior_outline(lv.corners, rng, an.scale)), 0.4 * inner,
               0.5 * rim, rim_px)
        _shade(canvas, fr.px(_body_outline(lv.corners, rng, an.scale)), inner, rim, rim_px, tex)
    sac, ridges = _sacrum_outline(an, rng)
    _shade(canvas, fr.px(sac), 0.9 * inner, rim, rim_px, tex)
    for a, b in ridges:
        pa, pb = fr.px(np.stack([a, b]))
        _line(canvas, pa, pb, 0.5 * rim, 0.8 * rim_px)


def _render_pelvis(canvas: Array, an: _Anatomy, fr: _Frame, rng: np.random.Generator
                   ) -> dict[str, float]:
    hip = _hip_axis(an)
    r = an.scale * rng.uniform(21.0, 26.0)
    gap = rng.normal(size=2) * an.scale * 4.0
    for c in (hip - gap / 2, hip + gap / 2):
        _shade(canvas, fr.px(_blob(c, np.array([r, r]), rng, 0.0)), 0.22, 0.3,
               an.scale * 1.5 / fr.spacing)
    wing_c = np.array([an.scale * rng.uniform(5.0, 25.0), -an.scale * rng.uniform(5.0, 30.0)])
    wing = _blob(wing_c, an.scale * np.array([rng.uniform(55, 75), rng.uniform(40, 55)]), rng,
                 0.15, rng.uniform(-0.6, 0.2))
    _shade(canvas, fr.px(wing), 0.05, 0.3, an.scale * 1.5 / fr.spacing)
    return {"pelvic_incidence_deg": math.degrees(an.incidence),
            "pelvic_tilt_deg": math.degrees(an.incidence - an.slope)}


def _render_ribs(canvas: Array, an: _Anatomy, fr: _Frame, rng: np.random.Generator) -> None:
    for lv in an.levels[:3]:  # T10-T12
        start = lv.corners[1] + an.scale * np.array([-15.0, 5.0])
        bow = np.array([-an.scale * rng.uniform(60, 120), an.scale * rng.uniform(30, 70)])
        t = np.linspace(0.0, 1.0, 30)[:, None]
        path = start + t * bow + (t * (1 - t)) * np.array([0.0, -an.scale * 40.0])
        pts = fr.px(path)
        for a, b in itertools.pairwise(pts):
            _line(canvas, a, b, 0.08, an.scale * 3.5 / fr.spacing)


def _render_hardware(canvas: Array, an: _Anatomy, fr: _Frame, rng: np.random.Generator) -> None:
    """Pedicle screws at 2-3 adjacent lumbar levels and the rod joining their heads."""
    first = int(rng.integers(3, 6))  # index into T10..L5: the first screwed level is L1-L3
    heads = []
    for lv in an.levels[first:first + int(rng.integers(2, 4))]:
        c = lv.corners
        tip = 0.5 * (c[0] + c[3]) * 0.35 + 0.5 * (c[1] + c[2]) * 0.65
        head = 0.5 * (c[1] + c[2]) + (c[1] - c[0]) / np.linalg.norm(c[1] - c[0]) * 25 * an.scale
        a, b = fr.px(np.stack([head, tip]))
        _line(canvas, a, b, 1.5, an.scale * 2.5 / fr.spacing)
        heads.append(head)
    pts = fr.px(np.stack(heads))
    for a, b in itertools.pairwise(pts):
        _line(canvas, a, b, 1.5, an.scale * 2.2 / fr.spacing)


def _soft_tissue(canvas: Array, an: _Anatomy, fr: _Frame, rng: np.random.Generator,
                 cfg: OutlineConfig) -> None:
    """Tissue brightness ending at a posterior skin line; bowel gas as dark blobs."""
    h, w = canvas.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    skin_mm = an.scale * rng.uniform(55.0, 95.0)
    centre = fr.px(an.levels[5].corners[1:3].mean(0, keepdims=True))[0]  # L3 posterior wall
    back = fr.px(np.array([[-1.0, 0.0]]))[0] - fr.px(np.zeros((1, 2)))[0]
    back /= np.linalg.norm(back)
    behind = (xx - centre[0]) * back[0] + (yy - centre[1]) * back[1]  # px behind the column
    canvas += rng.uniform(0.15, 0.3) / (1.0 + np.exp((behind - skin_mm / fr.spacing) / 4.0))
    for _ in range(rng.poisson(cfg.gas_blobs)):
        lv = an.levels[int(rng.integers(3, 8))].corners
        c = lv.mean(0) + np.array([an.scale * rng.uniform(0.0, 90.0), rng.normal(0, 20)])
        blob = _blob(c, an.scale * rng.uniform(6.0, 22.0, 2), rng, 0.2, rng.uniform(0, 3.1))
        win, m = _mask(canvas.shape, fr.px(blob))
        if m.any():
            canvas[win] -= rng.uniform(0.05, 0.15) * ndimage.gaussian_filter(m * 1.0, 2.0)


def _display(canvas: Array, cfg: OutlineConfig, rng: np.random.Generator
             ) -> tuple[Array, dict[str, float]]:
    """Display chain: blur, background, gamma, partial equalization, noise; to [0, 1]."""
    h, w = canvas.shape
    img = ndimage.gaussian_filter(canvas, rng.uniform(0.6, 1.6))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img += rng.uniform(-0.1, 0.1) * yy + rng.uniform(-0.1, 0.1) * xx + rng.uniform(0.05, 0.2)
    lo, hi = np.percentile(img, [0.5, 99.8])
    img = np.clip((img - lo) / (hi - lo + 1e-9), 0.0, 1.0)
    gamma = rng.uniform(0.6, 1.5)
    img = img ** gamma
    eq = rng.uniform(0.0, 0.5)
    ranks = np.argsort(np.argsort(img, axis=None)).reshape(img.shape) / img.size
    img = (1 - eq) * img + eq * ranks
    info = {"gamma": gamma, "equalization": eq, "noise_sd": 0.0}
    if cfg.noise:
        sd = rng.uniform(0.01, 0.05)
        grain = ndimage.gaussian_filter(rng.normal(size=img.shape), 1.2)
        img = img + sd * (rng.normal(size=img.shape) + 2.0 * grain) / 1.6
        info["noise_sd"] = sd
    return np.clip(img, 0.0, 1.0), info


def _frame(rng: np.random.Generator, cfg: OutlineConfig, an: _Anatomy) -> _Frame:
    spacing = rng.uniform(*cfg.fov_height_mm) / cfg.height
    facing = -1 if rng.random() < cfg.p_facing_left else 1
    rot = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    fr = _Frame(facing, rot, spacing, np.zeros(2), (cfg.height, cfg.width))
    lumbar = np.concatenate([lv.corners for lv in an.levels[3:]] + [an.plate])
    centre = fr.px(lumbar).mean(0)
    jitter = rng.uniform(-cfg.max_shift_frac, cfg.max_shift_frac, 2) * [cfg.width, cfg.height]
    fr.shift = np.array([cfg.width / 2, cfg.height / 2]) - centre + jitter
    return fr


def _overprint(img: Array, cfg: OutlineConfig, rng: np.random.Generator) -> dict[str, bool]:
    """Collimation borders and a burnt-in side marker."""
    h, w = img.shape
    collimated = bool(rng.random() < cfg.p_collimation)
    if collimated:
        left, right = (rng.uniform(0.0, 0.12, 2) * w).astype(int)
        img[:, :left] = img[:, w - right:] = rng.uniform(0.0, 0.1)
    marker = bool(rng.random() < cfg.p_marker)
    if marker:
        s = h // 30
        y0, x0 = int(rng.uniform(0.03, 0.1) * h), int(rng.uniform(0.05, 0.85) * w)
        img[y0:y0 + 3 * s, x0:x0 + s // 2] = 1.0
        img[y0 + 3 * s - s // 2:y0 + 3 * s, x0:x0 + 2 * s] = 1.0
    return {"collimated": collimated, "marker": marker}


def _ground_truth(an: _Anatomy, fr: _Frame) -> Array:
    s = LUMBAR_SAGITTAL
    pts = np.full((s.num_points, 2), np.nan)
    names = ("anterior_superior", "posterior_superior", "posterior_inferior", "anterior_inferior")
    for lv in an.levels:
        if lv.name in _LUMBAR:
            xy = fr.px(lv.corners)
            for j, name in enumerate(names):
                pts[s.index(lv.name, name)] = xy[j]
    s1 = fr.px(an.plate)
    for j, name in enumerate(("anterior_superior", "posterior_superior")):
        pts[s.index("S1", name)] = s1[j]
    return pts


def generate_outline_phantom(rng_or_seed: int | np.random.Generator | np.random.SeedSequence,
                             config: OutlineConfig | None = None, *,
                             file_name: str | None = None, image_id: int = 0,
                             patient_id: str | None = None) -> tuple[np.ndarray, ImageRecord]:
    """One style-C radiograph and its ground truth.

    Parameters
    ----------
    rng_or_seed : int, numpy Generator or SeedSequence
        Same seed, same image and record.
    config : OutlineConfig, optional
    file_name, image_id, patient_id
        Stored in the record (defaults ``"<patient_id>.png"``, 0, ``"outline-<seed>"``).

    Returns
    -------
    image : np.ndarray
        (H, W) float64 in [0, 1], bone bright, quantized to 8 bits.
    record : ImageRecord
        ``LUMBAR_SAGITTAL`` points in pixels (NaN and ``v = 0`` outside the image), isotropic
        ``pixel_spacing`` in mm, and ``meta["synthetic"]`` (drawn anatomy and display).
    """
    cfg = config or OutlineConfig()
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) \
        else np.random.default_rng(rng_or_seed)
    an = _anatomy(rng, cfg)
    fr = _frame(rng, cfg, an)
    canvas = np.zeros((cfg.height, cfg.width))
    _soft_tissue(canvas, an, fr, rng, cfg)
    pelvis = _render_pelvis(canvas, an, fr, rng)
    _render_column(canvas, an, fr, rng)
    ribs = bool(rng.random() < cfg.p_ribs)
    if ribs:
        _render_ribs(canvas, an, fr, rng)
    hardware = bool(rng.random() < cfg.p_hardware)
    if hardware:
        _render_hardware(canvas, an, fr, rng)
    img, display = _display(canvas, cfg, rng)
    extras = _overprint(img, cfg, rng)
    img = np.rint(img * 255.0) / 255.0
    pts = _ground_truth(an, fr)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < cfg.width) & (pts[:, 1] >= 0) & \
        (pts[:, 1] < cfg.height)
    if patient_id is None:
        patient_id = (f"outline-{int(rng_or_seed):06d}" if isinstance(rng_or_seed, int)
                      else f"outline-{int(rng.integers(0, 10**9)):09d}")
    slope = math.degrees(an.slope)
    meta: dict[str, Any] = {
        "generator": "spinelandmarks.phantoms.outline", "style": "outline",
        "l1_s1_lordosis_deg": math.degrees(an.lordosis),
        "l1_l5_lordosis_deg": math.degrees(an.lordosis - an.l5s1_wedge),
        "sacral_slope_deg": slope + fr.facing * math.degrees(fr.rot),
        "sacral_slope_anatomical_deg": slope, "facing": "left" if fr.facing < 0 else "right",
        "rotation_deg": math.degrees(fr.rot), "fov_height_mm": fr.spacing * cfg.height,
        "size_scale": an.scale, "ribs": ribs, "hardware": hardware, **pelvis, **display,
        **extras, "jpeg": bool(cfg.noise and rng.random() < cfg.p_jpeg),
    }
    record = ImageRecord(file_name=file_name or f"{patient_id}.png", width=cfg.width,
                         height=cfg.height, points=np.where(inside[:, None], pts, np.nan),
                         visibility=np.where(inside, 2, 0).astype(np.int8), image_id=image_id,
                         pixel_spacing=(fr.spacing, fr.spacing), patient_id=patient_id,
                         meta={"synthetic": meta})
    return img, record


# ------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------
def _one(job: PhantomJob) -> ImageRecord:
    index, ss, seed, out_dir, cfg = job
    rng = np.random.default_rng(ss)
    img, rec = generate_outline_phantom(rng, cfg, image_id=index + 1,
                                        patient_id=f"outline-{seed}-{index:06d}")
    syn = rec.meta["synthetic"]
    quality = int(rng.integers(55, 96))
    rec.file_name = f"images/{index:05d}.{'jpg' if syn['jpeg'] else 'png'}"
    pil = Image.fromarray(np.rint(img * 255).astype(np.uint8))
    if syn["jpeg"]:
        syn["jpeg_quality"] = quality
        atomic_write(Path(out_dir) / rec.file_name,
                     lambda tmp: pil.save(tmp, format="JPEG", quality=quality))
    else:
        atomic_write(Path(out_dir) / rec.file_name, lambda tmp: pil.save(tmp, format="PNG"))
    return rec


def generate_outline_dataset(out_dir: str | os.PathLike[str], num_images: int, seed: int = 0,
                             config: OutlineConfig | None = None, workers: int = 1) -> Path:
    """Write a style-C dataset in the layout of the conventions.

    Parameters
    ----------
    out_dir : str or PathLike
        Dataset root: ``images/NNNNN.png`` or ``.jpg`` (8-bit) and ``annotations.json`` (COCO
        keypoints, ``LUMBAR_SAGITTAL``, pixel spacing in the record).
    num_images : int
    seed : int
        Image ``i`` uses child ``i`` of ``np.random.SeedSequence(seed)``: the dataset is the same
        for any ``workers``. Patient ids are ``outline-<seed>-<i:06d>``.
    config : OutlineConfig, optional
    workers : int
        Worker processes (1: in-process).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from .writer import write_phantom_dataset

    return write_phantom_dataset(out_dir, _one, num_images, seed, config or OutlineConfig(),
                                 LUMBAR_SAGITTAL, workers)
