"""Overlays of landmarks on radiographs (Pillow only), for docs, debugging and reports."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .._atomic import atomic_write
from ..schema import LandmarkSchema
from .batch import LandmarkBatch

__all__ = ["LEVEL_COLORS", "draw_points", "plot_batch", "save_png"]

#: RGB colours of the levels, cycled (colour-blind friendly "tab10"-like palette).
LEVEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
)

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_rgb(image: ArrayLike) -> np.ndarray:
    """(H, W) / (1, H, W) floats in [0, 1] (or uint8) -> (H, W, 3) uint8."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5)
        img = img.astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be (H, W), (1, H, W) or (H, W, 3), got {img.shape}")
    return np.ascontiguousarray(img)


def draw_points(image: ArrayLike, points: ArrayLike, schema: LandmarkSchema,
                visibility: ArrayLike | None = None, labels: bool = True,
                first_level: int = 0, radius: float | None = None) -> np.ndarray:
    """Draw landmarks, endplate lines and level names on an image.

    Parameters
    ----------
    image : array or Tensor
        (H, W) or (1, H, W) intensities in [0, 1] (or uint8 (H, W, 3)).
    points : array or Tensor
        (P, 2) pixel coordinates (x, y) in the flat order of ``schema`` (continuous
        convention: the centre of pixel (i, j) is (i + 0.5, j + 0.5)); NaN rows are skipped.
        Extra rows beyond ``schema.num_points`` (padding of crops) are ignored.
    schema : LandmarkSchema
    visibility : array or Tensor, optional
        (P,) labels; points with 0 are skipped; 1 (occluded) is drawn hollow.
    labels : bool
        Write each level's name next to it.
    first_level : int
        Colour index of the schema's first level (to colour a one-level crop schema like the
        level it came from).
    radius : float, optional
        Marker radius in pixels; default ``max(2, min(H, W) / 120)``.

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8 RGB.
    """
    rgb = _to_rgb(image)
    h, w = rgb.shape[:2]
    pts = _np(points).astype(np.float64).reshape(-1, 2)[: schema.num_points]
    n = pts.shape[0]
    ok = np.isfinite(pts).all(-1)
    vis = np.full(n, 2) if visibility is None else _np(visibility).reshape(-1)[:n].astype(int)
    ok &= vis > 0
    r = float(radius) if radius is not None else max(2.0, min(h, w) / 120.0)
    pil = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    level_of = schema.point_level.numpy()[:n]

    def color(li: int) -> tuple[int, int, int]:
        return LEVEL_COLORS[(li + first_level) % len(LEVEL_COLORS)]

    lw = max(1, round(r / 2))
    for e in schema.endplates():
        if e.posterior < n and e.anterior < n and ok[e.posterior] and ok[e.anterior]:
            c = color(schema.level_index(e.level))
            draw.line([tuple(pts[e.posterior]), tuple(pts[e.anterior])], fill=c, width=lw)
    for i in np.flatnonzero(ok):
        x, y = pts[i]
        c = color(int(level_of[i]))
        box = (x - r, y - r, x + r, y + r)
        if vis[i] == 1:
            draw.ellipse(box, outline=c, width=lw)
        else:
            draw.ellipse(box, fill=c, outline=(255, 255, 255))
    if labels:
        for li, lv in enumerate(schema.levels):
            idx = [j for j in schema.level_indices(lv.name) if j < n and ok[j]]
            if not idx:
                continue
            cx = float(pts[idx, 0].max()) + 2 * r
            cy = float(pts[idx, 1].mean())
            if cx > w - 6 * r * 2:  # no room on the right: write on the left
                cx = float(pts[idx, 0].min()) - 2 * r - 6 * len(lv.name)
            draw.text((cx, cy - 5), lv.name, fill=color(li), font=font)
    return np.asarray(pil, dtype=np.uint8)


def plot_batch(batch: LandmarkBatch, schema: LandmarkSchema, max_items: int = 8,
               ncols: int = 4, labels: bool = True) -> np.ndarray:
    """Grid of overlays of the first ``max_items`` samples of a batch.

    Whole-image batches use ``schema``; crop batches (``batch.levels`` set) draw each crop's
    level only, its points being the first ones of the padded (K, 2) rows. Boxes of detector
    batches are drawn as rectangles in the level's colour.

    Returns
    -------
    np.ndarray
        (rows * H, cols * W, 3) uint8 RGB with a 2-pixel gap between tiles.
    """
    n = min(len(batch), int(max_items))
    if n == 0:
        raise ValueError("empty batch")
    tiles: list[np.ndarray] = []
    for b in range(n):
        if batch.levels is not None and int(batch.levels[b]) >= 0:
            li = int(batch.levels[b])
            sub = LandmarkSchema(schema.name, (schema.levels[li],))
            tile = draw_points(batch.images[b], batch.points[b], sub, batch.visibility[b],
                               labels=labels, first_level=li)
        else:
            tile = draw_points(batch.images[b], batch.points[b], schema, batch.visibility[b],
                               labels=labels)
        if batch.boxes:
            pil = Image.fromarray(tile)
            draw = ImageDraw.Draw(pil)
            lbls = batch.labels[b] if batch.labels else torch.zeros(len(batch.boxes[b]))
            for box, lab in zip(_np(batch.boxes[b]), _np(lbls), strict=True):
                c = LEVEL_COLORS[(int(lab) - 1) % len(LEVEL_COLORS)]
                draw.rectangle([float(v) for v in box], outline=c)
            tile = np.asarray(pil, dtype=np.uint8)
        tiles.append(tile)
    cols = max(1, min(int(ncols), n))
    rows = (n + cols - 1) // cols
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    gap = 2
    grid = np.full((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), 255,
                   np.uint8)
    for k, t in enumerate(tiles):
        r0, c0 = (k // cols) * (th + gap), (k % cols) * (tw + gap)
        grid[r0:r0 + t.shape[0], c0:c0 + t.shape[1]] = t
    return grid


def save_png(path: str | PathLike[str], rgb: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 image as PNG, atomically (temp file, then rename)."""
    p = Path(path)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) array, got {arr.dtype} "
                         f"{arr.shape}")
    atomic_write(p, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
