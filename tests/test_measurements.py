"""Spinopelvic parameters, morphometry with Genant grades, disc heights and listhesis against
hand-computed cases, in both facings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from spines import IMG_W, spine_points

from spinelandmarks.anatomy.measurements import (
    disc_heights,
    fit_fracture_screen,
    genant_grades,
    height_loss,
    listhesis,
    morphometry,
    patient_fracture_status,
    spinopelvic_parameters,
)
from spinelandmarks.schema import (
    LUMBAR_MORPHOMETRY,
    LUMBOPELVIC_SAGITTAL,
    LandmarkSchema,
    resolve_schema,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

DT = torch.float64
STRAIGHT = {"tilts": (0.0,) * 5, "s1_tilt": 0.0}


def with_hips(pts: np.ndarray, pt_deg: float, ss_deg: float, face: int = 1) -> torch.Tensor:
    """22 lumbar points + two femoral heads placed so that the pelvic tilt is ``pt_deg``."""
    s1 = 0.5 * (pts[S.index("S1", "anterior_superior")] + pts[S.index("S1", "posterior_superior")])
    t = math.radians(pt_deg)
    hip = s1 + 100.0 * np.array([face * math.sin(t), math.cos(t)])
    off = np.array([face * 3.0, -2.0])
    heads = np.stack([hip + off, hip - off])  # their midpoint is the hip axis
    out = np.full((LUMBOPELVIC_SAGITTAL.num_points, 2), np.nan)
    out[:22] = pts
    out[22:] = heads
    return torch.tensor(out, dtype=DT)[None]


@pytest.mark.parametrize("face", [1, -1])
def test_pelvic_incidence_is_tilt_plus_slope(face: int) -> None:
    for pt, ss in ((13.0, 40.0), (-4.0, 30.0), (25.0, 52.0)):
        pts = spine_points(s1_tilt=ss, face=face)
        par = spinopelvic_parameters(with_hips(pts, pt, ss, face))
        assert float(par["pelvic_tilt"]) == pytest.approx(pt, abs=1e-9)
        assert float(par["sacral_slope"]) == pytest.approx(ss, abs=1e-9)
        assert float(par["pelvic_incidence"]) == pytest.approx(pt + ss, abs=1e-9)
        ll = float(par["lumbar_lordosis"])
        assert ll == pytest.approx(ss - (-12.0), abs=1e-9)  # L1 superior tilt is -12 deg
        assert float(par["pi_ll_mismatch"]) == pytest.approx(pt + ss - ll, abs=1e-9)


def test_pelvic_parameters_nan_without_heads() -> None:
    pts = torch.tensor(spine_points(), dtype=DT)[None]
    par = spinopelvic_parameters(pts, S)
    assert math.isnan(float(par["pelvic_incidence"])) and math.isnan(float(par["pelvic_tilt"]))
    assert float(par["sacral_slope"]) == pytest.approx(40.0)


def _move(pts: np.ndarray, level: str, point: str, frac: float, toward: str) -> None:
    """Move a corner a fraction of the way to another corner of its body."""
    a, b = S.index(level, point), S.index(level, toward)
    pts[a] = pts[a] + frac * (pts[b] - pts[a])


@pytest.mark.parametrize("face", [1, -1])
def test_wedge_and_crush_fractures_graded(face: int) -> None:
    pts = spine_points(**STRAIGHT)  # bodies 40 x 30 px
    _move(pts, "L2", "anterior_superior", 0.3, "anterior_inferior")  # Ha 21 of Hp 30: 30 %
    for corner, other in (("anterior_superior", "anterior_inferior"),
                          ("posterior_superior", "posterior_inferior")):
        _move(pts, "L4", corner, 0.45, other)  # the whole body 45 % lower than its neighbours
    if face < 0:
        pts[:, 0] = IMG_W - pts[:, 0]
    m = morphometry(torch.tensor(pts, dtype=DT)[None], S, spacing=(0.5, 0.5))
    assert m["ha"][0].tolist() == pytest.approx([15.0, 10.5, 15.0, 8.25, 15.0])  # mm
    assert float(m["wedge"][0, 1]) == pytest.approx(0.7)
    assert float(m["crush"][0, 3]) == pytest.approx(16.5 / 30.0)  # Hp over its neighbours'
    g = genant_grades(m)
    assert g["grade"][0].tolist() == [0, 2, 0, 3, 0]
    assert g["shape"][0, 1] == 0 and g["shape"][0, 3] == 2  # wedge, crush
    assert float(g["height_loss"][0, 1]) == pytest.approx(0.3)
    assert patient_fracture_status(g, S.body_levels) == [["L2", "L4"]]
    assert patient_fracture_status(g, S.body_levels, min_grade=3) == [["L4"]]


def test_biconcave_fracture_needs_the_endplate_middles() -> None:
    pts = spine_points(**STRAIGHT)
    morph = np.full((LUMBAR_MORPHOMETRY.num_points, 2), np.nan)
    for lv in S.level_names:
        for name in S.level(lv).points:
            morph[LUMBAR_MORPHOMETRY.index(lv, name)] = pts[S.index(lv, name)]
        if lv != "S1":
            for side in ("superior", "inferior"):
                a, p = pts[S.index(lv, f"anterior_{side}")], pts[S.index(lv, f"posterior_{side}")]
                morph[LUMBAR_MORPHOMETRY.index(lv, f"middle_{side}")] = 0.5 * (a + p)
    i = LUMBAR_MORPHOMETRY.index("L3", "middle_superior")
    morph[i, 1] += 0.11 * 30.0  # both endplates sink 11 % of the height: Hm = 0.78 Hp
    morph[LUMBAR_MORPHOMETRY.index("L3", "middle_inferior"), 1] -= 0.11 * 30.0
    g = genant_grades(morphometry(torch.tensor(morph, dtype=DT)[None], LUMBAR_MORPHOMETRY))
    assert g["grade"][0].tolist() == [0, 0, 1, 0, 0] and int(g["shape"][0, 2]) == 1
    assert float(g["height_loss"][0, 2]) == pytest.approx(0.22)
    loss = height_loss(torch.tensor(morph, dtype=DT)[None], LUMBAR_MORPHOMETRY)
    assert loss[0].tolist() == pytest.approx([0.0, 0.0, 0.22, 0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("face", [1, -1])
def test_slip_and_meyerding_grade(face: int) -> None:
    pts = spine_points(**STRAIGHT)  # each body 5 px anterior to the one above, plates 40 px
    for name in S.level("L4").points:
        pts[S.index("L4", name), 0] += 15.0  # L4 slides 15 px forward
    if face < 0:
        pts[:, 0] = IMG_W - pts[:, 0]
    sl = listhesis(torch.tensor(pts, dtype=DT)[None])
    assert float(sl["L1-L2"][0, 0]) == pytest.approx(-12.5)  # 5 px back over 40: retro
    assert float(sl["L4-L5"][0, 0]) == pytest.approx(25.0)  # (15 - 5) / 40
    assert float(sl["L3-L4"][0, 0]) == pytest.approx(-50.0)
    assert [float(sl[k][0, 1]) for k in ("L1-L2", "L3-L4", "L4-L5")] == [0.0, 0.0, 1.0]
    pts2 = spine_points(**STRAIGHT)
    for name in S.level("L4").points:
        pts2[S.index("L4", name), 0] += 5.0 + 0.3 * 40.0
    assert float(listhesis(torch.tensor(pts2, dtype=DT)[None])["L4-L5"][0, 1]) == 2.0


def test_disc_heights_in_pixels_and_mm() -> None:
    pts = torch.tensor(spine_points(**STRAIGHT), dtype=DT)[None]
    d = disc_heights(pts)
    assert list(d) == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert d["L1-L2"][0].tolist() == pytest.approx([math.hypot(5, 15)] * 2)
    mm = disc_heights(pts, spacing=(0.5, 0.2))["L2-L3"][0]  # rows 0.5 mm, columns 0.2 mm
    assert mm.tolist() == pytest.approx([math.hypot(5 * 0.2, 15 * 0.5)] * 2)


def test_new_schemas_round_trip_and_resolve_by_name() -> None:
    for schema in (LUMBOPELVIC_SAGITTAL, LUMBAR_MORPHOMETRY):
        assert LandmarkSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
        assert resolve_schema(schema.name) == schema
    assert LUMBOPELVIC_SAGITTAL.num_points == 24 and LUMBAR_MORPHOMETRY.num_points == 32


def test_fracture_screen_is_the_negatives_quantile_between_grades_1_and_2() -> None:
    # 100 bodies under the 25 % line predicted at 0.00, 0.01, ..., 0.99 x 0.24; two fractures.
    negatives = np.arange(100) / 100 * 0.24
    pred = np.concatenate([negatives, [0.22, 0.30], [np.nan]])
    true = np.concatenate([np.full(100, 0.1), [0.27, 0.35], [0.1]])
    # 98th percentile of the 100 negatives, as the next observed value: 0.98 * 0.24
    assert fit_fracture_screen(pred, true) == pytest.approx(0.2352)
    # kept between the grade-1 and grade-2 lines; the grade-2 line with nothing to fit on
    assert fit_fracture_screen(pred, true, specificity=0.5) == 0.20
    assert fit_fracture_screen(np.full(10, 0.6), np.full(10, 0.1)) == 0.25
    assert fit_fracture_screen(np.array([0.3]), np.array([0.3])) == 0.25
    with pytest.raises(ValueError, match="specificity"):
        fit_fracture_screen(pred, true, specificity=1.0)
