"""Phantoms of standing full-length lateral radiographs: C7 to the femoral heads.

The column is built as the lumbar phantoms' is (:mod:`.frames`): a chain of endplates from the
S1 plate upward, here through L5 .. L1, T12 .. T1 and C7, each step a wedge angle and a
height, so every endplate's tilt is known exactly. Drawn from clinical ranges: the sacral
slope, the L1-S1 lordosis, the T4-T12 kyphosis and the pelvic tilt; the wedge of the
thoracolumbar junction (the T12-L1 disc) is then solved so that the C7 plumb line falls at a
drawn sagittal vertical axis. The T1 pelvic angle follows from the construction. The image is
long and narrow (width 0.36 of the height, a 85-95 cm field), never rotated (its vertical is
the gravity line the SVA is measured along), and shows what makes such films hard: the
shoulders (humeral heads, the shoulder girdle's soft tissue) over the cervicothoracic
junction, ribs and scapulae over the thoracic bodies, the lungs, the pelvis.

``record.meta["synthetic"]`` holds the generating parameters in the image's terms
(conventions, "Whole-spine alignment"): ``sacral_slope_deg``, ``l1_s1_lordosis_deg``,
``thoracic_kyphosis_t4_t12_deg``, ``pelvic_incidence_deg``, ``pelvic_tilt_deg``, ``sva_mm``,
``t1_pelvic_angle_deg``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.annotations import ImageRecord
from ..schema import CORNERS, FEMORAL_HEADS, WHOLE_SPINE_BODIES, WHOLE_SPINE_SAGITTAL
from .anatomy import _build_sacrum, _hip_axis
from .canvas import _bezier, _Canvas, _draw_body, _draw_ellipse, _draw_posterior, _draw_tube
from .config import Array, PhantomConfig, SeedLike
from .exposure import expose
from .frames import _plate, _step, _Vertebra
from .phantom import _as_rng, _visibility
from .rendering import _new_canvas

__all__ = ["WHOLE_SPINE_ASPECT", "WholeSpine", "draw_whole_spine",
           "generate_whole_spine_phantom"]

#: Width / height of a full-length film.
WHOLE_SPINE_ASPECT = 0.36
#: Field-of-view height of a full-length film, mm.
WHOLE_SPINE_FOV_MM = (850.0, 950.0)

#: Levels built above S1, caudal to cranial.
_UP = tuple(reversed(WHOLE_SPINE_BODIES))
#: Body depth and posterior height at size scale 1 (mm), in :data:`_UP` order.
_DEPTH = (42, 41, 40, 38, 36, 34, 32, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 18)
_HEIGHT = (27, 28, 28, 27, 26, 24, 23, 22, 21, 20, 19, 18.5, 18, 17.5, 17, 16.5, 16, 14)
#: Mid-disc height below each level of :data:`_UP` (L5-S1, L4-L5, ..., C7-T1), mm.
_DISC = (10.5, 11.5, 10.5, 9.5, 8.5, 7.0, 6.0, 5.5, 5.5, 5.0, 5.0, 4.5, 4.5, 4.5, 4.0, 4.0,
         4.0, 5.0)


@dataclass
class WholeSpine:
    """One drawn patient (patient frame: anterior +x, caudal +y, mm; angles in degrees)."""

    facing: int
    sc: float
    spacing: float
    ss: float
    ll: float
    tk: float
    pt: float
    pi: float
    sva_mm: float
    t1pa: float
    vertebrae: dict[str, _Vertebra]
    sacrum: list[_Vertebra]
    heads: Array  # (2, 2) femoral head centres

    def points(self) -> Array:
        """(76, 2) the points of ``WHOLE_SPINE_SAGITTAL`` in schema order (patient frame)."""
        s1 = self.sacrum[0].sup
        return np.concatenate([self.vertebrae[lv].corners for lv in WHOLE_SPINE_BODIES]
                              + [np.stack([s1.a, s1.p]), self.heads])


def _segment_wedges(rng: np.random.Generator, ll: float, tk: float) -> Array:
    """Wedges (deg) of the 36 segments S1 -> C7 (disc below each level, then its body);
    the T12-L1 disc (index 10) is left 0 for :func:`_solve_junction`."""
    w = np.zeros(2 * len(_UP))
    lumbar = np.array([0.30, 0.12, 0.22, 0.06, 0.14, 0.03, 0.08, 0.0, 0.05, 0.0])
    free = lumbar > 0
    w[:10][free] = ll * rng.dirichlet(lumbar[free] * 40.0)
    # T12 body (11) up to the T4 body (27): the kyphosis, mid-thoracic segments wedged most
    thoracic = np.sin(np.linspace(0.3, math.pi - 0.3, 17)) + 0.2
    w[11:28] = -tk * rng.dirichlet(thoracic * 30.0)
    w[28:] = rng.normal(-1.5, 1.0, size=len(w) - 28)  # T3 .. C7: mildly kyphotic
    return w


def _build(s1_tilt: float, wedges: Array, sc: float, depth: Array, height: Array
           ) -> dict[str, _Vertebra]:
    below = _plate(np.zeros(2), s1_tilt, 44.0 * sc)
    out: dict[str, _Vertebra] = {}
    for i, lv in enumerate(_UP):
        inf = _step(below, wedges[2 * i], _DISC[i] * sc, depth[i] * 1.02, min_height=1.2 * sc)
        sup = _step(inf, wedges[2 * i + 1], height[i], depth[i], min_height=8.0 * sc)
        out[lv] = _Vertebra(lv, inf, sup)
        below = sup
    return out


def _sva(vertebrae: dict[str, _Vertebra], s1_p: Array) -> float:
    """C7 body centre x minus the S1 posterior-superior corner's x (mm, anterior +)."""
    return float(vertebrae["C7"].corners.mean(axis=0)[0] - s1_p[0])


def _solve_junction(s1_tilt: float, wedges: Array, sc: float, depth: Array, height: Array,
                    s1_p: Array, target_mm: float) -> float:
    """The T12-L1 disc wedge (deg, in [-20, 20]) that puts the C7 plumb line at
    ``target_mm`` (bisection: a lordotic junction wedge moves C7 posteriorly)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        wedges[10] = mid
        if _sva(_build(s1_tilt, wedges, sc, depth, height), s1_p) > target_mm:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def draw_whole_spine(rng: np.random.Generator, cfg: PhantomConfig) -> WholeSpine:
    """Draw a patient: sizes, SS, LL, TK, PT and SVA; build the column, sacrum and hips."""
    U = rng.uniform
    facing = -1 if rng.random() < cfg.p_facing_left else 1
    sc = float(U(*cfg.size_scale))
    spacing = float(cfg.pixel_spacing_mm or U(*WHOLE_SPINE_FOV_MM) / cfg.long_side)
    ss_lo, ss_hi = cfg.sacral_slope_deg
    ss = float(np.clip(rng.normal(0.5 * (ss_lo + ss_hi), (ss_hi - ss_lo) / 4), ss_lo, ss_hi))
    ll = float(np.clip(rng.normal(ss + 13.0, 8.0), *cfg.lordosis_deg))
    tk = float(np.clip(rng.normal(40.0, 10.0), 15.0, 70.0))
    sva_target = float(np.clip(rng.normal(15.0, 25.0), -40.0, 90.0))
    depth = np.array(_DEPTH, float) * sc * U(0.96, 1.04, size=len(_UP))
    height = np.array(_HEIGHT, float) * sc * U(0.95, 1.05, size=len(_UP))
    wedges = _segment_wedges(rng, ll, tk)
    s1 = _plate(np.zeros(2), math.radians(ss), 44.0 * sc)
    wedges[10] = _solve_junction(s1.tilt, wedges, sc, depth, height, s1.p, sva_target)
    vertebrae = _build(s1.tilt, wedges, sc, depth, height)
    _, sacrum = _build_sacrum(rng, s1, sc, s1.depth)
    pi, _, _, hip = _hip_axis(rng, ss, s1, sc)
    # the two heads a few mm apart (the far one magnified and shifted by the beam)
    offset = np.array([U(-6.0, 6.0), U(-4.0, 4.0)]) * sc
    heads = np.stack([hip - 0.5 * offset, hip + 0.5 * offset])
    t1 = vertebrae["T1"].corners.mean(axis=0)

    def from_upward(v: Array) -> float:
        return math.degrees(math.atan2(v[0], -v[1]))

    t1pa = from_upward(t1 - hip) - from_upward(s1.mid - hip)
    return WholeSpine(facing, sc, spacing, ss, ll, tk, pi - ss, pi, _sva(vertebrae, s1.p),
                      t1pa, vertebrae, sacrum, heads)


def _render(rng: np.random.Generator, cfg: PhantomConfig, pat: WholeSpine) -> _Canvas:
    """Project (mirror for a patient facing left, 1 / spacing, centred) and draw."""
    H, W = cfg.shape
    pts = pat.points()
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0)) + rng.uniform(-15, 15, size=2)
    lin = np.diag([float(pat.facing), 1.0]) / pat.spacing
    to_img = np.concatenate([lin, (np.array([W / 2.0, H / 2.0]) - lin @ centre)[:, None]],
                            axis=1)
    cv = _new_canvas(rng, cfg, to_img, pat.spacing)
    sc, density = pat.sc, float(rng.uniform(0.6, 1.1))
    bd, cort = 0.3 * density, 0.45 * (0.6 + 0.4 * density)
    for lv in _UP:
        vb = pat.vertebrae[lv]
        conc = float(rng.uniform(0.5, 1.2)) * sc
        _draw_body(cv, vb, bd, cort, 1.0 * sc, conc, conc, 1.0 * sc, 0.25, cfg.endplate_rim)
        _draw_posterior(cv, vb, sc, 1.0, (45.0 if lv.startswith(("T", "C")) else 52.0) * sc)
    for k, seg in enumerate(pat.sacrum):
        _draw_body(cv, seg, bd * (1.0 - 0.08 * k), cort * 0.8, 1.0 * sc, 0.5, 0.4, 0.5, 0.25,
                   cfg.endplate_rim)
    for head in pat.heads:
        _draw_ellipse(cv, head, 0.0, 24.0 * sc, 24.0 * sc, 0.22, 0.2, rim_mm=2.0)
    hip = pat.heads.mean(axis=0)  # ilium: a faint plate from the sacrum to the hips
    _draw_ellipse(cv, 0.5 * (hip + pat.sacrum[0].sup.mid), 1.2, 75.0 * sc, 45.0 * sc, 0.08,
                  0.06, edge_mm=6.0)
    _render_ribs_and_shoulders(rng, cv, pat)
    _render_trunk(rng, cv, pat)
    return cv


def _render_ribs_and_shoulders(rng: np.random.Generator, cv: _Canvas, pat: WholeSpine
                               ) -> None:
    """Both ribs of every thoracic level, the scapulae, and the shoulders over C7-T2."""
    sc, U = pat.sc, rng.uniform
    for lv in WHOLE_SPINE_BODIES[1:13]:  # T1 .. T12
        vb = pat.vertebrae[lv]
        reach = 1.0 + 0.8 * math.sin(math.pi * int(lv[1:]) / 13)
        for _side in range(2):
            p0 = vb.sup.p + np.array([-10.0, 6.0]) * sc + rng.normal(0, 2.0, size=2) * sc
            p1 = p0 + np.array([-30.0, 25.0]) * sc * reach
            p2 = p0 + np.array([U(60, 110), U(50, 80)]) * sc * reach
            _draw_tube(cv, _bezier(p0, p1, p2), np.linspace(5.0, 3.5, 12) * sc, 0.04, 0.09,
                       rim_mm=1.2)
    for k in range(2):  # scapulae: faint plates behind T2-T7
        top = pat.vertebrae["T2"].sup.p
        _draw_ellipse(cv, top + np.array([-45.0 - 10 * k, 70.0]) * sc, 1.45, 80.0 * sc,
                      20.0 * sc, 0.07, 0.05, edge_mm=4.0)
    c7 = pat.vertebrae["C7"].corners.mean(axis=0)
    for _ in range(2):  # humeral heads and the shoulder girdle over the junction
        head = c7 + np.array([U(10, 60), U(10, 45)]) * sc
        _draw_ellipse(cv, head, 0.0, 25.0 * sc, 25.0 * sc, 0.2, 0.15, rim_mm=2.0)
        _draw_ellipse(cv, head + np.array([-10.0, 10.0]) * sc, 0.3, 110.0 * sc, 75.0 * sc,
                      float(U(0.25, 0.4)), edge_mm=25.0)


def _render_trunk(rng: np.random.Generator, cv: _Canvas, pat: WholeSpine) -> None:
    """Soft tissue of the trunk, thinner over the lungs, and the neck above C7."""
    sc, U, to_img = pat.sc, rng.uniform, cv.to_img
    inv = np.linalg.inv(to_img[:, :2])
    off = -inv @ to_img[:, 2]
    xs = (np.arange(cv.w, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(cv.h, dtype=np.float32) + 0.5)[:, None]
    xm = inv[0, 0] * xs + inv[0, 1] * ys + off[0]
    ym = inv[1, 0] * xs + inv[1, 1] * ys + off[1]
    ymid = {lv: float(pat.vertebrae[lv].corners[:, 1].mean()) for lv in ("C7", "T6", "T12")}
    column_x = np.interp(ym, [ymid["C7"], ymid["T6"], ymid["T12"], 0.0],
                         [float(pat.vertebrae[lv].corners[:, 0].mean())
                          for lv in ("C7", "T6", "T12")] + [0.0])
    x_post = column_x - float(U(70, 100)) * sc
    x_ant = column_x + float(U(170, 240)) * sc
    half = 0.5 * (x_ant - x_post)
    q = np.clip((xm - x_post) * (x_ant - xm) / (half * half), 0.0, 1.0)
    soft = np.sqrt(q) * np.float32(U(0.45, 0.65))
    # lungs: air anterior to the thoracic column, between T2 and T11
    lung = np.exp(-(((xm - column_x - 80.0 * sc) / (75.0 * sc)) ** 2)
                  - (((ym - ymid["T6"]) / (150.0 * sc)) ** 2) ** 2)
    soft *= 1.0 - 0.55 * lung
    neck = ym < ymid["C7"] - 20.0 * sc  # above the shoulders: the narrower neck
    soft = np.where(neck, soft * 0.6, soft)
    cv.att += soft.astype(np.float32)


def generate_whole_spine_phantom(rng_or_seed: SeedLike, config: PhantomConfig | None = None,
                                 *, file_name: str | None = None, image_id: int = 0,
                                 patient_id: str | None = None
                                 ) -> tuple[np.ndarray, ImageRecord]:
    """One standing full-length lateral radiograph and its ``whole_spine_sagittal`` record.

    Parameters
    ----------
    rng_or_seed : int, numpy Generator or SeedSequence
        The same seed gives the same image and record.
    config : PhantomConfig, optional
        ``long_side`` (image height), the clinical ranges, ``p_facing_left``, ``size_scale``,
        ``pixel_spacing_mm`` and the exposure settings are used; the width is
        :data:`WHOLE_SPINE_ASPECT` of the height and the field of view 85-95 cm.
    file_name, image_id, patient_id
        As for :func:`~.phantom.generate_phantom`.

    Returns
    -------
    image : np.ndarray
        (H, W) float32 in ``[0, 1]``.
    record : ImageRecord
        The 76 points in pixels (``v = 0`` and NaN outside the image or behind the
        collimator), ``pixel_spacing``, ``patient_id`` and ``meta["synthetic"]`` (the
        generating parameters, see the module docstring).
    """
    cfg = dataclasses.replace(config or PhantomConfig(), aspect=WHOLE_SPINE_ASPECT)
    rng = _as_rng(rng_or_seed)
    pat = draw_whole_spine(rng, cfg)
    cv = _render(rng, cfg, pat)
    exp = expose(rng, cfg, cv, pat.spacing, False)
    if patient_id is None:
        patient_id = (f"synth-{int(rng_or_seed):06d}" if isinstance(rng_or_seed, int | np.integer)
                      else f"synth-{int(rng.integers(0, 10**9)):09d}")
    pts = pat.points() @ cv.to_img[:, :2].T + cv.to_img[:, 2]
    vis = _visibility(pts, exp, pat.spacing)
    pts[vis == 0] = np.nan
    H, W = exp.image.shape
    return exp.image, ImageRecord(
        file_name=file_name or f"{patient_id}.png", width=W, height=H, points=pts,
        visibility=vis, image_id=image_id, pixel_spacing=(pat.spacing, pat.spacing),
        patient_id=patient_id, meta={"synthetic": _meta(pat, exp.noise_level)})


def _meta(pat: WholeSpine, noise: float) -> dict[str, Any]:
    return {"generator": "spinelandmarks.phantoms.whole_spine",
            "facing": "left" if pat.facing < 0 else "right",
            "sacral_slope_deg": pat.ss, "l1_s1_lordosis_deg": pat.ll,
            "thoracic_kyphosis_t4_t12_deg": pat.tk, "pelvic_incidence_deg": pat.pi,
            "pelvic_tilt_deg": pat.pt, "sva_mm": pat.sva_mm,
            "t1_pelvic_angle_deg": pat.t1pa, "size_scale": pat.sc, "noise_level": noise}


assert WHOLE_SPINE_SAGITTAL.levels[-1] == FEMORAL_HEADS and CORNERS[0] == "anterior_superior"
