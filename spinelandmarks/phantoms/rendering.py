"""The drawn patient on the image: the projection to pixels, then every structure as
attenuation on a :class:`~.canvas._Canvas` (bones, pelvis, ribs, aortic calcification, metal
implants, soft tissue, bowel gas).

The stages draw from the generator in the order :func:`render` calls them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .canvas import (
    _bezier,
    _Canvas,
    _draw_body,
    _draw_ellipse,
    _draw_poly,
    _draw_posterior,
    _draw_tube,
    _poly_bbox,
    _sd_convex,
)
from .config import CHAIN, LUMBAR, Array, PhantomConfig
from .frames import _IDENTITY, _apply, _frame, _unit

__all__ = ["Rendering", "render"]


@dataclass
class Rendering:
    """The attenuation maps and what was drawn (for ``record.meta["synthetic"]``)."""

    canvas: _Canvas
    to_img: Array  # 2x3, patient mm -> image pixels
    rot: float  # field-of-view rotation, degrees
    cropped: bool
    osteophytes: list[str] = field(default_factory=list)
    aortic: bool = False
    implants: bool = False
    implant_info: dict[str, Any] = field(default_factory=dict)
    n_gas: int = 0
    #: Per drawn level: (superior, inferior, anterior) concavity in mm, the corner radius
    #: and the straight rim of the endplates (:attr:`PhantomConfig.endplate_rim`).
    body_concavity: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    corner_radius: float = 0.0
    endplate_rim: float = 0.0
    #: The two drawn femoral head centres (patient mm), nearer side first.
    femoral_heads: list[Array] = field(default_factory=list)


def render(rng: np.random.Generator, cfg: PhantomConfig, anat: Anatomy) -> Rendering:
    """Project the patient and draw every structure."""
    to_img, rot, cropped = _projection(rng, cfg, anat)
    out = Rendering(_new_canvas(rng, cfg, to_img, anat.spacing), to_img, rot, cropped)
    cv = out.canvas
    out.osteophytes = _render_spine(rng, cfg, cv, anat, out)
    out.femoral_heads = _render_pelvis(rng, cv, anat, cfg.ilium_shift_mm)
    _render_ribs(rng, cv, anat)
    out.aortic = _render_aorta(rng, cfg, cv, anat)
    out.implants = bool(rng.random() < cfg.p_implants)
    if out.implants:
        out.implant_info = _render_implants(rng, cv, anat)
    _render_soft_tissue(rng, cv, anat)
    out.n_gas = _render_gas(rng, cfg, cv, anat)
    return out


def _projection(rng: np.random.Generator, cfg: PhantomConfig, anat: Anatomy
                ) -> tuple[Array, float, bool]:
    """Patient mm -> pixels: mirror when facing left, rotation, 1 / spacing, shift, crop."""
    U = rng.uniform
    H, W = cfg.shape
    center_mm = anat.lumbar_points().mean(axis=0) + np.array([U(-10, 15), 0.0])
    rot = float(U(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    shift = U(-cfg.max_shift_frac, cfg.max_shift_frac, size=2) * np.array([W, H])
    cropped = bool(rng.random() < cfg.p_crop)
    if cropped:
        ang = U(0, 2 * math.pi)
        shift = shift + U(0.08, 0.2) * np.array([math.cos(ang) * W, math.sin(ang) * H])
    r = math.radians(rot)
    rmat = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    lin = rmat @ np.diag([float(anat.facing), 1.0]) / anat.spacing
    c_img = np.array([W / 2.0, H / 2.0]) + shift
    return np.concatenate([lin, (c_img - lin @ center_mm)[:, None]], axis=1), rot, cropped


def _new_canvas(rng: np.random.Generator, cfg: PhantomConfig, to_img: Array,
                spacing: float) -> _Canvas:
    """An empty canvas with the trabecular texture (vertical struts)."""
    H, W = cfg.shape
    tex = rng.standard_normal((H, W)).astype(np.float32)
    tex = ndimage.gaussian_filter(tex, sigma=(max(1.0 / spacing, 0.5), max(0.45 / spacing, 0.5)))
    tex /= float(tex[:: max(H // 64, 1), :: max(W // 64, 1)].std()) + 1e-6
    return _Canvas((H, W), to_img, spacing, tex)


def _render_spine(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas, anat: Anatomy,
                  out: Rendering) -> list[str]:
    """Vertebral bodies and posterior elements, osteophytes, sacrum and coccyx; returns the
    levels with osteophytes. The bodies' shapes go to ``out`` (for the ground truth)."""
    sc, U = anat.sc, rng.uniform
    corner_r = out.corner_radius = 1.0 * sc
    rim = out.endplate_rim = cfg.endplate_rim
    bd = 0.3 * anat.density  # cancellous level
    cort = 0.45 * (0.6 + 0.4 * anat.density)
    trab = float(U(0.15, 0.35))
    for lv in CHAIN:
        vb = anat.vertebrae[lv]
        c = anat.concavity[lv]
        out.body_concavity[lv] = (c, c, float(U(0.8, 2.0)) * sc)
        _draw_body(cv, vb, bd, cort, corner_r, *out.body_concavity[lv], trab, rim)
        sp = (40.0 if lv == "L5" else 52.0 if lv in ("L4", "L1", "T12", "T11") else 55.0) * sc
        _draw_posterior(cv, vb, sc, 1.0, sp)
    osteo = _render_osteophytes(rng, cfg, cv, anat)
    _render_sacrum(cv, anat, bd, cort, corner_r, trab, rim)
    return osteo


def _render_osteophytes(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas,
                        anat: Anatomy) -> list[str]:
    """Anterior lipping at both endplates of about half the lumbar levels of some patients."""
    sc, U = anat.sc, rng.uniform
    osteo: list[str] = []
    if rng.random() < cfg.p_osteophytes * (0.5 + anat.age_deg):
        for lv in LUMBAR:
            if rng.random() < 0.5:
                vb = anat.vertebrae[lv]
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
    return osteo


def _render_sacrum(cv: _Canvas, anat: Anatomy, bd: float, cort: float, corner_r: float,
                   trab: float, rim: float) -> None:
    """Sacral segment bodies, fused remnant discs, dorsal plate, ala, S1 posterior elements
    and the coccyx."""
    sc, sacrum, s1, d_s1 = anat.sc, anat.sacrum, anat.s1, anat.d_s1
    for k, seg in enumerate(sacrum):
        _draw_body(cv, seg, bd * (1.0 - 0.08 * k), cort * (1.0 if k == 0 else 0.7), corner_r,
                   0.5 if k else anat.concavity["L5"], 0.4, 0.5, trab, rim)
    for k in range(4):  # fused remnant discs: bone bridges between the sacral segments
        a_, b_ = sacrum[k].inf, sacrum[k + 1].sup
        _draw_poly(cv, _IDENTITY, np.stack([a_.p, a_.a, b_.a, b_.p]), 0.0, 0.6 * bd, 0.0)
    _draw_posterior(cv, sacrum[0], sc, 1.0, 0.0, sacral=True)
    dorsal = [seg.sup.p + (seg.sup.p - seg.sup.a) / seg.sup.depth * (14.0 - 2.0 * k) * sc
              for k, seg in enumerate(sacrum)]
    dorsal.append(sacrum[-1].inf.p - 4.0 * sc * _unit(sacrum[-1].inf.tilt))
    _draw_tube(cv, np.stack(dorsal), np.linspace(7.0, 3.0, len(dorsal)) * sc, 0.22, 0.18)
    _draw_ellipse(cv, _apply(anat.s1_frame, np.array([0.1 * d_s1, 0.45 * anat.sac_h[0]])),
                  s1.tilt, 0.55 * d_s1, 0.45 * anat.sac_h[0], 0.1, edge_mm=4.0)
    cocc_dir = _unit(sacrum[-1].inf.tilt + math.pi / 2 - math.radians(20))
    c0 = sacrum[-1].inf.mid + 3.0 * sc * cocc_dir
    _draw_tube(cv, np.stack([c0, c0 + 22.0 * sc * cocc_dir]), np.array([5.0, 2.5]) * sc,
               0.18, 0.1)


# The ilium outline, its crest and the iliopectineal line, designed in the S1 frame (mm) for a
# 40 deg sacral slope; point 8 of the outline and 2 of the line move with the hip axis.
_ILIUM_REF = np.array([[-48, 28], [-53, -6], [-38, -34], [-12, -50], [22, -44], [50, -24],
                       [60, -4], [60, 18], [0, 0], [-2, 70], [-32, 52]], float)
_CREST_REF = np.array([[-48, 26], [-53, -6], [-38, -34], [-12, -50], [22, -44], [50, -24],
                       [60, -4]], float)
_IPL_REF = np.array([[22, 2], [30, 25], [0, 0]], float)


def _render_pelvis(rng: np.random.Generator, cv: _Canvas, anat: Anatomy,
                   ilium_shift_mm: tuple[float, float] = (0.0, 0.0)) -> list[Array]:
    """Both ilia (slightly offset and magnified, the crest shifted cranially by a draw from
    ``ilium_shift_mm``), femoral heads and necks, acetabular roofs; returns the two femoral
    head centres (patient mm)."""
    heads: list[Array] = []
    sc = anat.sc
    ref_rot = math.radians(40.0)
    rr = np.array([[math.cos(ref_rot), math.sin(ref_rot)],
                   [-math.sin(ref_rot), math.cos(ref_rot)]])
    head_r = 24.0 * sc * float(rng.uniform(0.95, 1.05))
    # no draw for the default range: datasets made without the shift stay bit-identical
    shift = float(rng.uniform(*ilium_shift_mm)) * sc if any(ilium_shift_mm) else 0.0
    lift = rr @ np.array([0.0, -shift])  # cranial in the design frame, in the S1 frame
    for side in range(2):
        off = rng.normal(0.0, 4.0, size=2) * sc
        mag = 1.0 + 0.04 * side
        pts_local = (_ILIUM_REF * sc * mag) @ rr.T + lift
        pts_local[8] = anat.hip_local + np.array([0.0, -head_r - 6.0 * sc])
        crest = (_CREST_REF * sc * mag) @ rr.T + lift
        ipl = (_IPL_REF * sc * mag) @ rr.T + lift
        ipl[2] = anat.hip_local + np.array([-0.7, -0.7]) * head_r
        fr = anat.s1_frame.copy()
        fr[:, 2] += off
        _render_ilium(cv, fr, pts_local, crest, ipl, sc)
        heads.append(_render_hip(rng, cv, anat, fr, head_r, mag))
    return heads


def _render_ilium(cv: _Canvas, fr: Array, pts_local: Array, crest: Array, ipl: Array,
                  sc: float) -> None:
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


def _render_hip(rng: np.random.Generator, cv: _Canvas, anat: Anatomy, fr: Array,
                head_r: float, mag: float) -> Array:
    """A femoral head, its neck and trochanter, the acetabular roof; returns the centre."""
    sc = anat.sc
    h_c = _apply(fr, anat.hip_local * mag)
    _draw_ellipse(cv, h_c, 0.0, head_r * mag, head_r * mag, 0.35, 0.3, rim_mm=2.0,
                  texture=0.2)
    neck_dir = _unit(anat.s1.tilt - math.radians(40.0) + math.radians(float(rng.uniform(60, 80))))
    neck = np.stack([h_c, h_c + 80.0 * sc * neck_dir])
    _draw_tube(cv, neck, np.array([15.0, 17.0]) * sc, 0.3, 0.25, rim_mm=2.5)
    _draw_ellipse(cv, h_c + np.array([-22.0, 38.0]) * sc, 0.3, 18.0 * sc, 24.0 * sc, 0.2,
                  0.1, rim_mm=2.0)
    # acetabular roof (sourcil)
    arc = np.array([anat.hip_local * mag + (head_r * mag + 2.0) * np.array(
        [math.cos(t), -math.sin(t)]) for t in np.linspace(0.3, 2.6, 9)])
    _draw_tube(cv, _apply(fr, arc), 2.0 * sc, 0.25, 0.1)
    return h_c


def _render_ribs(rng: np.random.Generator, cv: _Canvas, anat: Anatomy) -> None:
    """The 11th and 12th ribs, both sides."""
    sc, U = anat.sc, rng.uniform
    for lv, length in (("T12", 1.0), ("T11", 1.35)):
        vb = anat.vertebrae[lv]
        for _side in range(2):
            p0 = vb.sup.p + np.array([-8.0, 8.0]) * sc + rng.normal(0, 3.0, size=2) * sc
            p1 = p0 + np.array([-40.0, 20.0]) * sc * length
            p2 = p0 + np.array([U(10, 60), U(40, 70)]) * sc * length
            _draw_tube(cv, _bezier(p0, p1, p2), np.linspace(5.0, 3.0, 12) * sc, 0.05, 0.1,
                       rim_mm=1.2)


def _render_aorta(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas, anat: Anatomy
                  ) -> bool:
    """Calcified plaques on both aortic walls along the anterior spine, for some patients."""
    sc, U = anat.sc, rng.uniform
    aortic = bool(rng.random() < cfg.p_aortic_calcification * (0.4 + anat.age_deg))
    if not aortic:
        return False
    ant = np.stack([anat.vertebrae[lv].corners[0] for lv in ("L1", "L2", "L3", "L4")]
                   + [anat.vertebrae["L4"].inf.a])
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
    return True


def _render_implants(rng: np.random.Generator, cv: _Canvas, anat: Anatomy) -> dict[str, Any]:
    """Pedicle screws and rods over 2-3 levels, interbody cages; returns what was placed."""
    start = int(rng.integers(1, 4))  # lowest instrumented level: 1 = S1, 2 = L5, 3 = L4
    n_lv = int(rng.integers(2, 4))
    inst = [lv for lv in ("S1", "L5", "L4", "L3", "L2")][max(0, start - 1):][:n_lv]
    heads = _render_screws(rng, cv, anat, inst)
    hp = np.array(heads)
    for side in range(2):  # rods through the screw heads
        rod = hp[side::2] + np.array([-5.0, 0.0]) * anat.sc
        order = np.argsort(rod[:, 1])
        rod = rod[order]
        cap = np.array([[0.0, 6.0 * anat.sc]])
        ext = np.concatenate([rod[:1] - cap, rod, rod[-1:] + cap])
        _draw_tube(cv, ext, 2.8 * anat.sc, 3.5, 0.0, target="metal")
    return {"levels": inst, "cages": _render_cages(rng, cv, anat, inst)}


def _render_screws(rng: np.random.Generator, cv: _Canvas, anat: Anatomy, inst: list[str]
                   ) -> list[Array]:
    """Two pedicle screws per instrumented level; returns their heads (patient mm)."""
    sc, U, s1 = anat.sc, rng.uniform, anat.s1
    heads: list[Array] = []
    for lv in inst:
        if lv == "S1":
            fr, h, dep = _frame(s1.p, _unit(s1.tilt)), float(anat.sac_h[0]), s1.depth
            entry = np.array([-20.0, 0.45 * h]) * np.array([sc, 1.0])
            target_pt = np.array([dep - 2.0, 2.5])  # promontory (tricortical)
        else:
            fr, h, dep = anat.vertebrae[lv].local_frame()
            entry = np.array([-20.0 * sc, 0.38 * h])
            target_pt = np.array([0.82 * dep, 0.38 * h + float(U(-3, 3))])
        for side in range(2):
            dv = np.array([float(U(-1.5, 1.5)), float(rng.normal(0, 1.5))]) * sc + \
                np.array([0.0, 2.0 * side])
            a, b = entry + dv, target_pt + dv * 0.5
            _draw_tube(cv, _apply(fr, np.stack([a, b])), np.array([3.4, 2.6]) * sc, 4.0,
                       0.0, target="metal")
            heads.append(_apply(fr, a))
            cap = np.stack([a - np.array([4.0, 0.0]), a + np.array([2.0, 0.0])])
            _draw_tube(cv, _apply(fr, cap), 6.0 * sc, 3.0, 0.0, target="metal")
    return heads


def _render_cages(rng: np.random.Generator, cv: _Canvas, anat: Anatomy, inst: list[str]
                  ) -> list[str]:
    """Interbody cages (titanium, or PEEK with tantalum markers) in some fused discs."""
    U, vertebrae = rng.uniform, anat.vertebrae
    cages: list[str] = []
    below_of = {"L5": anat.s1, "L4": vertebrae["L5"].sup, "L3": vertebrae["L4"].sup,
                "L2": vertebrae["L3"].sup}
    for lv in inst:
        if lv == "S1" or rng.random() > 0.6:
            continue
        lower_pl, upper_pl = below_of[lv], anat.plates_inf[lv]
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
                           1.0 * anat.sc, 4.0, 0.0, target="metal")
        cages.append(f"{lv}-{'S1' if lv == 'L5' else CHAIN[CHAIN.index(lv) - 1]}"
                     + (" titanium" if titanium else " peek"))
    return cages


def _render_soft_tissue(rng: np.random.Generator, cv: _Canvas, anat: Anatomy) -> None:
    """The trunk's soft tissue over the whole image (patient-frame coordinates per pixel)."""
    sc, U, to_img = anat.sc, rng.uniform, cv.to_img
    inv_lin = np.linalg.inv(to_img[:, :2])
    off = -inv_lin @ to_img[:, 2]
    xs = (np.arange(cv.w, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(cv.h, dtype=np.float32) + 0.5)[:, None]
    xm = inv_lin[0, 0] * xs + inv_lin[0, 1] * ys + off[0]
    ym = inv_lin[1, 0] * xs + inv_lin[1, 1] * ys + off[1]
    l3 = anat.vertebrae["L3"]
    x_post0 = float(l3.sup.p[0]) - float(U(75, 115)) * sc
    x_ant0 = float(l3.sup.a[0]) + float(U(120, 230)) * sc
    y_crest = float(anat.vertebrae["L5"].sup.mid[1])
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


def _render_gas(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas, anat: Anatomy
                ) -> int:
    """Bowel gas (negative attenuation), mostly anterior to the spine; returns the count."""
    sc, U = anat.sc, rng.uniform
    n_gas = int(rng.integers(cfg.bowel_gas[0], cfg.bowel_gas[1] + 1))
    top_y = float(anat.vertebrae["L1"].sup.mid[1]) - 30.0
    l3 = anat.vertebrae["L3"]
    for _ in range(n_gas):
        cx = float(l3.sup.a[0]) + float(U(-25, 140)) * sc
        cy = float(U(top_y, 60.0))
        a, b = float(U(6, 32)) * sc, float(U(5, 20)) * sc
        _draw_ellipse(cv, np.array([cx, cy]), float(U(0, math.pi)), a, b,
                      -float(U(0.05, 0.18)), texture=0.25, edge_mm=float(U(1.5, 5.0)))
    return n_gas
