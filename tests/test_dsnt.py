"""DSNT: parity with dsntnn 0.5.3, losses, numerics under autocast."""

from __future__ import annotations

import dsntnn
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spinelandmarks.dsnt import (
    DSNTHead,
    dsnt,
    euclidean_loss,
    flat_softmax,
    gaussian_heatmaps,
    heatmap_spread,
    heatmap_variance,
    js_reg_loss,
    local_dsnt,
    masked_mean,
    normalized_linspace,
)


def test_linspace_is_pixel_centre_grid() -> None:
    xs = normalized_linspace(4)
    torch.testing.assert_close(xs, torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(xs, dsntnn.normalized_linspace(4))


@pytest.mark.parametrize("shape", [(64, 22, 16, 12), (3, 5, 17, 11), (1, 7, 9, 30), (5, 1, 8, 8)])
def test_parity_with_dsntnn(shape: tuple[int, int, int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(shape, generator=g) * 3
    ours = flat_softmax(logits)
    ref = dsntnn.flat_softmax(logits)
    assert (ours - ref).abs().max() < 1e-6
    assert (dsnt(ours) - dsntnn.dsnt(ref)).abs().max() < 1e-6
    means = torch.rand(shape[0], shape[1], 2, generator=g) * 1.8 - 0.9
    for sigma in (0.5, 1.0, 2.5):
        js = js_reg_loss(ours, means, sigma)
        assert js.shape == shape[:2]
        assert (js - dsntnn.js_reg_losses(ref, means, sigma)).abs().max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 4), lvl=st.integers(1, 6), h=st.integers(2, 24), w=st.integers(2, 24),
       beta=st.floats(0.1, 10.0), seed=st.integers(0, 2**16))
def test_parity_property(b: int, lvl: int, h: int, w: int, beta: float, seed: int) -> None:
    logits = torch.randn(b, lvl, h, w, generator=torch.Generator().manual_seed(seed))
    hm = flat_softmax(logits, beta=beta)
    torch.testing.assert_close(hm.sum((-2, -1)), torch.ones(b, lvl))
    torch.testing.assert_close(hm, dsntnn.flat_softmax(logits * beta), atol=1e-6, rtol=0)
    assert (dsnt(hm) - dsntnn.dsnt(hm)).abs().max() < 1e-6


def test_gaussian_target_expectation_and_spread() -> None:
    means = torch.tensor([[[0.1, -0.3], [-0.52, 0.4]]])
    hm = gaussian_heatmaps(means, (64, 48), sigma_px=1.5)
    torch.testing.assert_close(hm, dsntnn.make_gauss(means, (64, 48), 1.5), atol=1e-7, rtol=0)
    torch.testing.assert_close(dsnt(hm), means, atol=1e-5, rtol=0)
    # Isotropic sigma of 1.5 px -> radial spread sqrt(2) * 1.5 px (a sampled Gaussian this
    # wide keeps its variance to ~1e-6).
    spread = heatmap_spread(hm)
    expected = 2**0.5 * 1.5
    torch.testing.assert_close(spread, torch.full((1, 2), expected), atol=2e-3, rtol=0)
    var = heatmap_variance(hm)
    torch.testing.assert_close(var[..., 0], torch.full((1, 2), 1.5**2 * (2 / 48) ** 2),
                               rtol=1e-3, atol=0)


def test_js_loss_minimal_at_target() -> None:
    means = torch.tensor([[[0.2, 0.1]]])
    target = gaussian_heatmaps(means, (32, 32), 1.0)
    assert js_reg_loss(target, means, 1.0).item() < 1e-6
    off = gaussian_heatmaps(means + 0.3, (32, 32), 1.0)
    assert js_reg_loss(off, means, 1.0).item() > 0.5


def test_euclidean_loss_value_and_finite_gradient_at_zero() -> None:
    pred = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    loss = euclidean_loss(pred, target)
    torch.testing.assert_close(loss, torch.tensor([[0.0, 5.0]]))
    loss.sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    torch.testing.assert_close(pred.grad, torch.tensor([[[0.0, 0.0], [0.6, 0.8]]]))


def test_masked_mean_ignores_absent_entries() -> None:
    losses = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, False]])
    out = masked_mean(losses, mask)
    assert out.item() == 2.0
    out.backward()
    assert losses.grad is not None and torch.isfinite(losses.grad).all()
    assert masked_mean(losses, torch.zeros_like(mask)).item() == 0.0


def test_extreme_logits_are_finite() -> None:
    flat = torch.zeros(2, 3, 8, 6)
    coords = dsnt(flat_softmax(flat))
    torch.testing.assert_close(coords, torch.zeros(2, 3, 2), atol=1e-6, rtol=0)
    peaked = torch.full((1, 1, 8, 6), -1e4)
    peaked[0, 0, 2, 5] = 1e4
    c = dsnt(flat_softmax(peaked))
    torch.testing.assert_close(c, torch.tensor([[[11 / 6 - 1, 5 / 8 - 1]]]))
    for dtype in (torch.bfloat16, torch.float16):
        hm = flat_softmax(peaked.to(dtype) * 6)
        assert hm.dtype == torch.float32 and torch.isfinite(dsnt(hm)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_fp32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    head = DSNTHead(16, 22)
    feats = torch.randn(2, 16, 64, 48)
    ref, ref_hm = head(feats)
    logits = head.conv(feats)
    with torch.autocast("cpu", dtype=dtype):
        hm = flat_softmax(logits.to(dtype))
        coords = dsnt(hm)
        out, out_hm = head(feats)
    assert coords.dtype == torch.float32 and out.dtype == torch.float32
    # Same logits (only rounded to the autocast dtype): coordinates within 1e-3.
    assert (coords - ref).abs().max() < 1e-3
    assert out_hm.shape == ref_hm.shape
    # Whole head under autocast: the conv itself runs in low precision; still close.
    assert (out - ref).abs().max() < 1e-2


def test_head_learns_a_point() -> None:
    # Features x, y, x^2 + y^2: a 1x1 conv on them can shape any isotropic Gaussian logit.
    torch.manual_seed(0)
    head = DSNTHead(3, 2)
    ys, xs = torch.meshgrid(normalized_linspace(16), normalized_linspace(16), indexing="ij")
    feats = torch.stack((xs, ys, xs**2 + ys**2)).unsqueeze(0)
    target = torch.tensor([[[0.3, -0.4], [-0.6, 0.5]]])
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(300):
        coords, hm = head(feats)
        loss = euclidean_loss(coords, target).mean() + js_reg_loss(hm, target, 1.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head(feats)[0] - target).abs().max() < 0.01


def test_local_dsnt_keeps_the_peak_side_of_the_map() -> None:
    # mass 0.5 at (row 2, col 3), 0.25 at (2, 4) and 0.25 at a far mode (6, 7) of an 8x8 map
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 2, 3], hm[0, 0, 2, 4], hm[0, 0, 6, 7] = 0.5, 0.25, 0.25
    # within 2 cells of the peak: cols 3 and 4 weighted 2/3 and 1/3 -> col 10/3, row 2;
    # a cell centre i is at (2 i + 1) / 8 - 1
    torch.testing.assert_close(local_dsnt(hm, 2.0), torch.tensor([[[-1 / 24, -3 / 8]]]))
    # the whole map: col 0.5*3 + 0.25*4 + 0.25*7 = 4.25, row 0.75*2 + 0.25*6 = 3
    torch.testing.assert_close(dsnt(hm), torch.tensor([[[0.1875, -0.125]]]))
    torch.testing.assert_close(local_dsnt(hm, 100.0), dsnt(hm))
    # a radius under one cell keeps the peak cell alone
    torch.testing.assert_close(local_dsnt(hm, 0.5), torch.tensor([[[-1 / 8, -3 / 8]]]))
    with pytest.raises(ValueError, match="radius must be > 0"):
        local_dsnt(hm, 0.0)


def test_local_dsnt_is_float32_under_autocast() -> None:
    hm = flat_softmax(torch.randn(2, 3, 16, 12, generator=torch.Generator().manual_seed(1)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_dsnt(hm.bfloat16(), 3.0)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2)
    torch.testing.assert_close(out, local_dsnt(hm, 3.0), atol=2e-2, rtol=0)
