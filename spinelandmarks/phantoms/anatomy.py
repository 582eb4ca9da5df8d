"""The patient drawn from clinical ranges: the lumbar column as a chain of endplates from the
sacrum upward, its pathology (fractures, listhesis, disc degeneration), the sacrum and the hip
axis, all in the patient frame (mm).

Every random draw happens here in a fixed order, so a seed gives the same patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .canvas import _concavity_for_depression
from .config import CHAIN, LUMBAR, Array, PhantomConfig
from .frames import _apply, _frame, _Plate, _plate, _step, _unit, _Vertebra

__all__ = ["DISC_NAMES", "SEGMENT_NAMES", "Anatomy", "draw_anatomy"]

_GENANT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.55)}
#: Discs caudal to cranial, as in :data:`~.config.CHAIN`.
DISC_NAMES = ("L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1", "T11-T12")
#: The 10 lordosis segments S1 -> L1: disc L5-S1, body L5, disc L4-L5, ..., body L1.
SEGMENT_NAMES = tuple(name for i, lv in enumerate(CHAIN[:5])
                      for name in (f"disc {DISC_NAMES[i]}", f"body {lv}"))


@dataclass
class Pathology:
    """Fractures (Genant grade, type, height loss per level), listhesis, degenerated discs."""

    fractures: dict[str, int] = field(default_factory=dict)
    fracture_type: dict[str, str] = field(default_factory=dict)
    fracture_loss: dict[str, float] = field(default_factory=dict)
    listhesis: dict[str, dict[str, float | int]] = field(default_factory=dict)
    degen: dict[str, float] = field(default_factory=dict)


@dataclass
class Anatomy:
    """One drawn patient (patient frame, mm; angles in degrees unless named ``_rad``)."""

    facing: int  # +1 facing right (anterior to +x in the image), -1 facing left
    sc: float  # size scale
    spacing: float  # mm per pixel
    ss: float  # anatomical sacral slope
    density: float  # bone mineral density factor
    age_deg: float  # degenerative burden in [0, 1)
    pathology: Pathology
    disc_h: Array  # (7,) mid-disc heights, DISC_NAMES order
    wedge: Array  # (10,) segment wedges, SEGMENT_NAMES order
    ll_anat: float  # L1-S1 lordosis as built
    concavity: dict[str, float]
    d_s1: float  # S1 endplate depth
    s1: _Plate
    plates_inf: dict[str, _Plate]
    vertebrae: dict[str, _Vertebra]
    sac_h: Array  # (5,) sacral segment heights
    sacrum: list[_Vertebra]
    pi_deg: float  # pelvic incidence
    s1_frame: Array  # 2x3, S1 endplate frame
    hip_local: Array  # hip axis in the S1 frame
    hip: Array  # hip axis, patient frame

    def lumbar_points(self) -> Array:
        """(22, 2) the annotated corners (L1..L5, then S1 anterior and posterior)."""
        return np.concatenate([self.vertebrae[lv].corners for lv in LUMBAR]
                              + [np.stack([self.s1.a, self.s1.p])])


def draw_anatomy(rng: np.random.Generator, cfg: PhantomConfig) -> Anatomy:
    """Draw a patient: sizes and angles, pathology, the column, sacrum and hip axis."""
    U = rng.uniform
    H = cfg.shape[0]
    facing = -1 if rng.random() < cfg.p_facing_left else 1
    sc = float(U(*cfg.size_scale))
    spacing = float(cfg.pixel_spacing_mm or U(*cfg.fov_height_mm) / H)
    ss_lo, ss_hi = cfg.sacral_slope_deg
    ss = float(np.clip(rng.normal(0.5 * (ss_lo + ss_hi), (ss_hi - ss_lo) / 4), ss_lo, ss_hi))
    ll_lo, ll_hi = cfg.lordosis_deg
    ll_draw = float(np.clip(rng.normal(ss + 13.0, 8.0), ll_lo, ll_hi))
    density = float(U(0.55, 1.1))  # bone mineral density factor (osteoporosis < 0.75)
    age_deg = rng.random()  # degenerative burden
    path = _draw_fractures(rng, cfg)
    path.listhesis = _draw_listhesis(rng, cfg)
    disc_h = _draw_discs(rng, cfg, sc, age_deg, path)
    # bodies: depth and posterior-wall height (mm), caudal to cranial L5..T11
    depth = np.array([42, 41, 40, 38, 36, 34, 32], float) * sc * U(0.96, 1.04, size=7)
    height = np.array([27, 28, 28, 27, 26, 24, 23], float) * sc * U(0.95, 1.05, size=7)
    d_s1 = 44.0 * sc * float(U(0.95, 1.05))
    wedge, body_h, concavity = _segment_wedges(rng, sc, ll_draw, depth, height, path)
    s1 = _plate(np.zeros(2), math.radians(ss), d_s1)
    plates_inf, vertebrae = _build_column(rng, s1, wedge, disc_h, depth, body_h, sc, path)
    sac_h, sacrum = _build_sacrum(rng, s1, sc, d_s1)
    pi_deg, s1_frame, hip_local, hip = _hip_axis(rng, ss, s1, sc)
    return Anatomy(facing, sc, spacing, ss, density, age_deg, path, disc_h, wedge,
                   float(wedge.sum()), concavity, d_s1, s1, plates_inf, vertebrae, sac_h,
                   sacrum, pi_deg, s1_frame, hip_local, hip)


def _genant_grade(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))


def _draw_fractures(rng: np.random.Generator, cfg: PhantomConfig) -> Pathology:
    """Compression fractures: Genant grade, type and height loss per fractured level."""
    path = Pathology()
    if rng.random() < cfg.p_fracture:
        n_fx = 1 if rng.random() < 0.8 else 2
        levels = rng.choice(list(LUMBAR), size=n_fx, replace=False,
                            p=[0.36, 0.26, 0.16, 0.12, 0.10])
        for lv in sorted(str(x) for x in levels):
            g = _genant_grade(rng)
            path.fractures[lv] = g
            path.fracture_type[lv] = str(rng.choice(["wedge", "biconcave", "crush"],
                                                    p=[0.6, 0.25, 0.15]))
            path.fracture_loss[lv] = float(rng.uniform(*_GENANT_LOSS[g]))
    return path


def _draw_listhesis(rng: np.random.Generator, cfg: PhantomConfig
                    ) -> dict[str, dict[str, float | int]]:
    """Spondylolisthesis: level, Meyerding grade and slip fraction (``slip_mm`` added later)."""
    listhesis: dict[str, dict[str, float | int]] = {}
    if rng.random() < cfg.p_listhesis:
        lv = "L4" if rng.random() < 0.55 else "L5"
        grade = 1 if rng.random() < 0.75 else 2
        frac = float(rng.uniform(0.06, 0.25) if grade == 1 else rng.uniform(0.25, 0.42))
        listhesis[lv] = {"grade": grade, "slip_fraction": frac}
    return listhesis


def _draw_discs(rng: np.random.Generator, cfg: PhantomConfig, sc: float, age_deg: float,
                path: Pathology) -> Array:
    """(7,) mid-disc heights in mm; degenerated discs lose 30-65 % (``path.degen``)."""
    disc_base = np.array([10.5, 11.5, 10.5, 9.5, 8.5, 7.0, 6.0]) * sc
    disc_h = disc_base * rng.uniform(0.9, 1.1, size=7)
    for i in range(5):
        p = cfg.p_disc_degeneration * (1.6 if i < 2 else 0.8) * (0.5 + age_deg)
        if rng.random() < p:
            loss = float(rng.uniform(0.3, 0.65))
            disc_h[i] *= 1.0 - loss
            path.degen[DISC_NAMES[i]] = loss
    return disc_h


def _segment_wedges(rng: np.random.Generator, sc: float, ll_draw: float, depth: Array,
                    height: Array, path: Pathology
                    ) -> tuple[Array, dict[str, float], dict[str, float]]:
    """The lordosis spread over the 10 segments S1 -> L1, fractured bodies' wedges and heights.

    Returns the wedges (SEGMENT_NAMES order, degrees), body mid heights and endplate
    concavities (mm) per level of :data:`~.config.CHAIN`.
    """
    wedge = np.zeros(10)
    fixed = np.zeros(10, bool)
    body_h = {lv: float(height[i]) for i, lv in enumerate(CHAIN)}
    concavity = {lv: float(rng.uniform(0.6, 1.3)) * sc for lv in CHAIN}
    for i, lv in enumerate(CHAIN[:5]):
        j = 2 * i + 1
        if lv in path.fractures:
            wedge[j] = _fractured_body(rng, lv, depth[i], path, body_h, concavity)
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
    return wedge, body_h, concavity


def _fractured_body(rng: np.random.Generator, lv: str, depth: float, path: Pathology,
                    body_h: dict[str, float], concavity: dict[str, float]) -> float:
    """The wedge (degrees) of a fractured body; its height or concavity updated in place."""
    loss, kind = path.fracture_loss[lv], path.fracture_type[lv]
    hb = body_h[lv]
    if kind == "wedge":
        body_h[lv] = hb * (1 - 0.5 * loss)  # mid height
        return -math.degrees(math.atan(loss * hb / depth))
    if kind == "crush":
        body_h[lv] = hb * (1 - loss)
        return -math.degrees(math.atan(0.25 * loss * hb / depth))
    # biconcave: both endplate centres depressed by loss * height / 2, walls intact, so the
    # drawn mid height is (1 - loss) times the wall height (the Genant biconcavity ratio)
    concavity[lv] = _concavity_for_depression(0.5 * loss * hb)
    return float(rng.normal(0.0, 1.0))



def _build_column(rng: np.random.Generator, s1: _Plate, wedge: Array, disc_h: Array,
                  depth: Array, body_h: dict[str, float], sc: float, path: Pathology
                  ) -> tuple[dict[str, _Plate], dict[str, _Vertebra]]:
    """The chain of endplates from S1 up to T11; slips recorded in ``path.listhesis``."""
    plates_inf: dict[str, _Plate] = {}
    vertebrae: dict[str, _Vertebra] = {}
    below = s1
    slips_mm: dict[str, float] = {}
    for i, lv in enumerate(CHAIN):
        w_disc = wedge[2 * i] if i < 5 else float(rng.normal(0.0 if i == 5 else -1.0, 1.5))
        w_body = wedge[2 * i + 1] if i < 5 else float(rng.normal(-3.0, 1.5))
        slip = 0.0
        if lv in path.listhesis:
            slip = float(path.listhesis[lv]["slip_fraction"]) * below.depth
            slips_mm[lv] = slip
        d_inf = depth[i] * float(rng.uniform(1.0, 1.04))
        inf = _step(below, w_disc, disc_h[i], d_inf, slip=slip, min_height=1.2 * sc)
        sup = _step(inf, w_body, body_h[lv], depth[i], min_height=10.0 * sc)
        plates_inf[lv] = inf
        vertebrae[lv] = _Vertebra(lv, inf, sup)
        below = sup
    for lv, info in path.listhesis.items():
        info["slip_mm"] = round(slips_mm[lv], 4)
    return plates_inf, vertebrae


def _build_sacrum(rng: np.random.Generator, s1: _Plate, sc: float, d_s1: float
                  ) -> tuple[Array, list[_Vertebra]]:
    """Sacral segments S1..S5 going down (kyphotic wedges, anterior edges aligned)."""
    sac_h = np.array([28, 23, 19, 15, 11], float) * sc
    sac_d = d_s1 * np.array([1.0, 0.78, 0.62, 0.48, 0.36])
    sac_w = np.array([5, 9, 12, 13, 12], float) * rng.uniform(0.6, 1.4)
    sacrum: list[_Vertebra] = []
    top = s1
    for k in range(5):
        d_bot = sac_d[k] * (0.97 if k == 0 else 1.0)
        bot = _step(top, sac_w[k], sac_h[k], d_bot, slip=0.5 * (top.depth - d_bot), up=False)
        sacrum.append(_Vertebra(f"S{k + 1}", inf=bot, sup=top))
        nxt_d = sac_d[k + 1] if k < 4 else d_bot
        top = _step(bot, 0.0, 1.0 * sc, nxt_d, slip=0.5 * (bot.depth - nxt_d), up=False)
    return sac_h, sacrum


def _hip_axis(rng: np.random.Generator, ss: float, s1: _Plate, sc: float
              ) -> tuple[float, Array, Array, Array]:
    """Pelvic incidence from a drawn pelvic tilt, the S1 frame and the hip axis in it."""
    pt = float(np.clip(rng.normal(13.0, 6.0), -5.0, 35.0))
    pi_deg = ss + pt
    s1_frame = _frame(s1.mid, _unit(s1.tilt))
    hip_dist = 105.0 * sc * float(rng.uniform(0.93, 1.07))
    hip_local = hip_dist * np.array([math.sin(math.radians(pi_deg)),
                                     math.cos(math.radians(pi_deg))])
    return pi_deg, s1_frame, hip_local, _apply(s1_frame, hip_local)

