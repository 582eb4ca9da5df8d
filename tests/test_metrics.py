"""Tests of spinelandmarks.metrics: hand-built spines with known angles and sizes."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pytest
import scipy.stats
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from spines import IMG_W, dirs, spine_points
from torchmetrics import Metric

from spinelandmarks.anatomy.angles import (
    LUMBAR_PARAMETERS,
    endplate_tilts,
    facing,
    lordosis,
    lumbar_parameters,
    segmental_angle_names,
    segmental_angles,
)
from spinelandmarks.anatomy.vertebrae import vertebra_size
from spinelandmarks.metrics import (
    AngleError,
    EuclideanError,
    NormalizedLocalizationError,
    SuccessDetectionRate,
    euclidean_errors,
    normalized_errors,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL, LandmarkSchema, Level

S = LUMBAR_SAGITTAL
DT = torch.float64
M = TypeVar("M", bound=Metric)


def f64(metric: M) -> M:
    """The metric with float64 states (torchmetrics keeps float32 unless told)."""
    metric.set_dtype(DT)
    return metric


# ---------------------------------------------------------------------------------------------
# hand-built spines
# ---------------------------------------------------------------------------------------------
def make_spine(tilts: Sequence[float] = (-12.0, -6.0, 0.0, 6.0, 12.0), s1_tilt: float = 40.0,
               widths: Sequence[float] | float = 40.0, heights: Sequence[float] | float = 30.0,
               s1_width: float = 36.0, face: int = 1) -> torch.Tensor:
    """:func:`spines.spine_points` as a float64 tensor."""
    return torch.tensor(spine_points(tilts, s1_tilt, widths, heights, s1_width, face), dtype=DT)


def batch(*spines: torch.Tensor) -> torch.Tensor:
    return torch.stack(spines)


def random_batch(n: int, seed: int, miss: float = 0.1, absent: float = 0.05,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pred, gt, visibility) for ``n`` random spines; some preds NaN, some GT unlabelled."""
    g = torch.Generator().manual_seed(seed)
    gts = []
    for _ in range(n):
        tilts = (torch.rand(5, generator=g, dtype=DT) * 30 - 15).tolist()
        s1 = float(torch.rand(1, generator=g, dtype=DT) * 20 + 30)
        face = 1 if float(torch.rand(1, generator=g)) < 0.5 else -1
        gts.append(make_spine(tilts, s1, face=face))
    gt = torch.stack(gts)
    pred = gt + torch.randn(gt.shape, generator=g, dtype=DT) * 1.5
    pred[torch.rand(gt.shape[:2], generator=g) < miss] = math.nan
    vis = torch.full(gt.shape[:2], 2, dtype=torch.long)
    vis[torch.rand(gt.shape[:2], generator=g) < absent] = 0
    return pred, gt, vis


# ---------------------------------------------------------------------------------------------
# facing and angles
# ---------------------------------------------------------------------------------------------
def test_facing_right_and_left() -> None:
    f = facing(batch(make_spine(face=1), make_spine(face=-1)), S)
    assert f.tolist() == [1.0, -1.0]
    assert f.dtype == DT


def test_facing_majority_and_tie() -> None:
    p = make_spine(face=1)
    # swap the x of one endplate: a single dissenting vote does not change the majority
    a, q = S.index("L3", "anterior_superior"), S.index("L3", "posterior_superior")
    p2 = p.clone()
    p2[[a, q], 0] = p[[q, a], 0]
    assert facing(p2[None], S).item() == 1.0
    # tie (one endplate each way) -> +1; all absent -> +1
    two = LandmarkSchema("two", (Level("A", ("anterior_superior", "posterior_superior")),
                                 Level("B", ("anterior_superior", "posterior_superior"))))
    tie = torch.tensor([[[10.0, 0.0], [0.0, 0.0], [0.0, 5.0], [10.0, 5.0]]])
    assert facing(tie, two).item() == 1.0
    assert facing(torch.full((1, 4, 2), math.nan), two).item() == 1.0
    left = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [10.0, 5.0]]])
    assert facing(left, two).item() == -1.0


def test_endplate_tilts_known() -> None:
    tilts = (-12.0, -6.0, 0.0, 6.0, 12.0)
    t = endplate_tilts(make_spine(tilts, 40.0)[None], S)
    expected = [x for x in tilts for _ in range(2)] + [40.0]
    assert t.shape == (1, len(S.endplates())) == (1, 11)
    torch.testing.assert_close(t[0], torch.tensor(expected, dtype=DT))


def test_lumbar_parameters_known_and_mirror_invariant() -> None:
    tilts = (-12.0, -6.0, 0.0, 6.0, 12.0)
    right, left = make_spine(tilts, 40.0, face=1), make_spine(tilts, 40.0, face=-1)
    out = lumbar_parameters(batch(right, left))
    assert set(out) == set(LUMBAR_PARAMETERS)
    torch.testing.assert_close(out["l1_l5_lordosis"], torch.tensor([24.0, 24.0], dtype=DT))
    torch.testing.assert_close(out["l1_s1_lordosis"], torch.tensor([52.0, 52.0], dtype=DT))
    torch.testing.assert_close(out["sacral_slope"], torch.tensor([40.0, 40.0], dtype=DT))
    # the two facings agree to rounding
    for v in out.values():
        assert abs(float(v[0] - v[1])) < 1e-9


def test_l1_l5_uses_l5_inferior_endplate() -> None:
    p = make_spine((-12.0, -6.0, 0.0, 6.0, 12.0))
    # wedge L5: inferior endplate tilted 20 deg, superior stays 12 deg
    pi, ai = S.index("L5", "posterior_inferior"), S.index("L5", "anterior_inferior")
    mid = (p[pi] + p[ai]) / 2
    u, _ = dirs(20.0)
    p[ai] = mid + 20.0 * torch.tensor(u, dtype=DT)
    p[pi] = mid - 20.0 * torch.tensor(u, dtype=DT)
    out = lumbar_parameters(p[None])
    assert out["l1_l5_lordosis"].item() == pytest.approx(32.0)
    assert out["l1_s1_lordosis"].item() == pytest.approx(52.0)
    assert lordosis(p[None], S).item() == pytest.approx(32.0)
    assert lordosis(p[None], S, upper=("L4", "superior"), lower=("S1", "superior")).item() \
        == pytest.approx(34.0)
    with pytest.raises(KeyError):
        lordosis(p[None], S, lower=("S1", "inferior"))


def test_kyphotic_segment_negative() -> None:
    p = make_spine((10.0, 5.0, 0.0, -5.0, -10.0), s1_tilt=-5.0)
    for face in (1, -1):
        q = p.clone()
        if face < 0:
            q[:, 0] = IMG_W - q[:, 0]
        out = lumbar_parameters(q[None])
        assert out["l1_l5_lordosis"].item() == pytest.approx(-20.0)
        assert out["l1_s1_lordosis"].item() == pytest.approx(-15.0)
        assert out["sacral_slope"].item() == pytest.approx(-5.0)


def test_sacral_slope_40_anterior_end_lower() -> None:
    # S1 plate alone: anterior end to the right and 40 deg lower (y down)
    p = make_spine()
    a, q = S.index("S1", "anterior_superior"), S.index("S1", "posterior_superior")
    p[q] = torch.tensor([300.0, 400.0], dtype=DT)
    p[a] = p[q] + 50.0 * torch.tensor([math.cos(math.radians(40)), math.sin(math.radians(40))],
                                      dtype=DT)
    assert p[a, 1] > p[q, 1]  # anterior end lower in the image
    assert lumbar_parameters(p[None])["sacral_slope"].item() == pytest.approx(40.0)
    p[:, 0] = IMG_W - p[:, 0]  # facing left: same slope
    assert lumbar_parameters(p[None])["sacral_slope"].item() == pytest.approx(40.0)


def test_absent_point_gives_nan() -> None:
    p = make_spine()
    q = p.clone()
    q[S.index("L1", "anterior_superior")] = math.nan
    out = lumbar_parameters(batch(p, q))
    assert torch.isnan(out["l1_l5_lordosis"][1]) and torch.isnan(out["l1_s1_lordosis"][1])
    assert torch.isfinite(out["sacral_slope"]).all()
    assert torch.isfinite(out["l1_l5_lordosis"][0])
    # a visibility of 0 acts the same, whatever the coordinates hold
    vis = torch.ones(2, 22, dtype=torch.long)
    vis[0, S.index("S1", "posterior_superior")] = 0
    out = lumbar_parameters(batch(p, p), visibility=vis)
    assert torch.isnan(out["sacral_slope"][0]) and torch.isnan(out["l1_s1_lordosis"][0])
    assert torch.isfinite(out["l1_l5_lordosis"][0])
    assert torch.isfinite(out["sacral_slope"][1])


def test_segmental_angles() -> None:
    tilts = (-12.0, -6.0, 0.0, 6.0, 12.0)
    seg = segmental_angles(make_spine(tilts, 40.0)[None])
    assert segmental_angle_names(S) == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    torch.testing.assert_close(seg[0], torch.tensor([6.0, 6.0, 6.0, 6.0, 28.0], dtype=DT))
    # segments sum to L1-S1 lordosis
    assert seg.sum().item() == pytest.approx(52.0)


def test_float32_and_device() -> None:
    p = batch(make_spine(), make_spine(face=-1))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ref = lumbar_parameters(p)
    for dev in devices:
        out = lumbar_parameters(p.to(dev, torch.float32))
        for k, v in out.items():
            assert v.dtype == torch.float32 and v.device.type == dev
            torch.testing.assert_close(v.cpu().double(), ref[k], atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------
# sizes and errors
# ---------------------------------------------------------------------------------------------
def test_vertebra_size_rectangles_and_s1_uses_l5_height() -> None:
    widths, heights = (40.0, 42.0, 44.0, 46.0, 48.0), (30.0, 31.0, 32.0, 33.0, 28.0)
    p = make_spine(widths=widths, heights=heights, s1_width=36.0)
    w, h = vertebra_size(p[None], S)
    assert w.shape == h.shape == (1, 6)
    torch.testing.assert_close(w[0], torch.tensor([*widths, 36.0], dtype=DT))
    torch.testing.assert_close(h[0], torch.tensor([*heights, 28.0], dtype=DT))


def test_vertebra_size_trapezoid_and_absent_corner() -> None:
    # L1 as a trapezoid: superior 40, inferior 50, posterior wall 34, anterior wall hypot(10, 34)
    p = make_spine()
    p[S.index("L1", "posterior_superior")] = torch.tensor([100.0, 100.0], dtype=DT)
    p[S.index("L1", "anterior_superior")] = torch.tensor([140.0, 100.0], dtype=DT)
    p[S.index("L1", "posterior_inferior")] = torch.tensor([100.0, 134.0], dtype=DT)
    p[S.index("L1", "anterior_inferior")] = torch.tensor([150.0, 134.0], dtype=DT)
    ant = math.hypot(10.0, 34.0)
    w, h = vertebra_size(p[None], S)
    assert w[0, 0].item() == pytest.approx(45.0)
    assert h[0, 0].item() == pytest.approx((ant + 34.0) / 2)
    # anterior-superior corner absent: W from the inferior endplate, H from the posterior wall
    vis = torch.ones(1, 22)
    vis[0, S.index("L1", "anterior_superior")] = 0
    w, h = vertebra_size(p[None], S, visibility=vis)
    assert w[0, 0].item() == pytest.approx(50.0)
    assert h[0, 0].item() == pytest.approx(34.0)
    # all of L5 absent: S1 has no height; L5 has neither
    q = p.clone()
    q[S.level_indices("L5")] = math.nan
    w, h = vertebra_size(q[None], S)
    assert torch.isnan(w[0, 4]) and torch.isnan(h[0, 4]) and torch.isnan(h[0, 5])
    assert torch.isfinite(w[0, 5])


def test_normalized_error_known_offset() -> None:
    gt = make_spine(widths=40.0, heights=30.0)
    pred = gt.clone()
    i = S.index("L2", "posterior_inferior")
    pred[i] += torch.tensor([2.0, -3.0], dtype=DT)  # 2/40 = 5 %, 3/30 = 10 %
    j = S.index("S1", "anterior_superior")
    pred[j] += torch.tensor([-1.8, 1.5], dtype=DT)  # 1.8/36 = 5 %, 1.5/30 (L5 height) = 5 %
    k = S.index("L4", "anterior_superior")
    pred[k] = math.nan  # missed
    vis = torch.full((1, 22), 2)
    m = S.index("L1", "posterior_superior")
    vis[0, m] = 0  # unlabelled
    e = normalized_errors(pred[None], gt[None], S, visibility=vis)
    assert e.shape == (1, 22, 2)
    torch.testing.assert_close(e[0, i], torch.tensor([5.0, 10.0], dtype=DT))
    torch.testing.assert_close(e[0, j], torch.tensor([5.0, 5.0], dtype=DT))
    assert torch.isnan(e[0, k]).all() and torch.isnan(e[0, m]).all()
    others = [x for x in range(22) if x not in (i, j, k, m)]
    # L1 lost one corner: its size comes from what remains, errors still 0 elsewhere
    assert torch.equal(e[0, others], torch.zeros(len(others), 2, dtype=DT))


def test_euclidean_errors_px_and_mm() -> None:
    gt = torch.zeros(2, 3, 2, dtype=DT)
    pred = gt.clone()
    pred[:, 0] = torch.tensor([3.0, 4.0], dtype=DT)
    pred[:, 2] = math.nan
    px = euclidean_errors(pred, gt)
    torch.testing.assert_close(px[:, :2], torch.tensor([[5.0, 0.0], [5.0, 0.0]], dtype=DT))
    assert torch.isnan(px[:, 2]).all()
    spacing = torch.tensor([[0.5, 0.2], [math.nan, math.nan]], dtype=DT)  # (row_mm, col_mm)
    mm = euclidean_errors(pred, gt, pixel_spacing=spacing)
    assert mm[0, 0].item() == pytest.approx(math.hypot(3 * 0.2, 4 * 0.5))
    assert torch.isnan(mm[1]).all()
    vis = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert torch.isnan(euclidean_errors(pred, gt, visibility=vis)[0, 0])


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="points"):
        lumbar_parameters(torch.zeros(1, 21, 2))
    with pytest.raises(ValueError):
        normalized_errors(torch.zeros(1, 22, 2), torch.zeros(2, 22, 2), S)


# ---------------------------------------------------------------------------------------------
# Metric classes
# ---------------------------------------------------------------------------------------------
def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], equal_nan=True, msg=k)


def test_normalized_localization_error_values() -> None:
    pred, gt, vis = random_batch(6, seed=0)
    m = f64(NormalizedLocalizationError(S))
    m.update(pred, gt, vis)
    out = m.compute()
    e = normalized_errors(pred, gt, S, vis).numpy()
    lab = (vis > 0).numpy()
    assert out["median_x"].item() == pytest.approx(np.nanmedian(e[..., 0][lab]))
    assert out["median_y"].item() == pytest.approx(np.nanmedian(e[..., 1][lab]))
    assert out["mean_x"].item() == pytest.approx(np.nanmean(e[..., 0][lab]))
    det = lab & np.isfinite(pred.numpy()).all(-1)
    assert out["detection_rate"].item() == pytest.approx(det.sum() / lab.sum())
    assert out["n_labelled"].item() == lab.sum()
    l2 = S.level_indices("L2")
    assert out["L2/median_y"].item() == pytest.approx(np.nanmedian(e[:, l2, 1][lab[:, l2]]))
    assert out["S1/detection_rate"].item() == pytest.approx(
        det[:, 20:].sum() / lab[:, 20:].sum())
    assert all(out[f"{lv}/mean_x"].dtype == DT for lv in S.level_names)


def test_normalized_localization_error_even_median_and_empty() -> None:
    gt = make_spine()[None]
    pred = gt.clone()
    pred[0, 0, 0] += 2.0  # 5 %
    pred[0, 1, 0] += 4.0  # 10 %
    keep = torch.zeros(1, 22)
    keep[0, :2] = 1
    m = f64(NormalizedLocalizationError(S))
    m.update(pred, gt, keep)
    out = m.compute()
    assert out["median_x"].item() == pytest.approx(7.5)  # mean of the two middle values
    assert torch.isnan(out["L3/median_x"]) and torch.isnan(out["L3/detection_rate"])
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = NormalizedLocalizationError(S).compute()
    assert torch.isnan(empty["median_x"]) and empty["n"].item() == 0


@pytest.mark.parametrize("cls", ["nle", "euc", "sdr"])
def test_point_metrics_chunked_and_merged(cls: str) -> None:
    pred, gt, vis = random_batch(10, seed=1)
    spacing = torch.full((10, 2), 0.15, dtype=DT)
    spacing[3] = math.nan

    def make() -> NormalizedLocalizationError | EuclideanError | SuccessDetectionRate:
        if cls == "nle":
            return f64(NormalizedLocalizationError(S))
        if cls == "euc":
            return f64(EuclideanError())
        return f64(SuccessDetectionRate())

    def feed(m: NormalizedLocalizationError | EuclideanError | SuccessDetectionRate,
             sl: slice) -> None:
        if isinstance(m, NormalizedLocalizationError):
            m.update(pred[sl], gt[sl], vis[sl])
        else:
            m.update(pred[sl], gt[sl], spacing[sl], visibility=vis[sl])

    once, chunked, a, b = make(), make(), make(), make()
    feed(once, slice(None))
    feed(chunked, slice(0, 4))
    feed(chunked, slice(4, None))
    feed(a, slice(0, 7))
    feed(b, slice(7, None))
    a.merge_state(b)
    full = once.compute()
    _assert_same(full, chunked.compute())
    _assert_same(full, a.compute())
    # manual concatenation of states, as a DDP "cat" reduction does
    c, d, manual = make(), make(), make()
    feed(c, slice(0, 5))
    feed(d, slice(5, None))
    for name in manual._defaults:
        setattr(manual, name, torch.cat([torch.cat(getattr(c, name)), torch.cat(getattr(d, name))]))
    manual._update_count = 2  # states were filled by hand, not by update()
    _assert_same(full, manual.compute())


def test_euclidean_error_metric_values() -> None:
    gt = torch.zeros(2, 3, 2, dtype=DT)
    pred = gt.clone()
    pred[0, 0] = torch.tensor([3.0, 4.0], dtype=DT)  # 5 px; 1.0 mm at 0.2 mm / px
    pred[0, 1] = torch.tensor([0.0, 1.0], dtype=DT)  # 1 px; 0.2 mm
    pred[1, 0] = torch.tensor([6.0, 8.0], dtype=DT)  # 10 px, no spacing
    pred[1, 2] = math.nan  # missed: not in the errors
    m = f64(EuclideanError())
    m.update(pred, gt, torch.tensor([[0.2, 0.2], [math.nan, math.nan]], dtype=DT))
    out = m.compute()
    assert out["n_px"].item() == 5 and out["n_mm"].item() == 3
    assert out["median_px"].item() == pytest.approx(1.0)
    assert out["mean_px"].item() == pytest.approx(16.0 / 5)
    assert out["median_mm"].item() == pytest.approx(0.2)
    assert out["mean_mm"].item() == pytest.approx(1.2 / 3)


def test_success_detection_rate_values() -> None:
    gt = torch.zeros(3, 4, 2, dtype=DT)
    pred = gt.clone()
    pred[0, :, 0] = torch.tensor([1.9, 2.5, 3.5, 10.0], dtype=DT)  # mm at 1 mm / px
    pred[1, 0] = math.nan  # missed -> failure everywhere
    pred[2] = 100.0  # image without spacing: skipped
    vis = torch.ones(3, 4)
    vis[1, 3] = 0  # unlabelled: not counted
    spacing = torch.tensor([[1.0, 1.0], [1.0, 1.0], [math.nan, math.nan]], dtype=DT)
    m = f64(SuccessDetectionRate(thresholds_mm=(2, 2.5, 3.0, 4.0)))
    m.update(pred, gt, spacing, visibility=vis)
    out = m.compute()
    # counted: 4 (image 0) + 3 (image 1, one missed, two exact)
    assert out["n"].item() == 7
    assert out["sdr@2.0mm"].item() == pytest.approx(3 / 7)
    assert out["sdr@2.5mm"].item() == pytest.approx(4 / 7)
    assert out["sdr@3.0mm"].item() == pytest.approx(4 / 7)
    assert out["sdr@4.0mm"].item() == pytest.approx(5 / 7)


def _angle_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    gt = {k: torch.rand(n, generator=g, dtype=DT) * 40 + 20 for k in LUMBAR_PARAMETERS}
    pred = {k: v + torch.randn(n, generator=g, dtype=DT) * 2 + 0.5 for k, v in gt.items()}
    pred["sacral_slope"][[1, 4]] = math.nan  # missed
    gt["sacral_slope"][[4, 6]] = math.nan  # unmeasurable ground truth
    return pred, gt


def test_angle_error_against_numpy_and_scipy() -> None:
    pred, gt = _angle_data(25, seed=3)
    m = f64(AngleError())
    m.update(pred, gt)
    out = m.compute()
    for name in LUMBAR_PARAMETERS:
        p, g = pred[name].numpy(), gt[name].numpy()
        ok = np.isfinite(p) & np.isfinite(g)
        d = p[ok] - g[ok]
        bias, sd = d.mean(), d.std(ddof=1)
        assert out[f"{name}/n"].item() == ok.sum()
        assert out[f"{name}/median_abs"].item() == pytest.approx(np.median(np.abs(d)))
        assert out[f"{name}/mean_abs"].item() == pytest.approx(np.mean(np.abs(d)))
        assert out[f"{name}/bias"].item() == pytest.approx(bias)
        assert out[f"{name}/loa_low"].item() == pytest.approx(bias - 1.96 * sd)
        assert out[f"{name}/loa_high"].item() == pytest.approx(bias + 1.96 * sd)
        r = scipy.stats.pearsonr(p[ok], g[ok]).statistic
        assert out[f"{name}/pearson_r"].item() == pytest.approx(r, abs=1e-12)
    assert out["sacral_slope/n"].item() == 25 - 3
    assert out["sacral_slope/missed"].item() == 1  # index 4 has no GT: not a miss
    assert out["l1_l5_lordosis/missed"].item() == 0


def test_angle_error_small_and_chunked() -> None:
    m = f64(AngleError(names=("sacral_slope",)))
    m.update({"sacral_slope": torch.tensor([41.0])}, {"sacral_slope": torch.tensor([40.0])})
    out = m.compute()
    assert out["sacral_slope/bias"].item() == 1.0
    assert torch.isnan(out["sacral_slope/loa_low"]) and torch.isnan(out["sacral_slope/pearson_r"])
    with pytest.raises(KeyError):
        m.update({}, {"sacral_slope": torch.tensor([40.0])})
    pred, gt = _angle_data(12, seed=4)
    once, chunked, a, b = (f64(AngleError()) for _ in range(4))
    once.update(pred, gt)
    chunked.update({k: v[:5] for k, v in pred.items()}, {k: v[:5] for k, v in gt.items()})
    chunked.update({k: v[5:] for k, v in pred.items()}, {k: v[5:] for k, v in gt.items()})
    a.update({k: v[:9] for k, v in pred.items()}, {k: v[:9] for k, v in gt.items()})
    b.update({k: v[9:] for k, v in pred.items()}, {k: v[9:] for k, v in gt.items()})
    a.merge_state(b)
    _assert_same(once.compute(), chunked.compute())
    _assert_same(once.compute(), a.compute())


def test_angle_error_from_lumbar_parameters() -> None:
    pred_pts, gt_pts, vis = random_batch(8, seed=5)
    m = AngleError()  # float32 default
    pred, gt = lumbar_parameters(pred_pts), lumbar_parameters(gt_pts, visibility=vis)
    m.update(pred, gt)
    out = m.compute()
    assert out["l1_l5_lordosis/median_abs"].dtype == torch.float32
    for name in ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"):
        p, g = pred[name].double().numpy(), gt[name].double().numpy()
        both = np.isfinite(p) & np.isfinite(g)
        d = np.abs(p[both] - g[both])  # errors here are a few degrees: no wrapping at 180
        assert out[f"{name}/n"].item() == both.sum() > 0, name
        assert out[f"{name}/missed"].item() == (np.isfinite(g) & ~np.isfinite(p)).sum(), name
        assert out[f"{name}/median_abs"].item() == pytest.approx(np.median(d), abs=1e-4), name
        assert out[f"{name}/mean_abs"].item() == pytest.approx(d.mean(), abs=1e-4), name
        assert out[f"{name}/max_abs"].item() == pytest.approx(d.max(), abs=1e-4), name
        assert out[f"{name}/bias"].item() == pytest.approx((p[both] - g[both]).mean(), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# real DDP (gloo, two processes)
# ---------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        pred, gt, vis = random_batch(7, seed=11)
        spacing = torch.full((7, 2), 0.2, dtype=DT)
        apred, agt = _angle_data(7, seed=12)
        sl = slice(0, 4) if rank == 0 else slice(4, None)  # uneven split
        metrics = [NormalizedLocalizationError(S), EuclideanError(), SuccessDetectionRate(),
                   AngleError()]
        fulls = [NormalizedLocalizationError(S, sync_on_compute=False),
                 EuclideanError(sync_on_compute=False),
                 SuccessDetectionRate(sync_on_compute=False), AngleError(sync_on_compute=False)]
        for ms, part in ((metrics, sl), (fulls, slice(None))):
            ms[0].update(pred[part], gt[part], vis[part])
            ms[1].update(pred[part], gt[part], spacing[part], visibility=vis[part])
            ms[2].update(pred[part], gt[part], spacing[part], visibility=vis[part])
            ms[3].update({k: v[part] for k, v in apred.items()},
                         {k: v[part] for k, v in agt.items()})
        for m, f in zip(metrics, fulls, strict=True):
            _assert_same(m.compute(), f.compute())
        # a rank without any sample still reduces correctly
        late = NormalizedLocalizationError(S)
        if rank == 1:
            late.update(pred, gt, vis)
        _assert_same(late.compute(), fulls[0].compute())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_gloo_two_processes() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_ddp_worker, args=(2, init_file), nprocs=2, join=True)
