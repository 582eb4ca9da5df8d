"""Quality-control flags on hand-built failure cases and on phantom ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from spines import spine_points

from spinelandmarks.anatomy.angles import lumbar_parameters
from spinelandmarks.anatomy.vertebrae import level_centres
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.qc import (
    LEVEL_FLAGS,
    QCThresholds,
    calibrate_thresholds,
    implausible_angles,
    qc_statistics,
    quality_flags,
    steps_disagreement,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

DT = torch.float64


def flags_of(pts: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
    pts = pts.to(DT)
    if pts.dim() == 2:
        pts = pts[None]
    scores = kw.pop("scores", torch.ones(pts.shape[:2], dtype=DT))
    step1 = kw.pop("step1", pts)
    return quality_flags(pts, step1, scores, lumbar_parameters(pts), S,  # type: ignore[arg-type]
                         **kw)  # type: ignore[arg-type]


def raised(f: dict[str, torch.Tensor], i: int = 0) -> dict[str, list[str]]:
    out = {k: [lv for lv, on in zip(S.level_names, f[k][i].tolist(), strict=True) if on]
           for k in LEVEL_FLAGS}
    return {k: v for k, v in out.items() if v}


def test_plausible_spine_raises_nothing() -> None:
    f = flags_of(torch.tensor(spine_points()))
    assert raised(f) == {} and not bool(f["needs_review"][0])
    f = flags_of(torch.tensor(spine_points(face=-1)))
    assert raised(f) == {}


def test_l5_collapsed_onto_the_sacral_plate() -> None:
    pts = torch.tensor(spine_points())
    l5 = S.level_indices("L5")
    pts[l5] += torch.tensor([0.0, 55.0])  # L5 pushed 20 px into the sacral plate (gap was 40)
    f = flags_of(pts)
    assert set(raised(f)["overlap"]) == {"L5", "S1"}
    assert bool(f["needs_review"][0])


def test_two_overlapping_bodies_and_order() -> None:
    pts = torch.tensor(spine_points())
    pts[S.level_indices("L3")] = pts[S.level_indices("L2")] + torch.tensor([2.0, 5.0])
    f = raised(flags_of(pts))
    assert {"L2", "L3"} <= set(f["overlap"])
    assert "spacing" in f  # L3-L4 is now twice the typical distance


def test_level_drawn_above_its_cranial_neighbour() -> None:
    pts = torch.tensor(spine_points())
    pts[S.level_indices("L2")] = pts[S.level_indices("L1")] - torch.tensor([0.0, 45.0])
    assert {"L1", "L2"} <= set(raised(flags_of(pts))["order"])


def test_missing_level_and_crossed_corners() -> None:
    pts = torch.tensor(spine_points())
    pts[S.level_indices("L1")] = math.nan
    a, p = S.index("L3", "anterior_superior"), S.index("L3", "posterior_superior")
    pts[[a, p]] = pts[[p, a]]  # superior corners swapped: a self-crossing quadrilateral
    f = raised(flags_of(pts))
    assert f["missing"] == ["L1"]
    assert f["shape"] == ["L3"]


def test_low_confidence_detector_and_refinement_flags() -> None:
    pts = torch.tensor(spine_points(), dtype=DT)[None]
    scores = torch.ones(1, 22, dtype=DT)
    scores[0, S.index("L2", "anterior_inferior")] = 1 / (1 + 12.0)  # 12 px: 40 % of 30 px
    boxes = torch.full((1, 6, 4), math.nan, dtype=DT)
    centres = level_centres(pts)[0]
    boxes[0, :, :2] = centres - 20.0
    boxes[0, :, 2:] = centres + 20.0
    boxes[0, 3] += torch.tensor([0.0, 45.0, 0.0, 45.0], dtype=DT)  # detector's L4 one level down
    step1 = pts.clone()
    step1[0, S.level_indices("L1")] -= torch.tensor([0.0, 40.0], dtype=DT)
    level_scores = torch.tensor([[0.9, 0.9, 0.2, 0.9, 0.9, 0.9]], dtype=DT)
    f = raised(flags_of(pts, scores=scores, boxes=boxes, step1=step1,
                        level_scores=level_scores))
    assert f["low_confidence"] == ["L2", "L3"]
    assert f["detector_disagrees"] == ["L4"]
    assert f["refinement_jump"] == ["L1"]


def test_implausible_angles() -> None:
    params = {"l1_l5_lordosis": torch.tensor([40.0, -155.0]),
              "l1_s1_lordosis": torch.tensor([50.0, 50.0]),
              "sacral_slope": torch.tensor([math.nan, 85.0])}
    out = implausible_angles(params)
    assert out["l1_l5_lordosis"].tolist() == [False, True]
    assert out["sacral_slope"].tolist() == [False, True]
    assert out["l1_s1_lordosis"].tolist() == [False, False]


def test_phantom_ground_truth_is_not_flagged() -> None:
    pts = np.stack([generate_phantom(i, PhantomConfig(long_side=192))[1].points
                    for i in range(12)])
    p = torch.tensor(pts)
    present = torch.ones(12, 6, dtype=torch.bool)
    present[:, :] = torch.isfinite(p).all(-1)[:, S.level_point_table().clamp_min(0)].all(-1)
    f = flags_of(p, present=present)
    raised_any = {k: int(v.sum()) for k, v in f.items() if k not in ("missing", "needs_review")
                  and bool(v.any())}
    assert raised_any == {}


def test_steps_disagree() -> None:
    from spinelandmarks.qc import disagreeing_parameters

    p2 = {"l1_l5_lordosis": torch.tensor([40.0, 40.0, 179.0]),
          "sacral_slope": torch.tensor([30.0, math.nan, 30.0])}
    p1 = {"l1_l5_lordosis": torch.tensor([44.0, 46.0, -178.0]),
          "sacral_slope": torch.tensor([30.0, 10.0, 36.0])}
    out = disagreeing_parameters(p2, p1)
    assert out["l1_l5_lordosis"].tolist() == [False, True, False]  # 179 vs -178: 3 deg apart
    assert out["sacral_slope"].tolist() == [False, False, True]
    pts = torch.tensor(spine_points(), dtype=DT)[None].expand(3, -1, -1)
    f = quality_flags(pts, pts, torch.ones(3, 22, dtype=DT), lumbar_parameters(pts), S,
                      parameters_step1={k: v + torch.tensor([0.0, 6.0, -6.0], dtype=DT)
                                        for k, v in lumbar_parameters(pts).items()})
    assert f["steps_disagree"].tolist() == [False, True, True]
    assert f["needs_review"].tolist() == [False, True, True]


def _failure_inputs() -> tuple[torch.Tensor, ...]:
    """The spine of test_low_confidence_detector_and_refinement_flags, as raw inputs."""
    pts = torch.tensor(spine_points(), dtype=DT)[None]
    scores = torch.ones(1, 22, dtype=DT)
    scores[0, S.index("L2", "anterior_inferior")] = 1 / (1 + 12.0)
    centres = level_centres(pts)[0]
    boxes = torch.cat([centres - 20.0, centres + 20.0], dim=-1)[None]
    boxes[0, 3] += torch.tensor([0.0, 45.0, 0.0, 45.0], dtype=DT)
    step1 = pts.clone()
    step1[0, S.level_indices("L1")] -= torch.tensor([0.0, 40.0], dtype=DT)
    return pts, step1, scores, boxes


def test_qc_statistics_hand_computed() -> None:
    pts, step1, scores, boxes = _failure_inputs()
    st = qc_statistics(pts, step1, scores, S, boxes)
    # bodies 30 px high, boxes 40 px high
    assert st["spread_frac"][0, :5].tolist() == pytest.approx([0, 12 / 30, 0, 0, 0])
    assert st["detector_distance_frac"][0].tolist() == pytest.approx([0, 0, 0, 45 / 40, 0, 0])
    assert st["refinement_jump_frac"][0, :5].tolist() == pytest.approx([40 / 30, 0, 0, 0, 0])
    assert bool(qc_statistics(pts, step1, scores, S)["detector_distance_frac"].isnan().all())


def test_calibrate_thresholds_quantile_margin_floor_and_sample_size() -> None:
    n = 101
    stats = {"spread_frac": torch.linspace(0.0, 1.0, n, dtype=DT)[:, None],
             "detector_distance_frac": torch.full((n, 1), 0.1, dtype=DT),
             "refinement_jump_frac": torch.full((n, 1), math.nan, dtype=DT),
             "detector_score": 0.2 + 0.8 * torch.linspace(0.0, 1.0, n, dtype=DT)[:, None]}
    good = torch.ones(n, 1, dtype=torch.bool)
    good[-1] = False  # a wrong level: its statistic is ignored
    th = calibrate_thresholds(stats, good, quantile=0.99, margin=1.25)
    # the 99th percentile of 0.00, 0.01, ..., 0.99 is 0.9801
    assert th.max_spread_frac == pytest.approx(1.25 * 0.9801)
    # a lower bound: the 1st percentile (0.2 + 0.8 x 0.0099) over the margin
    assert th.min_detector_score == pytest.approx((0.2 + 0.8 * 0.0099) / 1.25)
    base = QCThresholds()
    assert th.detector_distance_frac == base.detector_distance_frac  # never tighter
    assert th.refinement_jump_frac == base.refinement_jump_frac  # no finite sample
    assert th.aspect_range == base.aspect_range and th.overlap_frac == base.overlap_frac
    few = calibrate_thresholds(stats, good & (torch.arange(n)[:, None] < 10))
    assert few.max_spread_frac == base.max_spread_frac  # 10 < min_samples


def test_steps_disagreement_is_the_largest_wrapped_difference_and_is_calibrated() -> None:
    step2 = {"sacral_slope": torch.tensor([40.0, 10.0, math.nan], dtype=DT),
             "l1_s1_lordosis": torch.tensor([50.0, 179.0, math.nan], dtype=DT),
             "only_step2": torch.tensor([0.0, 0.0, 0.0], dtype=DT)}
    step1 = {"sacral_slope": torch.tensor([43.0, 10.5, 1.0], dtype=DT),
             "l1_s1_lordosis": torch.tensor([49.0, -179.0, math.nan], dtype=DT)}
    d = steps_disagreement(step2, step1)
    # 3 vs 1 deg; 0.5 vs 2 deg (179 and -179 are 2 deg apart); nothing measurable in both
    torch.testing.assert_close(d[:2], torch.tensor([3.0, 2.0], dtype=DT))
    assert math.isnan(float(d[2]))
    with pytest.raises(ValueError, match="no parameter"):
        steps_disagreement({"a": d}, {"b": d})
    # fitted over the images whose levels are all good, like the per-level thresholds
    n = 101
    stats = {"steps_disagree_deg": torch.linspace(0.0, 20.0, n, dtype=DT)}
    good = torch.ones(n, 3, dtype=torch.bool)
    th = calibrate_thresholds(stats, good)
    assert th.steps_disagree_deg == pytest.approx(1.25 * 19.8)
    good[50:, 1] = False  # an image with a wrong level does not count: 0, 0.2, ..., 9.8 left
    fitted = calibrate_thresholds(stats, good).steps_disagree_deg
    assert fitted == pytest.approx(1.25 * 0.2 * 0.99 * 49)  # the 99th percentile, x 1.25
    images = torch.arange(n) < 10  # too few images: the base
    assert calibrate_thresholds(stats, good, good_images=images).steps_disagree_deg == 5.0
