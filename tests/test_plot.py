"""Overlays: shapes, colours at the points, grids, atomic PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spinelandmarks.data.batch import collate
from spinelandmarks.data.plot import LEVEL_COLORS, draw_points, plot_batch, save_png
from spinelandmarks.schema import LUMBAR_SAGITTAL as S


def _points() -> torch.Tensor:
    pts = torch.full((22, 2), float("nan"))
    for k, lv in enumerate(S.level_names):
        idx = S.level_indices(lv)
        base = torch.tensor([[70.0, 20.0], [30.0, 20.0], [30.0, 40.0], [70.0, 40.0]])
        pts[idx] = base[: len(idx)] + torch.tensor([0.0, 45.0 * k])
    return pts


def test_draw_points_colours_and_shape() -> None:
    img = torch.zeros(1, 300, 120)
    vis = torch.full((22,), 2)
    vis[S.index("L2", "posterior_inferior")] = 0
    out = draw_points(img, _points(), S, vis, radius=3)
    assert out.shape == (300, 120, 3) and out.dtype == np.uint8
    for i in (0, S.index("L3", "anterior_inferior"), S.index("S1", "posterior_superior")):
        x, y = _points()[i].tolist()
        level = int(S.point_level[i])
        assert tuple(out[int(y), int(x)]) == LEVEL_COLORS[level]
    x, y = _points()[S.index("L2", "posterior_inferior")].tolist()
    assert tuple(out[int(y), int(x)]) == (0, 0, 0)  # absent point not drawn
    # endplate line between the two L1 superior corners
    assert tuple(out[20, 50]) == LEVEL_COLORS[0]


def test_draw_points_accepts_numpy_without_labels() -> None:
    out = draw_points(np.full((50, 40), 0.5, np.float32), np.full((22, 2), np.nan), S,
                      labels=False)
    assert (out == 128).all()


def test_plot_batch_grid_and_crops() -> None:
    samples = [{"image": torch.rand(1, 64, 48), "points": _points() * 0.2,
                "visibility": torch.full((22,), 2), "matrix": torch.eye(3, dtype=torch.float64),
                "pixel_spacing": torch.full((2,), float("nan")), "image_id": f"{i}.png",
                "boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
               for i in range(5)]
    grid = plot_batch(collate(samples), S, max_items=5, ncols=3)
    assert grid.shape == (2 * 64 + 2, 3 * 48 + 4, 3)
    crops = [{"image": torch.rand(1, 32, 32), "points": torch.tensor([[5.0, 5.0]] * 4),
              "visibility": torch.tensor([2, 2, 0, 0]), "matrix": torch.eye(3),
              "pixel_spacing": torch.zeros(2), "image_id": "a", "level": torch.tensor(5)}]
    assert plot_batch(collate(crops), S).shape == (32, 32, 3)


def test_save_png_roundtrip(tmp_path: Path) -> None:
    rgb = (np.arange(30 * 20 * 3) % 256).astype(np.uint8).reshape(30, 20, 3)
    path = tmp_path / "sub" / "x.png"
    save_png(path, rgb)
    assert np.array_equal(np.asarray(Image.open(path)), rgb)
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(path, rgb.astype(np.float32))
