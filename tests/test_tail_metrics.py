"""Tails next to the medians (p95, outliers, max), wrapped angles and level identification."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from spines import spine_points

from spinelandmarks.anatomy.angles import lumbar_parameters, segmental_angles, wrap_angle
from spinelandmarks.anatomy.vertebrae import level_centres
from spinelandmarks.metrics import (
    AngleError,
    EuclideanError,
    LevelIdentification,
    NormalizedLocalizationError,
    level_identification,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

DT = torch.float64


def spine(**kw: object) -> torch.Tensor:
    return torch.tensor(spine_points(**kw), dtype=DT)  # type: ignore[arg-type]


def test_wrap_angle_interval() -> None:
    x = torch.tensor([205.0, -180.0, 180.0, -190.0, 540.0, 0.0, math.nan], dtype=DT)
    out = wrap_angle(x).tolist()
    assert out[:6] == [-155.0, 180.0, 180.0, 170.0, 180.0, 0.0]
    assert math.isnan(out[6])


def test_lordosis_never_leaves_the_interval() -> None:
    # L1 drawn upside down (tilt -170): raw L1-S1 = 40 + 170 = 210 and L1-L5 = 12 + 170 = 182
    pts = spine(tilts=(-170.0, -6.0, 0.0, 6.0, 12.0))[None]
    p = lumbar_parameters(pts)
    assert p["l1_s1_lordosis"].item() == pytest.approx(-150.0)
    assert p["l1_l5_lordosis"].item() == pytest.approx(-178.0)
    seg = segmental_angles(pts)
    assert seg[0, 0].item() == pytest.approx(wrap_angle(torch.tensor(-6.0 + 170.0)).item())
    assert bool(((seg > -180) & (seg <= 180)).all())


def test_normalized_error_tails() -> None:
    gt = spine()[None]  # bodies 40 x 30 px; S1 width 36, height from L5 (30)
    pred = gt.clone()
    pred[0, S.index("L3", "anterior_superior"), 0] += 5.0  # 12.5 % of 40: an outlier
    pred[0, S.index("L4", "posterior_inferior"), 1] += 2.4  # 8 % of 30: not an outlier
    m = NormalizedLocalizationError(S)
    m.set_dtype(DT)
    m.update(pred, gt)
    out = m.compute()
    ex = np.zeros(22)
    ex[S.index("L3", "anterior_superior")] = 12.5
    ey = np.zeros(22)
    ey[S.index("L4", "posterior_inferior")] = 8.0
    assert out["p95_x"].item() == pytest.approx(np.percentile(ex, 95))
    assert out["p95_y"].item() == pytest.approx(np.percentile(ey, 95))
    assert out["outlier_rate"].item() == pytest.approx(1 / 22)
    assert out["L3/outlier_rate"].item() == pytest.approx(1 / 4)
    assert out["L4/outlier_rate"].item() == 0.0


def test_euclidean_tails_and_outliers_in_mm() -> None:
    gt = torch.zeros(1, 4, 2, dtype=DT)
    pred = gt.clone()
    pred[0, 0, 0] = 30.0  # 6 mm at 0.2 mm/px: outlier
    pred[0, 1, 1] = 20.0  # 4 mm
    pred[0, 2, 0] = 5.0  # 1 mm
    m = EuclideanError()
    m.set_dtype(DT)
    m.update(pred, gt, torch.tensor([[0.2, 0.2]], dtype=DT))
    out = m.compute()
    mm = np.array([6.0, 4.0, 1.0, 0.0])
    assert out["p95_mm"].item() == pytest.approx(np.percentile(mm, 95))
    assert out["p95_px"].item() == pytest.approx(np.percentile(mm * 5, 95))
    assert out["outlier_rate_mm"].item() == pytest.approx(0.25)


def test_angle_error_tails_and_wrap() -> None:
    gt = torch.tensor([10.0, 20.0, 30.0, -179.0, 0.0], dtype=DT)
    pred = torch.tensor([11.0, 18.0, 30.5, 179.0, 7.0], dtype=DT)  # errors 1, -2, .5, -2, 7
    m = AngleError(["a"])
    m.set_dtype(DT)
    m.update({"a": pred}, {"a": gt})
    out = m.compute()
    d = np.array([1.0, -2.0, 0.5, -2.0, 7.0])
    assert out["a/mean_abs"].item() == pytest.approx(np.abs(d).mean())
    assert out["a/p95_abs"].item() == pytest.approx(np.percentile(np.abs(d), 95))
    assert out["a/max_abs"].item() == pytest.approx(7.0)
    assert out["a/bias"].item() == pytest.approx(d.mean())


def test_level_centres() -> None:
    pts = spine()[None]
    c = level_centres(pts)
    l2 = pts[0, S.level_indices("L2")].mean(0)
    assert torch.allclose(c[0, 1], l2)
    s1 = pts[0, S.level_indices("S1")].mean(0)
    assert torch.allclose(c[0, 5], s1)
    pts[0, S.index("L4", "anterior_inferior")] = math.nan
    assert bool(torch.isnan(level_centres(pts)[0, 3]).all())


def test_level_identification_hand_built_failures() -> None:
    gt = spine()  # centres 45 px apart, bodies 30 px high (half: 15 px)
    shifted = gt.clone()  # a chain shifted by one level: L1 drawn on L2, ..., L5 on S1
    for k in range(4):
        shifted[S.level_indices(f"L{k + 1}")] = gt[S.level_indices(f"L{k + 2}")]
    shifted[S.level_indices("L5")] = gt[S.level_indices("L5")] + torch.tensor([0.0, 55.0])
    near = gt.clone()
    near[S.level_indices("L3")] += torch.tensor([0.0, 14.0])  # 14 < 15: still L3
    near[S.level_indices("S1")] += torch.tensor([9.0, 12.0])  # 15 = half of L5's height
    far = gt.clone()
    far[S.level_indices("L3")] += torch.tensor([0.0, 16.0])
    missing = gt.clone()
    missing[S.level_indices("L1")] = math.nan  # missed L1
    out = level_identification(torch.stack([shifted, near, far, missing]),
                               gt.expand(4, -1, -1))
    assert out[0].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert out[1].tolist() == [1.0] * 6
    assert out[2].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert out[3].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_level_identification_unjudged_levels() -> None:
    gt = spine()[None]
    vis = torch.full((1, 22), 2)
    vis[0, S.index("L1", "anterior_superior")] = 0  # L1 only partly labelled: not judged
    out = level_identification(gt.clone(), gt, visibility=vis)
    assert math.isnan(out[0, 0].item())
    assert out[0, 1:].tolist() == [1.0] * 5


def test_level_identification_metric_rates_and_chunks() -> None:
    gt = spine()
    good = gt.clone()
    bad = gt.clone()
    bad[S.level_indices("L5")] = gt[S.level_indices("S1")].repeat(2, 1)  # L5 collapsed onto S1
    pred = torch.stack([good, bad, good])
    gts = gt.expand(3, -1, -1).clone()
    vis = torch.full((3, 22), 2)
    vis[2, S.level_indices("L1")] = 0  # L1 out of the field of view, but predicted anyway
    whole = LevelIdentification(S)
    whole.update(pred, gts, vis)
    out = whole.compute()
    assert out["n_levels"].item() == 17 and out["n_images"].item() == 3
    assert out["rate"].item() == pytest.approx(16 / 17)
    assert out["image_rate"].item() == pytest.approx(2 / 3)
    assert out["L5/rate"].item() == pytest.approx(2 / 3)
    assert out["L1/rate"].item() == 1.0
    assert out["extra_levels"].item() == 1.0
    parts = LevelIdentification(S)
    for i in range(3):
        parts.update(pred[i:i + 1], gts[i:i + 1], vis[i:i + 1])
    assert {k: v.item() for k, v in parts.compute().items()} == \
        {k: v.item() for k, v in out.items()}


def test_evaluate_reports_identification_and_tails(tmp_path: object) -> None:
    from spinelandmarks.data.annotations import ImageRecord
    from spinelandmarks.evaluation import evaluate
    from spinelandmarks.evaluation.report import write_report

    def rec(name: str, pts: np.ndarray) -> ImageRecord:
        return ImageRecord(name, 512, 512, pts, np.full(22, 2, np.int8),
                           pixel_spacing=(0.5, 0.5))

    gt_pts = spine_points()
    off = gt_pts.copy()
    for k in range(4):  # L1..L4 drawn one level down: present, but on the wrong vertebra
        off[S.level_indices(f"L{k + 1}")] = gt_pts[S.level_indices(f"L{k + 2}")]
    gts = [rec("a.png", gt_pts), rec("b.png", gt_pts)]
    preds = [rec("a.png", gt_pts.copy()), rec("b.png", off)]
    m = evaluate(preds, gts, S)
    ident = m["step2"]["identification"]
    assert ident["image_rate"] == pytest.approx(0.5)
    assert ident["rate"] == pytest.approx(8 / 12)
    assert ident["wrong_levels"] == {"b.png": ["L1", "L2", "L3", "L4"]}
    assert m["step2"]["detection"]["level_detection_rate"] == 1.0  # presence only: blind to it
    tails = m["tails"]
    assert tails["levels_identified_images"]["ours_step2"] == pytest.approx(50.0)
    # 16 of 44 points moved by 45 px (> 5 mm at 0.5 mm/px and > 10 % of the body size)
    assert tails["outliers_5mm"]["ours_step2"] == pytest.approx(100 * 16 / 44)
    assert tails["outliers_10pct"]["ours_step2"] == pytest.approx(100 * 16 / 44)
    report = write_report(m, tmp_path, pred_records=preds, gt_records=gts,  # type: ignore[arg-type]
                          schema=S).read_text()
    assert "Images with every level identified (%)" in report and "`b.png`: L1, L2" in report
