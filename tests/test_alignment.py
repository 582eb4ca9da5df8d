"""Whole-spine alignment (SVA, T4-T12 kyphosis, T1 pelvic angle) on hand-built spines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinelandmarks.anatomy.alignment import defined_alignment, sagittal_alignment
from spinelandmarks.anatomy.angles import schema_parameters
from spinelandmarks.anatomy.measurements import clinical_columns
from spinelandmarks.schema import (
    LUMBOPELVIC_SAGITTAL,
    WHOLE_SPINE_BODIES,
    WHOLE_SPINE_SAGITTAL,
    resolve_schema,
)

W = WHOLE_SPINE_SAGITTAL


def body(centre: tuple[float, float], tilt_deg: float, facing: int = 1, width: float = 30.0,
         height: float = 20.0) -> np.ndarray:
    """(4, 2) corners (CORNERS order) of a rectangular body whose endplates have tilt
    ``tilt_deg`` (positive: anterior end lower), anterior towards ``facing``."""
    t = math.radians(tilt_deg)
    u = np.array([facing * math.cos(t), math.sin(t)])  # posterior -> anterior
    n = np.array([facing * math.sin(t), -math.cos(t)])  # caudal -> cranial
    c = np.asarray(centre, float)
    hw, hh = 0.5 * width * u, 0.5 * height * n
    return np.stack([c + hw + hh, c - hw + hh, c - hw - hh, c + hw - hh])


def whole_spine(tilts: dict[str, float], centres: dict[str, tuple[float, float]],
                s1: tuple[tuple[float, float], tuple[float, float]],
                heads: tuple[tuple[float, float], tuple[float, float]],
                facing: int = 1) -> torch.Tensor:
    """(1, 76, 2) points of WHOLE_SPINE_SAGITTAL: bodies from their centres and tilts, the S1
    plate (anterior, posterior) and the femoral head centres as given."""
    pts = np.full((W.num_points, 2), np.nan)
    for lv in WHOLE_SPINE_BODIES:
        pts[W.level_indices(lv)] = body(centres[lv], tilts.get(lv, 0.0), facing)
    pts[W.index("S1", "anterior_superior")], pts[W.index("S1", "posterior_superior")] = s1
    pts[W.level_indices("FH")] = heads
    return torch.tensor(pts)[None]


def straight_spine(facing: int = 1, c7_x: float = 500.0, tilts: dict[str, float] | None = None
                   ) -> torch.Tensor:
    """Bodies stacked 40 px apart on x = 500 (C7 at ``c7_x``), the S1 plate from (485, 800)
    posterior to (515, 820) anterior (facing right), hips at x = 530, y = 900."""
    centres = {lv: (500.0, 60.0 + 40.0 * i) for i, lv in enumerate(WHOLE_SPINE_BODIES)}
    centres["C7"] = (c7_x, 60.0)
    s1 = ((515.0, 820.0), (485.0, 800.0))
    heads = ((525.0, 900.0), (535.0, 900.0))
    pts = whole_spine(tilts or {}, centres, s1, heads, facing=1)
    if facing < 0:  # the mirror image: a patient facing left
        pts = pts.clone()
        pts[..., 0] = 1000.0 - pts[..., 0]
    return pts


def test_whole_spine_schema() -> None:
    assert resolve_schema("whole_spine_sagittal") is W
    assert W.num_points == 18 * 4 + 2 + 2 and W.level_names[0] == "C7"
    assert W.body_levels == WHOLE_SPINE_BODIES and W.refined_levels[-1] == "S1"
    assert defined_alignment(W) == ("sva_mm", "sva_px", "thoracic_kyphosis_t4_t12",
                                    "t1_pelvic_angle")
    assert defined_alignment(LUMBOPELVIC_SAGITTAL) == ()
    assert sagittal_alignment(torch.zeros(1, 24, 2), LUMBOPELVIC_SAGITTAL) == {}


@pytest.mark.parametrize("facing", [1, -1])
def test_sva_sign_and_size(facing: int) -> None:
    # C7 centre 30 px anterior of the S1 posterior-superior corner (x 485): +30 px = +15 mm
    pts = straight_spine(facing, c7_x=515.0)
    out = sagittal_alignment(pts, W, spacing=(0.4, 0.5))
    assert float(out["sva_px"][0]) == pytest.approx(30.0)
    assert float(out["sva_mm"][0]) == pytest.approx(15.0)  # x scaled by the column spacing
    # C7 20 px posterior of the corner: negative
    back = sagittal_alignment(straight_spine(facing, c7_x=465.0), W, spacing=(0.5, 0.5))
    assert float(back["sva_mm"][0]) == pytest.approx(-10.0)
    # without spacing: pixels only
    assert math.isnan(float(sagittal_alignment(pts, W)["sva_mm"][0]))


@pytest.mark.parametrize("facing", [1, -1])
def test_thoracic_kyphosis_of_a_known_chain(facing: int) -> None:
    # the thoracic chain turns from +20 deg at T4 to -25 deg at T12: 45 deg of kyphosis
    tilts = {f"T{i}": 20.0 - 45.0 * (i - 4) / 8 for i in range(1, 13)}
    out = sagittal_alignment(straight_spine(facing, tilts=tilts), W)
    assert float(out["thoracic_kyphosis_t4_t12"][0]) == pytest.approx(45.0)
    flat = sagittal_alignment(straight_spine(facing), W)
    assert float(flat["thoracic_kyphosis_t4_t12"][0]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("facing", [1, -1])
def test_t1_pelvic_angle(facing: int) -> None:
    # hip axis (530, 900); S1 middle (500, 810): 30 px posterior, 90 up -> -atan(30/90);
    # T1 centre (500, 100): 30 px posterior, 800 up -> -atan(30/800)
    out = sagittal_alignment(straight_spine(facing), W)
    expected = math.degrees(math.atan(30 / 90) - math.atan(30 / 800))
    assert float(out["t1_pelvic_angle"][0]) == pytest.approx(expected)
    assert expected > 0  # T1 lies anterior of the hip -> S1 line: a positive angle


def test_whole_spine_columns_and_lumbar_angles() -> None:
    pts = straight_spine(1, c7_x=515.0)
    spacing = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    cols = clinical_columns(pts, W, spacing)
    assert float(cols["sva_mm"][0]) == pytest.approx(15.0)
    assert float(cols["sva_px"][0]) == pytest.approx(30.0)
    assert "thoracic_kyphosis_t4_t12_deg" in cols and "t1_pelvic_angle_deg" in cols
    assert "pelvic_incidence_deg" in cols and "T7_ha" in cols
    # LL and SS as today: S1 plate tilt atan2(20, 30), L1 superior flat
    params = schema_parameters(pts, W)
    assert float(params["sacral_slope"][0]) == pytest.approx(math.degrees(math.atan2(20, 30)))
    assert float(params["l1_s1_lordosis"][0]) == pytest.approx(
        math.degrees(math.atan2(20, 30)))
    unknown = clinical_columns(pts, W, torch.full((1, 2), math.nan, dtype=torch.float64))
    assert math.isnan(float(unknown["sva_mm"][0])) and float(unknown["sva_px"][0]) == 30.0


def test_overlay_text_of_a_whole_spine() -> None:
    from spinelandmarks.inference import SpineResult
    from spinelandmarks.overlay import _text_lines

    pts = straight_spine(1, c7_x=515.0)[0].numpy()
    nan = np.full(W.num_points, np.nan)
    result = SpineResult(source="a.png", image_size=(1000, 360), pixel_spacing=(0.5, 0.5),
                         points=pts, points_step1=pts, point_scores=nan,
                         level_scores=np.full(W.num_levels, np.nan))
    tk = "TK 0.0"
    t1pa = f"T1PA {math.degrees(math.atan(30 / 90) - math.atan(30 / 800)):.1f}"
    assert f"SVA 15.0 mm  {tk}  {t1pa} deg" in _text_lines(result, W, [])
