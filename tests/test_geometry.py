"""Geometry: conventions, oriented crops (round trips and sampled images), letterbox, converters."""

from __future__ import annotations

import math

import pytest
import torch

from spinelandmarks.geometry import (
    axis_departures,
    column_axis_angles,
    crop_images,
    crop_matrix,
    endplate_angles,
    from_dsntnn_pixels,
    from_kornia_normalized,
    from_kornia_pixels,
    from_mmpose,
    from_torchvision,
    letterbox,
    letterbox_matrix,
    normalized_to_pixel,
    pixel_to_normalized,
    to_dsntnn_pixels,
    to_kornia_normalized,
    to_kornia_pixels,
    to_mmpose,
    to_torchvision,
    transform_points,
    vertebra_crop_params,
)


def gaussian_dot(size: tuple[int, int], center: tuple[float, float], sigma: float) -> torch.Tensor:
    """(1, 1, H, W) image of a Gaussian dot at a continuous pixel position."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float64) + 0.5
    xs = torch.arange(w, dtype=torch.float64) + 0.5
    g = torch.exp(-((xs[None] - center[0]) ** 2 + (ys[:, None] - center[1]) ** 2) / (2 * sigma**2))
    return g[None, None]


def centroid(img: torch.Tensor) -> torch.Tensor:
    """(x, y) intensity centroid in continuous pixel coordinates."""
    h, w = img.shape[-2:]
    ys = torch.arange(h, dtype=img.dtype) + 0.5
    xs = torch.arange(w, dtype=img.dtype) + 0.5
    m = img[0, 0]
    return torch.stack(((m.sum(0) * xs).sum() / m.sum(), (m.sum(1) * ys).sum() / m.sum()))


def test_normalized_pixel_convention() -> None:
    size = (10, 4)  # H, W
    centres = torch.tensor([[0.5, 0.5], [3.5, 9.5], [0.0, 0.0], [4.0, 10.0]])
    u = pixel_to_normalized(centres, size)
    torch.testing.assert_close(u, torch.tensor([[-0.75, -0.9], [0.75, 0.9], [-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(normalized_to_pixel(u, size), centres)


def test_identity_crop_reproduces_image() -> None:
    img = torch.rand(2, 3, 12, 9, generator=torch.Generator().manual_seed(1))
    m = crop_matrix(torch.tensor([[4.5, 6.0]] * 2), torch.tensor([[9.0, 12.0]] * 2),
                    torch.zeros(2), (12, 9))
    torch.testing.assert_close(m, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(crop_images(img, m, (12, 9)), img, atol=1e-6, rtol=0)


def test_crop_matrix_maps_corners() -> None:
    # A 20x10 crop rotated 90 deg: its x axis points down the image.
    m = crop_matrix(torch.tensor([[50.0, 40.0]]), torch.tensor([[20.0, 10.0]]),
                    torch.tensor([90.0]), (10, 20))
    p = torch.tensor([[[50.0, 40.0], [50.0, 50.0], [45.0, 40.0]]])
    q = transform_points(p, m)
    torch.testing.assert_close(q, torch.tensor([[[10.0, 5.0], [20.0, 5.0], [10.0, 10.0]]]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_image_crop_image(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    n = 256
    centers = torch.rand(n, 2, generator=g, dtype=dtype) * 2500
    sizes = torch.rand(n, 2, generator=g, dtype=dtype) * 300 + 20
    angles = torch.rand(n, generator=g, dtype=dtype) * 360 - 180
    m = crop_matrix(centers, sizes, angles, (128, 96))
    pts = centers.unsqueeze(1) + torch.randn(n, 22, 2, generator=g, dtype=dtype) * 100
    back = transform_points(transform_points(pts, m), torch.linalg.inv(m))
    assert back.dtype == dtype and m.dtype == torch.float64
    assert (back - pts).abs().max() < 1e-4


@pytest.mark.parametrize("angle", [0.0, 17.3, -65.0, 180.0])
def test_dot_found_at_predicted_crop_position(angle: float) -> None:
    dot = (71.3, 52.8)
    img = gaussian_dot((120, 150), dot, sigma=3.0).float()
    m = crop_matrix(torch.tensor([[75.0, 60.0]]), torch.tensor([[60.0, 48.0]]),
                    torch.tensor([angle]), (96, 120))
    crop = crop_images(img, m, (96, 120))
    expected = transform_points(torch.tensor([[dot]]), m)[0, 0]
    assert (centroid(crop.double()) - expected.double()).abs().max() < 0.02


def test_multi_crop_per_image_matches_single_crops() -> None:
    g = torch.Generator().manual_seed(3)
    imgs = torch.rand(2, 1, 40, 50, generator=g)
    centers = torch.rand(2, 3, 2, generator=g) * 30 + 10
    m = crop_matrix(centers.reshape(-1, 2), torch.full((6, 2), 15.0),
                    torch.linspace(-40, 40, 6), (16, 12)).reshape(2, 3, 3, 3)
    multi = crop_images(imgs, m, (16, 12))
    assert multi.shape == (2, 3, 1, 16, 12)
    for b in range(2):
        for k in range(3):
            single = crop_images(imgs[b : b + 1], m[b, k : k + 1], (16, 12))[0]
            torch.testing.assert_close(multi[b, k], single)


def test_crop_is_differentiable() -> None:
    centers = torch.tensor([[20.0, 20.0]], requires_grad=True)
    img = gaussian_dot((40, 40), (22.0, 18.0), 3.0).float()
    m = crop_matrix(centers, torch.tensor([[16.0, 16.0]]), torch.tensor([10.0]), (16, 16))
    crop_images(img, m, (16, 16)).sum().backward()
    assert centers.grad is not None and torch.isfinite(centers.grad).all()


def test_vertebra_crop_params_aligns_with_body() -> None:
    # A 40 x 30 px body tilted by 20 deg; corners AS, PS, PI, AI for a patient facing left
    # (anterior on the left) and mirrored.
    t = math.radians(20)
    ux, uy = math.cos(t), math.sin(t)
    c = torch.tensor([100.0, 80.0])
    local = torch.tensor([[-20.0, -15.0], [20.0, -15.0], [20.0, 15.0], [-20.0, 15.0]])
    rot = torch.tensor([[ux, -uy], [uy, ux]])
    corners = (local @ rot.T + c).unsqueeze(0)
    mirrored = corners.clone()
    mirrored[..., 0] = 200 - mirrored[..., 0]
    center, size, angle = vertebra_crop_params(corners, scale=1.5)
    torch.testing.assert_close(center, c.unsqueeze(0))
    torch.testing.assert_close(angle, torch.tensor([20.0]))
    torch.testing.assert_close(size, torch.tensor([[60.0, 60.0]]))
    _, _, angle_m = vertebra_crop_params(mirrored)
    torch.testing.assert_close(angle_m, torch.tensor([-20.0]))
    # In the crop frame the body is axis-aligned: superior corners share a row.
    m = crop_matrix(center, size, angle, (64, 64))
    q = transform_points(corners, m)
    torch.testing.assert_close(q[0, 0, 1], q[0, 1, 1])
    two = corners[:, :2]
    _, _, a2 = vertebra_crop_params(two)
    torch.testing.assert_close(a2, torch.tensor([20.0]))


def test_crop_params_in_a_given_frame() -> None:
    # The 40 x 30 body axis-aligned, cropped at 45 deg: its extent in that frame is the
    # projection of the rectangle, (40 + 30) / sqrt(2) px on both axes.
    corners = torch.tensor([[[80.0, 65.0], [120.0, 65.0], [120.0, 95.0], [80.0, 95.0]]])
    torch.testing.assert_close(endplate_angles(corners), torch.tensor([0.0]))
    _, size, angle = vertebra_crop_params(corners, scale=1.0, angles_deg=torch.tensor([45.0]))
    torch.testing.assert_close(angle, torch.tensor([45.0]))
    torch.testing.assert_close(size, torch.full((1, 2), 70.0 / math.sqrt(2.0)))


def test_column_axis_angles_lie_across_the_column() -> None:
    # Centres on a line going down-right at 45 deg: endplates across it run at -45 deg.
    centres = torch.tensor([[[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]],
                           dtype=torch.float64)
    torch.testing.assert_close(column_axis_angles(centres),
                               torch.full((1, 4), -45.0, dtype=torch.float64))
    # A missing level gets NaN; its neighbours fall back to one-sided differences. The
    # last level's only neighbour is then missing too.
    gap = centres.clone()
    gap[0, 2] = math.nan
    out = column_axis_angles(gap)[0]
    assert math.isnan(out[2]) and math.isnan(out[3])
    torch.testing.assert_close(out[:2], torch.tensor([-45.0, -45.0], dtype=torch.float64))
    # A vertical column gives horizontal endplates, whichever way it is walked.
    vertical = torch.tensor([[[5.0, 0.0], [5.0, 10.0]]])
    torch.testing.assert_close(column_axis_angles(vertical), torch.zeros(1, 2))
    torch.testing.assert_close(column_axis_angles(vertical.flip(1)), torch.zeros(1, 2))


def test_axis_departures_treat_directions_as_lines() -> None:
    a = torch.tensor([89.0, 10.0, 0.0, math.nan])
    b = torch.tensor([-89.0, 40.0, 90.0, 0.0])
    out = axis_departures(a, b)
    torch.testing.assert_close(out[:3], torch.tensor([-2.0, -30.0, -90.0]))
    assert math.isnan(out[3])


@pytest.mark.parametrize(("in_size", "out_size"), [((2560, 2048), (512, 384)),
                                                   ((300, 700), (256, 256)),
                                                   ((100, 80), (100, 80))])
def test_letterbox_maps_points_exactly(in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
    dot = (in_size[1] * 0.37 + 0.21, in_size[0] * 0.61 + 0.43)
    sigma = max(in_size) / 60
    img = gaussian_dot(in_size, dot, sigma).float()
    out, m = letterbox(img, out_size)
    assert out.shape[-2:] == out_size
    expected = transform_points(torch.tensor([[dot]], dtype=torch.float64), m.double())[0, 0]
    assert (centroid(out.double()) - expected).abs().max() < 0.05
    back = transform_points(expected[None, None], torch.linalg.inv(m.double()))
    assert (back[0, 0] - torch.tensor(dot, dtype=torch.float64)).abs().max() < 1e-9
    _, (hr, wr) = letterbox_matrix(in_size, out_size)
    assert hr <= out_size[0] and wr <= out_size[1] and (hr == out_size[0] or wr == out_size[1])


def test_converters() -> None:
    size = (10, 5)
    centres = torch.tensor([[0.5, 0.5], [4.5, 9.5]])
    torch.testing.assert_close(to_kornia_normalized(centres, size),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(to_kornia_pixels(centres), torch.tensor([[0.0, 0.0], [4.0, 9.0]]))
    torch.testing.assert_close(to_dsntnn_pixels(centres), torch.tensor([[0.0, 0.0], [4.0, 9.0]]))
    torch.testing.assert_close(to_mmpose(centres, size), torch.tensor([[0.0, 0.0], [0.8, 0.9]]))
    pts = torch.rand(7, 2) * 9
    for fwd, inv in ((to_dsntnn_pixels, from_dsntnn_pixels), (to_kornia_pixels, from_kornia_pixels),
                     (to_torchvision, from_torchvision)):
        torch.testing.assert_close(inv(fwd(pts)), pts)
    for fwd_s, inv_s in ((to_kornia_normalized, from_kornia_normalized), (to_mmpose, from_mmpose)):
        torch.testing.assert_close(inv_s(fwd_s(pts, size), size), pts)
