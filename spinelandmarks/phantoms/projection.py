"""A second, independent phantom style: cone-beam projections of 3-D bones ("style B").

The cross-style benchmark trains on one phantom style and tests on the other, so this
generator shares no rendering code with :mod:`spinelandmarks.phantoms` ("style A") and
differs from it in every stage a model could latch on to:

- **Anatomy in 3-D.** Vertebral bodies are elliptic cylinders between tilted endplates (depth,
  lateral width, height per level), with pedicles and spinous processes; T10-T12 with ribs
  crossing them, a curved five-segment sacrum, iliac wings and two femoral heads (spheres).
  The column has a small axial rotation and lateral bend, as a patient never stands exactly
  lateral.
- **Projection.** A point source (source-image distance 1.0-1.8 m) projects every body as a
  stack of lateral slices, each with its own magnification: the two sides of a body do not
  superimpose, so endplates and posterior walls show the double contours of real lateral
  films. Line integrals are summed slice by slice (spheres analytically).
- **Imaging chain.** Photon counts ``I0 exp(-mu L)`` with an anode heel gradient, scatter as a
  broad blur of the primary (scatter-to-primary ratio drawn per image), Poisson noise at a
  drawn dose, detector blur, log transform, processed-DR unsharp masking and a sigmoid display
  curve, sometimes anti-scatter grid lines; stored as **12-bit** values.
- **Files and fields of view.** 960 x 768 px by default, field-of-view height 220-420 mm (the
  lumbar spine fills from half to almost all of the image), in-plane rotation up to 10
  degrees; half of the images 16-bit PNG holding the 12-bit values unscaled, half DICOM
  (BitsStored 12, MONOCHROME1 or MONOCHROME2).

Ground truth. The 22 points of ``LUMBAR_SAGITTAL`` are the corners of each body's mid-sagittal
section (S1: its superior plate), which is parallel to the detector: its projection is a
similarity, so angles are preserved. ``meta["synthetic"]`` holds the angles computed from the
projected corners with the formulas of the conventions (section 4), which equal the drawn
anatomical angles: ``l1_s1_lordosis_deg`` and ``l1_l5_lordosis_deg`` exactly, and
``sacral_slope_deg = sacral_slope_anatomical_deg + facing_sign * rotation_deg``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..data.annotations import ImageRecord
from ..schema import LUMBAR_SAGITTAL

if TYPE_CHECKING:
    from .writer import PhantomJob

__all__ = ["ProjectionConfig", "generate_projection_dataset", "generate_projection_phantom"]

Array = np.ndarray
Range = tuple[float, float]

_LEVELS = ("L1", "L2", "L3", "L4", "L5")
_THORACIC = ("T12", "T11", "T10")
#: Linear attenuation, 1/mm: cancellous body, cortical rim, posterior elements, soft tissue.
_MU = {"body": 0.030, "cortex": 0.055, "posterior": 0.035, "rib": 0.045, "sacrum": 0.032,
       "ilium": 0.050, "femur": 0.030, "tissue": 0.0020}


@dataclass
class ProjectionConfig:
    """Parameters of the projection phantom generator (ranges are drawn uniformly per image).

    Attributes
    ----------
    height, width : int
        Image size in pixels.
    fov_height_mm : (float, float)
        Field-of-view height at the detector, mm (pixel spacing = fov / height).
    sid_mm : (float, float)
        Source-image distance, mm.
    oid_mm : (float, float)
        Distance from the mid-sagittal plane to the detector, mm.
    sacral_slope_deg, lordosis_deg : (float, float)
        Anatomical sacral slope and L1-S1 lordosis, degrees.
    size_scale : (float, float)
        Patient size factor of every bone dimension.
    max_rotation_deg : float
        In-plane rotation uniform in +- this, degrees.
    max_axial_rotation_deg, max_lateral_bend_deg : float
        Out-of-plane pose of the column (double contours), degrees.
    max_shift_frac : float
        Offset of the lumbar column from the image centre, fraction of the image size.
    p_facing_left, p_dicom, p_monochrome1, p_grid : float
        Probabilities per image: patient facing left, DICOM (else PNG), MONOCHROME1 (of the
        DICOMs), anti-scatter grid lines.
    photons : (float, float)
        Photons per pixel behind no attenuation (dose; fewer is noisier).
    scatter_to_primary : (float, float)
        Scatter-to-primary ratio.
    scatter_sigma_mm : (float, float)
        Width of the scatter blur, mm.
    heel : (float, float)
        Relative intensity change across the image height (anode heel effect).
    blur_px : (float, float)
        Detector blur sigma, pixels.
    unsharp_amount : (float, float)
        Gain of the processed-DR unsharp mask (kernel sigma 8-20 mm).
    bits : int
        Bits of the stored values (12: 0..4095).
    noise : bool
        Poisson noise on (off gives the noiseless expected image, for tests).
    slices : int
        Lateral slices per body in the projection.
    """

    height: int = 960
    width: int = 768
    fov_height_mm: Range = (220.0, 420.0)
    sid_mm: Range = (1000.0, 1800.0)
    oid_mm: Range = (150.0, 260.0)
    sacral_slope_deg: Range = (20.0, 60.0)
    lordosis_deg: Range = (15.0, 75.0)
    size_scale: Range = (0.85, 1.15)
    max_rotation_deg: float = 10.0
    max_axial_rotation_deg: float = 6.0
    max_lateral_bend_deg: float = 4.0
    max_shift_frac: float = 0.08
    p_facing_left: float = 0.5
    p_dicom: float = 0.5
    p_monochrome1: float = 0.5
    p_grid: float = 0.3
    photons: Range = (300.0, 3000.0)
    scatter_to_primary: Range = (0.3, 1.5)
    scatter_sigma_mm: Range = (25.0, 60.0)
    heel: Range = (0.05, 0.25)
    blur_px: Range = (0.5, 1.3)
    unsharp_amount: Range = (0.3, 1.5)
    bits: int = 12
    noise: bool = True
    slices: int = 9


# ------------------------------------------------------------------------------------------
# anatomy in the patient frame (mm): x anterior, y caudal, z lateral (towards the source)
# ------------------------------------------------------------------------------------------
def _u(tilt: float) -> Array:
    """Posterior -> anterior unit vector of an endplate with this tilt (radians)."""
    return np.array([math.cos(tilt), math.sin(tilt)])


def _n(tilt: float) -> Array:
    """Cranial unit normal of an endplate with this tilt."""
    return np.array([math.sin(tilt), -math.cos(tilt)])


@dataclass
class _Body:
    name: str
    inf_mid: Array  # middle of the inferior endplate (2,)
    inf_tilt: float
    sup_mid: Array
    sup_tilt: float
    depth: float  # antero-posterior, mm
    width: float  # lateral, mm

    def corners(self) -> Array:
        """(4, 2) anterior_superior, posterior_superior, posterior_inferior, anterior_inferior."""
        h = self.depth / 2
        us, ui = _u(self.sup_tilt), _u(self.inf_tilt)
        return np.stack([self.sup_mid + h * us, self.sup_mid - h * us,
                         self.inf_mid - h * ui, self.inf_mid + h * ui])


@dataclass
class _Spine:
    bodies: list[_Body]  # T10 .. L5, cranial first
    s1_plate: Array  # (2, 2) anterior, posterior superior corners of S1
    ss: float  # anatomical sacral slope, radians
    lordosis: float  # anatomical L1-S1 lordosis, radians
    sc: float
    extra: dict[str, Any] = field(default_factory=dict)


def _build_spine(rng: np.random.Generator, cfg: ProjectionConfig) -> _Spine:
    """Endplates from the sacral plate upward; wedges sum to the drawn L1-S1 lordosis."""
    sc = float(rng.uniform(*cfg.size_scale))
    ss = math.radians(rng.uniform(*cfg.sacral_slope_deg))
    lordosis = math.radians(rng.uniform(*cfg.lordosis_deg))
    # 10 lumbar wedges (5 discs, 5 bodies), caudal first; discs carry most of the lordosis
    share = np.array([3.0, 0.6, 2.2, 0.4, 1.6, 0.2, 1.2, 0.0, 0.9, -0.2]) \
        * rng.uniform(0.7, 1.3, 10)
    wedges = lordosis * share / share.sum()
    disc_h = sc * rng.uniform(7.0, 12.0, 5) * np.array([0.85, 1.0, 1.0, 0.95, 0.9])
    body_h = sc * rng.uniform(24.0, 30.0, 8)
    depth = sc * np.concatenate([rng.uniform(36.0, 46.0, 5), rng.uniform(28.0, 34.0, 3)])
    width = sc * np.concatenate([rng.uniform(42.0, 52.0, 5), rng.uniform(32.0, 40.0, 3)])
    s1_depth = sc * rng.uniform(36.0, 46.0)
    mid, tilt = np.zeros(2), ss
    s1_plate = np.stack([mid + s1_depth / 2 * _u(tilt), mid - s1_depth / 2 * _u(tilt)])
    bodies: list[_Body] = []
    names = (*reversed(_LEVELS), *_THORACIC)
    for k, name in enumerate(names):  # L5 first, then upwards
        dw = wedges[2 * k] if k < 5 else math.radians(rng.uniform(-3.0, 1.0))
        bw = wedges[2 * k + 1] if k < 5 else math.radians(rng.uniform(-3.0, 0.0))
        dh = disc_h[k] if k < 5 else sc * rng.uniform(5.0, 7.0)
        inf_tilt = tilt - dw
        inf_mid = mid + dh * _n(0.5 * (tilt + inf_tilt))
        sup_tilt = inf_tilt - bw
        sup_mid = inf_mid + body_h[k] * _n(0.5 * (inf_tilt + sup_tilt))
        bodies.append(_Body(name, inf_mid, inf_tilt, sup_mid, sup_tilt, float(depth[k]),
                            float(width[k])))
        mid, tilt = sup_mid, sup_tilt
    return _Spine(bodies[::-1], s1_plate, ss, lordosis, sc)


def _sacrum_segments(spine: _Spine, rng: np.random.Generator) -> list[Array]:
    """(4, 2) quads of S1..S5 curving posteriorly (kyphotic), caudal of the sacral plate."""
    ant, post = spine.s1_plate
    tilt = spine.ss
    quads = []
    depth = float(np.linalg.norm(ant - post))
    for k in range(5):
        h = spine.sc * (24.0 - 3.5 * k) * rng.uniform(0.9, 1.1)
        nxt = tilt + math.radians(rng.uniform(8.0, 16.0))  # kyphotic curve of the sacrum
        down = -_n(0.5 * (tilt + nxt))
        mid = 0.5 * (ant + post)
        new_depth = depth * 0.78
        mid2 = mid + h * down
        ant2, post2 = mid2 + new_depth / 2 * _u(nxt), mid2 - new_depth / 2 * _u(nxt)
        quads.append(np.stack([ant, post, post2, ant2]))
        ant, post, tilt, depth = ant2, post2, nxt, new_depth
    return quads


# ------------------------------------------------------------------------------------------
# projection: patient mm (x, y) at lateral offset z -> detector pixels
# ------------------------------------------------------------------------------------------
@dataclass
class _Geometry:
    rot: float  # in-plane rotation, radians
    facing: int
    offset_mm: Array  # detector position (mm, from the central ray) of the patient origin
    sid: float
    oid: float
    axial: float  # axial rotation of the column, radians
    bend: float  # lateral bend, radians
    spacing: float  # mm / px
    shape: tuple[int, int]

    def magnification(self, z: float) -> float:
        return self.sid / (self.sid - self.oid - z)

    def to_px(self, pts: Array, z: float = 0.0) -> Array:
        """(N, 2) patient mm on the slice at lateral offset ``z`` -> (N, 2) pixels (x, y)."""
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2).copy()
        p[:, 0] += z * math.sin(self.axial)  # out-of-plane pose of the column
        p[:, 1] += z * math.sin(self.bend)
        p[:, 0] *= self.facing
        c, s = math.cos(self.rot), math.sin(self.rot)
        p = p @ np.array([[c, s], [-s, c]]) + self.offset_mm  # rotate by +rot (image axes)
        det = p * self.magnification(z)  # cone beam about the central ray
        h, w = self.shape
        return det / self.spacing + np.array([w / 2.0, h / 2.0])


# ------------------------------------------------------------------------------------------
# rasterization of thickness maps (mm of material per pixel)
# ------------------------------------------------------------------------------------------
def _window(shape: tuple[int, int], pts: Array, margin: float) -> tuple[slice, slice, Array,
                                                                         Array] | None:
    h, w = shape
    x0 = max(math.floor(pts[:, 0].min() - margin), 0)
    x1 = min(math.ceil(pts[:, 0].max() + margin) + 1, w)
    y0 = max(math.floor(pts[:, 1].min() - margin), 0)
    y1 = min(math.ceil(pts[:, 1].max() + margin) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5  # pixel centres
    return slice(y0, y1), slice(x0, x1), xx, yy


def _add_convex(mu: Array, poly: Array, value: float) -> None:
    """Add ``value`` inside a convex polygon (pixels), anti-aliased over one pixel."""
    win = _window(mu.shape, poly, 2.0)
    if win is None:
        return
    sy, sx, xx, yy = win
    area = 0.5 * float(np.sum(poly[:, 0] * np.roll(poly[:, 1], -1)
                              - np.roll(poly[:, 0], -1) * poly[:, 1]))
    orient = 1.0 if area >= 0 else -1.0
    sd = np.full(xx.shape, -np.inf)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        e = b - a
        length = float(np.hypot(*e))
        if length < 1e-9:
            continue
        # signed distance to the edge line, positive outside
        d = orient * ((xx - a[0]) * e[1] - (yy - a[1]) * e[0]) / length
        sd = np.maximum(sd, d)
    mu[sy, sx] += value * np.clip(0.5 - sd, 0.0, 1.0)


def _add_sphere(mu: Array, centre: Array, radius_px: float, value_per_px: float) -> None:
    """Add the chord length of a sphere (pixels) times ``value_per_px``."""
    win = _window(mu.shape, np.stack([centre - radius_px, centre + radius_px]), 1.0)
    if win is None:
        return
    sy, sx, xx, yy = win
    r2 = radius_px**2 - (xx - centre[0]) ** 2 - (yy - centre[1]) ** 2
    mu[sy, sx] += value_per_px * 2.0 * np.sqrt(np.clip(r2, 0.0, None))


def _add_tube(mu: Array, path: Array, radius: float, value: float) -> None:
    """Add ``value`` within ``radius`` pixels of a polyline (a rib), anti-aliased."""
    win = _window(mu.shape, path, radius + 2.0)
    if win is None:
        return
    sy, sx, xx, yy = win
    dist = np.full(xx.shape, np.inf)
    for a, b in itertools.pairwise(path):
        e = b - a
        t = np.clip(((xx - a[0]) * e[0] + (yy - a[1]) * e[1]) / max(float(e @ e), 1e-9), 0, 1)
        dist = np.minimum(dist, np.hypot(xx - a[0] - t * e[0], yy - a[1] - t * e[1]))
    mu[sy, sx] += value * np.clip(radius + 0.5 - dist, 0.0, 1.0)


def _slices(n: int) -> Iterator[tuple[float, float]]:
    """Lateral positions in (-1, 1) and the elliptic half-chord at each (unit width)."""
    for k in range(n):
        t = -1.0 + (2 * k + 1) / n
        yield t, math.sqrt(max(1.0 - t * t, 0.0))


def _shrink_ap(quad: Array, factor: float) -> Array:
    """Scale a body's quad antero-posteriorly about its axis (elliptic cross-section)."""
    sup_mid, inf_mid = 0.5 * (quad[0] + quad[1]), 0.5 * (quad[2] + quad[3])
    return np.stack([sup_mid + factor * (quad[0] - sup_mid), sup_mid + factor * (quad[1] - sup_mid),
                     inf_mid + factor * (quad[2] - inf_mid), inf_mid + factor * (quad[3] - inf_mid)])


def _render_body(mu: Array, quad: Array, width: float, geo: _Geometry, n: int) -> None:
    """An elliptic-cylinder body with a cortical rim, as ``n`` magnified lateral slices."""
    dz = width / n
    for t, half in _slices(n):
        z = t * width / 2
        outer = _shrink_ap(quad, max(half, 0.15))
        inner = _shrink_ap(outer, 0.86)
        _add_convex(mu, geo.to_px(outer, z), _MU["cortex"] * dz)
        _add_convex(mu, geo.to_px(inner, z), (_MU["body"] - _MU["cortex"]) * dz)


def _render_posterior(mu: Array, body: _Body, geo: _Geometry, rng: np.random.Generator) -> None:
    """Pedicle (both sides, so two contours) and a spinous process behind the body."""
    quad = body.corners()
    post_sup, post_inf = quad[1], quad[2]
    back = -_u(0.5 * (body.sup_tilt + body.inf_tilt))
    down = post_inf - post_sup
    for side in (-1.0, 1.0):
        z = side * body.width * 0.3
        p0 = post_sup + 0.2 * down
        ped = np.stack([p0, p0 + 0.45 * down, p0 + 0.45 * down + 14.0 * back, p0 + 14.0 * back])
        _add_convex(mu, geo.to_px(ped, z), _MU["posterior"] * 8.0)
    base = post_sup + 0.1 * down + 14.0 * back
    length = float(rng.uniform(28.0, 38.0))
    tip = base + length * (back + 0.35 * _unit(down))
    spin = np.stack([base, tip, tip + 0.5 * down, base + 0.8 * down])
    _add_convex(mu, geo.to_px(spin, 0.0), _MU["posterior"] * 7.0)


def _unit(v: Array) -> Array:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _render_ribs(mu: Array, body: _Body, geo: _Geometry, rng: np.random.Generator) -> None:
    """Two ribs (left and right, different magnification) sweeping across a thoracic body."""
    quad = body.corners()
    start = 0.5 * (quad[1] + quad[2])
    axis_down = _unit(quad[2] - quad[1])
    ant = _u(0.5 * (body.sup_tilt + body.inf_tilt))
    for side in (-1.0, 1.0):
        z = side * rng.uniform(60.0, 110.0)
        s = np.linspace(0.0, 1.0, 12)[:, None]
        reach = rng.uniform(120.0, 170.0)
        path = start + s * reach * ant + (s**2 * rng.uniform(40.0, 80.0) + 10.0 * s) * axis_down
        px = geo.to_px(path, z)
        _add_tube(mu, px, 4.5 / geo.spacing, _MU["rib"] * 9.0)


def _hips(spine: _Spine, rng: np.random.Generator) -> tuple[Array, float, float]:
    """Hip-axis position (mm), femoral-head radius (mm), pelvic incidence (deg)."""
    pi = float(rng.uniform(35.0, 70.0))
    ant, post = spine.s1_plate
    mid = 0.5 * (ant + post)
    caudal = -_n(spine.ss)
    ang = math.radians(pi)
    # rotate the caudal normal of the plate towards anterior by the pelvic incidence
    c, s = math.cos(ang), math.sin(ang)
    u = np.array([c * caudal[0] + s * _u(spine.ss)[0], c * caudal[1] + s * _u(spine.ss)[1]])
    hip = mid + spine.sc * rng.uniform(95.0, 115.0) * _unit(u)
    return hip, spine.sc * float(rng.uniform(22.0, 26.0)), pi


def _render_pelvis(mu: Array, spine: _Spine, geo: _Geometry, rng: np.random.Generator
                   ) -> dict[str, Any]:
    for quad in _sacrum_segments(spine, rng):
        for t, half in _slices(5):
            z = t * 45.0 * spine.sc
            _add_convex(mu, geo.to_px(_shrink_ap(quad, max(half, 0.3)), z),
                        _MU["sacrum"] * 45.0 * spine.sc / 5)
    hip, radius, pi = _hips(spine, rng)
    for side in (-1.0, 1.0):
        z = side * spine.sc * rng.uniform(80.0, 95.0)
        centre = geo.to_px(hip[None], z)[0]
        mm_per_px = geo.spacing / geo.magnification(z)  # at the sphere's depth
        _add_sphere(mu, centre, radius / mm_per_px, _MU["femur"] * mm_per_px)
        # iliac wing: a thin plate from above the hip towards the sacrum
        mid = 0.5 * (spine.s1_plate[0] + spine.s1_plate[1])
        theta = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        centre_mm = 0.55 * mid + 0.45 * hip + np.array([0.0, -25.0]) * spine.sc
        wing = centre_mm + spine.sc * np.stack([70.0 * np.cos(theta), 48.0 * np.sin(theta)], 1)
        _add_convex(mu, geo.to_px(wing, z * 0.8), _MU["ilium"] * 6.0)
    return {"hip_axis_mm": hip.tolist(), "femoral_head_radius_mm": radius,
            "pelvic_incidence_deg": pi}


# ------------------------------------------------------------------------------------------
# imaging chain
# ------------------------------------------------------------------------------------------
def _soft_tissue(shape: tuple[int, int], geo: _Geometry, spine: _Spine,
                 rng: np.random.Generator) -> Array:
    """Water path length (mm) through an elliptic trunk around the column."""
    h, w = shape
    centre = geo.to_px(np.array([[rng.uniform(20.0, 60.0), -60.0]]))[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    a = spine.sc * rng.uniform(150.0, 210.0) / geo.spacing
    b = spine.sc * rng.uniform(350.0, 500.0) / geo.spacing
    r2 = 1.0 - ((xx - centre[0]) / a) ** 2 - ((yy - centre[1]) / b) ** 2
    return 2.0 * spine.sc * rng.uniform(140.0, 190.0) * np.sqrt(np.clip(r2, 0.0, None))


def _expose(line_integral: Array, cfg: ProjectionConfig, spacing: float,
            rng: np.random.Generator) -> tuple[Array, dict[str, Any]]:
    """Counts -> noisy, scattered, processed image in [0, 1] (bone bright)."""
    h, w = line_integral.shape
    heel = float(rng.uniform(*cfg.heel))
    ramp = 1.0 + heel * (np.linspace(-0.5, 0.5, h)[:, None] * rng.choice([-1.0, 1.0]))
    primary = ramp * np.exp(-line_integral)
    spr = float(rng.uniform(*cfg.scatter_to_primary))
    sigma_px = float(rng.uniform(*cfg.scatter_sigma_mm)) / spacing
    # a broad Gaussian blur of the primary, in Fourier space (sigma of hundreds of pixels)
    scatter = np.fft.irfft2(ndimage.fourier_gaussian(np.fft.rfft2(primary), sigma_px, n=w),
                            s=(h, w))
    signal = primary + spr * float(primary.mean()) * scatter / max(float(scatter.mean()), 1e-9)
    photons = float(rng.uniform(*cfg.photons))
    blur = float(rng.uniform(*cfg.blur_px))
    signal = ndimage.gaussian_filter(signal, blur)
    if cfg.noise:
        signal = rng.poisson(signal * photons).astype(np.float64) / photons
    log = -np.log(np.clip(signal, 0.5 / photons, None))
    amount = float(rng.uniform(*cfg.unsharp_amount))
    sharp_sigma = float(rng.uniform(8.0, 20.0)) / spacing
    log = log + amount * (log - ndimage.gaussian_filter(log, sharp_sigma))
    lo, hi = np.percentile(log, (1.0, 99.7))
    centre = float(rng.uniform(0.4, 0.6))
    slope = float(rng.uniform(4.0, 8.0))
    img = 1.0 / (1.0 + np.exp(-slope * ((log - lo) / max(hi - lo, 1e-9) - centre)))
    grid = bool(rng.random() < cfg.p_grid)
    if grid:  # anti-scatter grid lines, along one image axis
        period = float(rng.uniform(2.5, 6.0))
        along_x = bool(rng.random() < 0.5)
        stripes = 0.015 * np.sin(2 * np.pi * np.arange(w if along_x else h) / period)
        img = img + (stripes[None, :] if along_x else stripes[:, None])
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-9)
    return img, {"heel": heel, "scatter_to_primary": spr, "photons_per_px": photons,
                 "blur_px": blur, "unsharp_amount": amount, "grid_lines": grid}


# ------------------------------------------------------------------------------------------
# one image
# ------------------------------------------------------------------------------------------
def _geometry(rng: np.random.Generator, cfg: ProjectionConfig, spine: _Spine) -> _Geometry:
    spacing = float(rng.uniform(*cfg.fov_height_mm)) / cfg.height
    geo = _Geometry(rot=math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)),
                    facing=-1 if rng.random() < cfg.p_facing_left else 1,
                    offset_mm=np.zeros(2), sid=float(rng.uniform(*cfg.sid_mm)),
                    oid=float(rng.uniform(*cfg.oid_mm)),
                    axial=math.radians(rng.uniform(-1, 1) * cfg.max_axial_rotation_deg),
                    bend=math.radians(rng.uniform(-1, 1) * cfg.max_lateral_bend_deg),
                    spacing=spacing, shape=(cfg.height, cfg.width))
    # centre the lumbar column (L1 superior to the sacral plate) with a random offset
    l1 = next(b for b in spine.bodies if b.name == "L1")
    centre_px = geo.to_px(0.5 * (l1.sup_mid + np.zeros(2))[None])[0]
    shift = rng.uniform(-cfg.max_shift_frac, cfg.max_shift_frac, 2) \
        * np.array([cfg.width, cfg.height])
    target = np.array([cfg.width / 2.0, cfg.height / 2.0]) + shift
    geo.offset_mm = (target - centre_px) * spacing / geo.magnification(0.0)
    return geo


def _tilt(p: Array, a: Array, facing: int) -> float:
    return math.degrees(math.atan2(a[1] - p[1], facing * (a[0] - p[0])))


def _ground_truth(spine: _Spine, geo: _Geometry) -> tuple[Array, dict[str, float]]:
    pts = np.zeros((LUMBAR_SAGITTAL.num_points, 2))
    for body in spine.bodies:
        if body.name in _LEVELS:
            k = _LEVELS.index(body.name) * 4
            pts[k:k + 4] = geo.to_px(body.corners())
    pts[20:22] = geo.to_px(spine.s1_plate)
    f = geo.facing
    t_l1 = _tilt(pts[1], pts[0], f)
    t_l5 = _tilt(pts[18], pts[19], f)
    t_s1 = _tilt(pts[21], pts[20], f)
    angles = {"sacral_slope_deg": t_s1, "l1_s1_lordosis_deg": t_s1 - t_l1,
              "l1_l5_lordosis_deg": t_l5 - t_l1}
    return pts, angles


def generate_projection_phantom(rng_or_seed: int | np.random.Generator | np.random.SeedSequence,
                                config: ProjectionConfig | None = None, *,
                                file_name: str | None = None, image_id: int = 0,
                                patient_id: str | None = None
                                ) -> tuple[np.ndarray, ImageRecord]:
    """One style-B radiograph and its ground truth.

    Parameters
    ----------
    rng_or_seed : int, numpy Generator or SeedSequence
        Same seed, same image and record.
    config : ProjectionConfig, optional
    file_name, image_id, patient_id
        Stored in the record (defaults: ``"<patient_id>.png"``, 0, ``"proj-<seed>"``).

    Returns
    -------
    image : np.ndarray
        (H, W) float64 in [0, 1], bone bright, quantized to ``config.bits`` bits.
    record : ImageRecord
        ``LUMBAR_SAGITTAL`` points in pixels (NaN and ``v = 0`` outside the image),
        ``pixel_spacing`` (row_mm, col_mm) at the detector, and ``meta["synthetic"]``.
    """
    cfg = config or ProjectionConfig()
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) \
        else np.random.default_rng(rng_or_seed)
    spine = _build_spine(rng, cfg)
    geo = _geometry(rng, cfg, spine)
    mu = np.zeros((cfg.height, cfg.width))
    for body in spine.bodies:
        _render_body(mu, body.corners(), body.width, geo, cfg.slices)
        _render_posterior(mu, body, geo, rng)
        if body.name in _THORACIC:
            _render_ribs(mu, body, geo, rng)
    pelvis = _render_pelvis(mu, spine, geo, rng)
    mu += _MU["tissue"] * _soft_tissue(mu.shape, geo, spine, rng)
    img, imaging = _expose(mu, cfg, geo.spacing, rng)
    levels = float(2**cfg.bits - 1)
    img = np.rint(img * levels) / levels
    pts, angles = _ground_truth(spine, geo)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < cfg.width) & (pts[:, 1] >= 0) & \
        (pts[:, 1] < cfg.height)
    vis = np.where(inside, 2, 0).astype(np.int8)
    points = np.where(inside[:, None], pts, np.nan)
    if patient_id is None:
        patient_id = (f"proj-{int(rng_or_seed):06d}" if isinstance(rng_or_seed, int)
                      else f"proj-{int(rng.integers(0, 10**9)):09d}")
    meta: dict[str, Any] = {
        "generator": "spinelandmarks.phantoms.projection", "style": "projection", **angles,
        "sacral_slope_anatomical_deg": math.degrees(spine.ss),
        "l1_s1_lordosis_anatomical_deg": math.degrees(spine.lordosis),
        "facing": "left" if geo.facing < 0 else "right", "rotation_deg": math.degrees(geo.rot),
        "axial_rotation_deg": math.degrees(geo.axial),
        "lateral_bend_deg": math.degrees(geo.bend), "sid_mm": geo.sid, "oid_mm": geo.oid,
        "magnification": geo.magnification(0.0), "fov_height_mm": geo.spacing * cfg.height,
        "size_scale": spine.sc, **pelvis, **imaging,
        "dicom": bool(rng.random() < cfg.p_dicom),
        "photometric": "MONOCHROME1" if rng.random() < cfg.p_monochrome1 else "MONOCHROME2",
    }
    record = ImageRecord(file_name=file_name or f"{patient_id}.png", width=cfg.width,
                         height=cfg.height, points=points, visibility=vis, image_id=image_id,
                         pixel_spacing=(geo.spacing, geo.spacing), patient_id=patient_id,
                         meta={"synthetic": meta})
    return img, record


# ------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------
def _one(job: PhantomJob) -> ImageRecord:
    from ..data.io import write_dicom, write_png16

    index, ss, seed, out_dir, cfg = job
    rng = np.random.default_rng(ss)
    img, rec = generate_projection_phantom(rng, cfg, image_id=index + 1,
                                           patient_id=f"proj-{seed}-{index:06d}")
    syn = rec.meta["synthetic"]
    ext = "dcm" if syn["dicom"] else "png"
    rec.file_name = f"images/{index:05d}.{ext}"
    path = Path(out_dir) / rec.file_name
    if syn["dicom"]:
        write_dicom(path, img, pixel_spacing=rec.pixel_spacing, patient_id=rec.patient_id,
                    bits_stored=cfg.bits, photometric=syn["photometric"])
    else:
        syn["photometric"] = None
        write_png16(path, img, bits=cfg.bits)
    return rec


def generate_projection_dataset(out_dir: str | os.PathLike[str], num_images: int,
                                seed: int = 0, config: ProjectionConfig | None = None,
                                workers: int = 1) -> Path:
    """Write a style-B dataset in the layout of the conventions.

    Parameters
    ----------
    out_dir : str or PathLike
        Dataset root: ``images/NNNNN.png`` (12-bit values in 16-bit PNG) or ``.dcm`` (BitsStored
        12, MONOCHROME1 or 2) and ``annotations.json`` (COCO keypoints, ``LUMBAR_SAGITTAL``).
    num_images : int
    seed : int
        Image ``i`` uses child ``i`` of ``np.random.SeedSequence(seed)``: the dataset is the same
        for any ``workers``. Patient ids are ``proj-<seed>-<i:06d>``.
    config : ProjectionConfig, optional
    workers : int
        Worker processes (1: in-process).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from .writer import write_phantom_dataset

    return write_phantom_dataset(out_dir, _one, num_images, seed, config or ProjectionConfig(),
                                 LUMBAR_SAGITTAL, workers)
