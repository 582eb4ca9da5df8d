"""Coordinate conventions, oriented crops, letterbox resizing and converters.

All transforms are 3x3 homogeneous matrices acting on *continuous pixel coordinates*
(x right, y down, origin at the top-left corner of the top-left pixel; see
``CONVENTIONS.md``). A point ``p`` of the source maps to ``M @ [x, y, 1]`` in the target, so
chained transforms multiply and the inverse is ``torch.linalg.inv(M)``. The image sampling
functions build their ``grid_sample`` grids from the same matrices, which is what makes
image -> crop -> image round trips exact.

This module is the only place that does half-pixel arithmetic: the converters to other
libraries' conventions are named after the library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .defaults import CROP_SCALE

__all__ = [
    "MAX_AXIS_DEPARTURE_DEG",
    "axis_departures",
    "column_axis_angles",
    "crop_images",
    "crop_matrix",
    "endplate_angles",
    "from_dsntnn_pixels",
    "from_kornia_normalized",
    "from_kornia_pixels",
    "from_mmpose",
    "from_torchvision",
    "hflip_matrix",
    "letterbox",
    "letterbox_matrix",
    "normalized_to_pixel",
    "opencv_affine",
    "pixel_to_normalized",
    "sampling_grid",
    "to_dsntnn_pixels",
    "to_kornia_normalized",
    "to_kornia_pixels",
    "to_mmpose",
    "to_torchvision",
    "transform_points",
    "uncrop",
    "vertebra_crop_params",
]

Size = tuple[int, int]  # (H, W)


def _wh(size: Sequence[int], like: Tensor) -> Tensor:
    h, w = int(size[0]), int(size[1])
    return torch.tensor([w, h], dtype=like.dtype, device=like.device)


# -- our two conventions ---------------------------------------------------------------------
def pixel_to_normalized(points: Tensor, size: Sequence[int]) -> Tensor:
    """Pixel (x, y) -> normalized (u, v) with the image edges at -1 and +1.

    Parameters
    ----------
    points : Tensor
        (..., 2) pixel coordinates.
    size : (H, W)
        Image size in pixels.
    """
    return 2 * points / _wh(size, points) - 1


def normalized_to_pixel(points: Tensor, size: Sequence[int]) -> Tensor:
    """Normalized (u, v) -> pixel (x, y); inverse of :func:`pixel_to_normalized`."""
    return (points + 1) * _wh(size, points) / 2


def _normalize_matrix(size: Sequence[int], like: Tensor) -> Tensor:
    """3x3 matrix taking pixel coordinates of an image of ``size`` to normalized ones."""
    h, w = float(size[0]), float(size[1])
    return torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]],
                        dtype=like.dtype, device=like.device)


# -- matrices ----------------------------------------------------------------------------------
def transform_points(points: Tensor, matrices: Tensor) -> Tensor:
    """Apply 3x3 homogeneous transforms to points.

    Parameters
    ----------
    points : Tensor
        (..., P, 2) coordinates (x, y).
    matrices : Tensor
        (..., 3, 3) transforms, broadcast against the leading dimensions of ``points``.

    Returns
    -------
    Tensor
        (..., P, 2) transformed coordinates in the dtype of ``points`` (with the perspective
        division, exact for affine matrices); NaN points stay NaN.
    """
    # float64 inside: fp32 has ~1e-4 px resolution at 2000 px, the size of a radiograph, and
    # a point goes through several matrices; the point arrays are tiny, so this is cheap.
    p64 = points.double()
    homog = torch.cat((p64, torch.ones_like(p64[..., :1])), -1)
    out = homog @ matrices.double().transpose(-1, -2)
    return (out[..., :2] / out[..., 2:]).to(points.dtype)


def crop_matrix(centers: Tensor, sizes: Tensor, angles_deg: Tensor,
                out_size: Sequence[int]) -> Tensor:
    """Image -> crop pixel transform of oriented rectangular crops.

    The crop is the rectangle of side lengths ``sizes = (w, h)`` image pixels centred at
    ``centers``, whose x axis points along the image direction ``angles_deg`` (measured like
    ``atan2(dy, dx)`` in image pixels, so with y down a positive angle turns the crop's x axis
    clockwise on screen), resampled to ``out_size``.

    Parameters
    ----------
    centers : Tensor
        (N, 2) crop centres (x, y) in image pixels.
    sizes : Tensor
        (N, 2) crop side lengths (w, h) in image pixels.
    angles_deg : Tensor
        (N,) rotation of the crop's x axis in degrees.
    out_size : (H_out, W_out)
        Crop size in pixels.

    Returns
    -------
    Tensor
        (N, 3, 3) float64 matrices mapping image pixel coordinates to crop pixel coordinates.
        Matrices are always float64 (whatever the input dtype): their translations reach
        10^4 px, where float32 would cost ~1e-3 px per round trip. Points keep their dtype
        through :func:`transform_points`.
    """
    h_out, w_out = float(out_size[0]), float(out_size[1])
    centers, sizes = centers.double(), sizes.double()
    theta = torch.deg2rad(angles_deg.double())
    c, s = torch.cos(theta), torch.sin(theta)
    kx = w_out / sizes[..., 0]
    ky = h_out / sizes[..., 1]
    # q = K R(-theta) (p - center) + crop_center
    r00, r01 = kx * c, kx * s
    r10, r11 = -ky * s, ky * c
    cx, cy = centers[..., 0], centers[..., 1]
    tx = w_out / 2 - (r00 * cx + r01 * cy)
    ty = h_out / 2 - (r10 * cx + r11 * cy)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rows = [torch.stack(r, -1) for r in ((r00, r01, tx), (r10, r11, ty), (zero, zero, one))]
    return torch.stack(rows, -2)


#: Largest departure (degrees) of a level's own endplate direction from the one its column
#: implies (:func:`axis_departures`) that the pipeline's axis check accepts: on 700 phantom
#: spines of both styles the truth departs by at most 14 deg for the lumbar bodies and 24 deg
#: for the sacral plate (tilted against the L5-S1 chord by the lumbosacral disc's wedge).
MAX_AXIS_DEPARTURE_DEG = 35.0


def endplate_angles(corners: Tensor) -> Tensor:
    """Mean endplate direction of each vertebra, folded into (-90, 90].

    Parameters
    ----------
    corners : Tensor
        (N, K, 2) points in image pixels (K >= 2; the four corners of the conventions, or the
        two S1 superior corners), NaN where absent.

    Returns
    -------
    Tensor
        (N,) degrees: the superior pair's direction (anterior -> posterior) plus, when
        present, the inferior pair's; folded so a crop at this angle is never upside down
        whichever way the patient faces. 45 deg where neither pair is present.
    """
    d = corners[..., 1, :] - corners[..., 0, :]
    if corners.shape[-2] >= 4:
        d2 = corners[..., 2, :] - corners[..., 3, :]
        d = torch.where(torch.isnan(d2), d, torch.where(torch.isnan(d), d2, d + d2))
    return _fold_angle(torch.nan_to_num(d, nan=1.0))


def axis_departures(angles_deg: Tensor, axis_deg: Tensor) -> Tensor:
    """Signed departure of endplate directions from the directions their column implies.

    Parameters
    ----------
    angles_deg, axis_deg : Tensor
        (...) folded directions in degrees (:func:`endplate_angles`,
        :func:`column_axis_angles`).

    Returns
    -------
    Tensor
        (...) degrees in [-90, 90) (directions are unsigned lines); NaN where either is NaN.
    """
    return torch.remainder(angles_deg - axis_deg.to(angles_deg.dtype) + 90.0, 180.0) - 90.0


def vertebra_crop_params(corners: Tensor, scale: float = CROP_SCALE,
                         facing: Tensor | None = None, angles_deg: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Centre, square side and angle of a crop aligned with a vertebral body.

    Parameters
    ----------
    corners : Tensor
        (N, K, 2) points of each vertebra in image pixels (K >= 2; the four corners of the
        conventions, or the two S1 superior corners). NaN rows are ignored.
    scale : float
        Crop side as a multiple of the body's larger extent, leaving context for the
        refiner to correct step-1 errors.
    facing : Tensor, optional
        (N,) +1/-1 image facing; unused for the angle (kept for symmetric crops).
    angles_deg : Tensor, optional
        (N,) crop angles to use instead of the corners' own :func:`endplate_angles` (for
        example the column's direction where the corners are implausible); the extent is
        measured in that frame.

    Returns
    -------
    centers : Tensor
        (N, 2) crop centres (x, y) in pixels.
    sizes : Tensor
        (N, 2) square sides (s, s) in pixels.
    angles_deg : Tensor
        (N,) crop angles in degrees, (-90, 90].
    """
    del facing
    valid = ~torch.isnan(corners).any(-1, keepdim=True)
    pts = torch.where(valid, corners, torch.zeros_like(corners))
    n = valid.sum(-2).clamp_min(1)
    center = pts.sum(-2) / n
    angle = endplate_angles(corners) if angles_deg is None else angles_deg.to(corners.dtype)
    # Extent in the rotated frame.
    rel = pts - center.unsqueeze(-2)
    th = torch.deg2rad(angle).unsqueeze(-1)
    u = rel[..., 0] * torch.cos(th) + rel[..., 1] * torch.sin(th)
    v = -rel[..., 0] * torch.sin(th) + rel[..., 1] * torch.cos(th)
    big = torch.finfo(corners.dtype).max
    mask = valid.squeeze(-1)
    ext_u = torch.where(mask, u, -big).amax(-1) - torch.where(mask, u, big).amin(-1)
    ext_v = torch.where(mask, v, -big).amax(-1) - torch.where(mask, v, big).amin(-1)
    side = torch.maximum(ext_u, ext_v).clamp_min(1.0) * scale
    return center, torch.stack((side, side), -1), angle


def _fold_angle(d: Tensor) -> Tensor:
    """Angle (degrees) of direction vectors (..., 2), folded into (-90, 90]."""
    d = torch.where(d[..., :1] < 0, -d, d)
    return torch.rad2deg(torch.atan2(d[..., 1], d[..., 0]))


def column_axis_angles(centres: Tensor) -> Tensor:
    """Endplate direction that a spinal column implies at each of its levels.

    Endplates lie roughly across the column, so at each level the direction perpendicular to
    the line through the centres of its neighbours (one-sided at the ends of the column, or
    where a neighbour is missing) is what its own corners should give, up to the level's
    wedge and the segmental angles (a few to a dozen degrees).

    Parameters
    ----------
    centres : Tensor
        (N, L, 2) level centres in pixels in cranio-caudal order, NaN for missing levels.

    Returns
    -------
    Tensor
        (N, L) angles in degrees, folded into (-90, 90] as in :func:`endplate_angles`;
        NaN where a level or both of its neighbours are missing.
    """
    pad = torch.full_like(centres[:, :1], float("nan"))
    above = torch.cat((pad, centres[:, :-1]), 1)
    below = torch.cat((centres[:, 1:], pad), 1)
    span = torch.where(torch.isnan(centres), centres, below - above)
    span = torch.where(torch.isnan(span), below - centres, span)
    span = torch.where(torch.isnan(span), centres - above, span)
    across = torch.stack((span[..., 1], -span[..., 0]), -1)
    return _fold_angle(across)


def sampling_grid(matrices: Tensor, in_size: Sequence[int], out_size: Sequence[int]) -> Tensor:
    """``grid_sample`` grid (align_corners=False) realizing an image -> output transform.

    Parameters
    ----------
    matrices : Tensor
        (..., 3, 3) maps from input-image pixels to output pixels.
    in_size, out_size : (H, W)
        Sizes of the sampled image and of the output.

    Returns
    -------
    Tensor
        (..., H_out, W_out, 2) normalized input coordinates for every output pixel centre.
    """
    h_out, w_out = int(out_size[0]), int(out_size[1])
    inv = torch.linalg.inv(matrices.double())
    theta = _normalize_matrix(in_size, inv) @ inv @ torch.linalg.inv(
        _normalize_matrix(out_size, inv))
    ys = (torch.arange(h_out, dtype=inv.dtype, device=inv.device) * 2 + 1) / h_out - 1
    xs = (torch.arange(w_out, dtype=inv.dtype, device=inv.device) * 2 + 1) / w_out - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack((gx, gy, torch.ones_like(gx)), -1)  # (H_out, W_out, 3)
    lead = theta.shape[:-2]
    grid = base.reshape(-1, 3) @ theta.reshape(-1, 3, 3).transpose(-1, -2)  # (N, HW, 3)
    grid = grid[..., :2] / grid[..., 2:]
    return grid.reshape(*lead, h_out, w_out, 2).to(matrices.dtype)


def crop_images(images: Tensor, matrices: Tensor, out_size: Sequence[int],
                mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Extract crops (or any warp) described by image -> crop matrices.

    Parameters
    ----------
    images : Tensor
        (B, C, H, W) images.
    matrices : Tensor
        (B, 3, 3): one crop per image, or (B, K, 3, 3): K crops per image (e.g. one per
        vertebra), done in a single ``grid_sample`` call.
    out_size : (H_out, W_out)
        Crop size.
    mode, padding_mode : str
        As for :func:`torch.nn.functional.grid_sample`.

    Returns
    -------
    Tensor
        (B, C, H_out, W_out) or (B, K, C, H_out, W_out), dtype of ``images``.
    """
    h_out, w_out = int(out_size[0]), int(out_size[1])
    in_size = images.shape[-2:]
    grid = sampling_grid(matrices.float(), in_size, out_size).to(images.dtype)
    if matrices.dim() == 3:
        return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode,
                             align_corners=False)
    b, k = matrices.shape[:2]
    # Stack the K grids vertically so each image is sampled once for all its crops.
    stacked = grid.reshape(b, k * h_out, w_out, 2)
    out = F.grid_sample(images, stacked, mode=mode, padding_mode=padding_mode,
                        align_corners=False)
    return out.reshape(b, images.shape[1], k, h_out, w_out).transpose(1, 2)


def hflip_matrix(width: float, device: torch.device | str | None = None) -> Tensor:
    """(3, 3) float64 left-right mirror of an image or crop ``width`` pixels wide: x -> width - x.

    Composed after an image -> crop matrix (``hflip_matrix(w) @ m``) it gives the mirrored crop;
    points keep their names. The refiner's training flips and the pipeline's mirrored
    test-time views both use it, so they are the same transform.
    """
    return torch.tensor([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64, device=device)


# -- letterbox ---------------------------------------------------------------------------------
def letterbox_matrix(in_size: Sequence[int], out_size: Sequence[int]) -> tuple[Tensor, Size]:
    """Matrix of an aspect-preserving resize into ``out_size`` with centred padding.

    The resized image has integer size ``(round(H s), round(W s))`` with
    ``s = min(H_out / H, W_out / W)``; the matrix uses the exact per-axis factors of that
    integer size, which is what ``interpolate(align_corners=False)`` or ``cv2.resize`` do,
    and integer padding offsets, so mapped points land exactly on the resized pixels.

    Returns
    -------
    matrix : Tensor
        (3, 3) float64 map from input pixels to output pixels.
    resized : (H_r, W_r)
        Size of the resized image before padding.
    """
    h, w = int(in_size[0]), int(in_size[1])
    h_out, w_out = int(out_size[0]), int(out_size[1])
    s = min(h_out / h, w_out / w)
    h_r, w_r = min(h_out, max(1, round(h * s))), min(w_out, max(1, round(w * s)))
    top, left = (h_out - h_r) // 2, (w_out - w_r) // 2
    m = torch.tensor([[w_r / w, 0, left], [0, h_r / h, top], [0, 0, 1]], dtype=torch.float64)
    return m, (h_r, w_r)


def letterbox(images: Tensor, out_size: Sequence[int], pad_value: float = 0.0,
              antialias: bool = True) -> tuple[Tensor, Tensor]:
    """Resize a batch keeping the aspect ratio, padding to ``out_size``.

    Parameters
    ----------
    images : Tensor
        (B, C, H, W) images of one size.
    out_size : (H_out, W_out)
        Model input size.
    pad_value : float
        Value of the padding.
    antialias : bool
        Antialiased bilinear downsampling (recommended for radiographs many times larger
        than the model input).

    Returns
    -------
    out : Tensor
        (B, C, H_out, W_out).
    matrix : Tensor
        (3, 3) float64 map from input pixels to output pixels; use ``transform_points(points, torch.linalg.inv(matrix))`` to map predictions back.
    """
    m, (h_r, w_r) = letterbox_matrix(images.shape[-2:], out_size)
    h_out, w_out = int(out_size[0]), int(out_size[1])
    resized = F.interpolate(images, size=(h_r, w_r), mode="bilinear", align_corners=False,
                            antialias=antialias)
    top, left = int(m[1, 2]), int(m[0, 2])
    out = F.pad(resized, (left, w_out - w_r - left, top, h_out - h_r - top), value=pad_value)
    return out, m.to(images.device)


# -- converters to other libraries -------------------------------------------------------------
def to_dsntnn_pixels(points: Tensor) -> Tensor:
    """Ours -> dsntnn's pixel mode (centre of pixel ``i`` is ``i``).

    dsntnn's *normalized* coordinates are identical to ours and need no conversion.
    """
    return points - 0.5


def from_dsntnn_pixels(points: Tensor) -> Tensor:
    """dsntnn pixel mode -> ours."""
    return points + 0.5


def to_kornia_pixels(points: Tensor) -> Tensor:
    """Ours -> Kornia/OpenCV pixel indices (centre of pixel ``i`` is ``i``)."""
    return points - 0.5


def from_kornia_pixels(points: Tensor) -> Tensor:
    """Kornia/OpenCV pixel indices -> ours."""
    return points + 0.5


def to_kornia_normalized(points: Tensor, size: Sequence[int]) -> Tensor:
    """Ours (pixels) -> Kornia's normalized coordinates (-1/+1 at the first/last pixel centres)."""
    wh = _wh(size, points)
    return 2 * (points - 0.5) / (wh - 1).clamp_min(1) - 1


def from_kornia_normalized(points: Tensor, size: Sequence[int]) -> Tensor:
    """Kornia's normalized coordinates -> ours (pixels)."""
    wh = _wh(size, points)
    return (points + 1) * (wh - 1).clamp_min(1) / 2 + 0.5


def to_mmpose(points: Tensor, size: Sequence[int]) -> Tensor:
    """Ours (pixels) -> MMPose integral-regression coordinates (pixel ``i`` at ``i / W``)."""
    return (points - 0.5) / _wh(size, points)


def from_mmpose(points: Tensor, size: Sequence[int]) -> Tensor:
    """MMPose integral-regression coordinates -> ours (pixels)."""
    return points * _wh(size, points) + 0.5


def to_torchvision(points: Tensor) -> Tensor:
    """Ours -> torchvision keypoints/boxes: the same continuous convention (identity).

    torchvision's Keypoint R-CNN floors ``x`` to find a keypoint's pixel and adds 0.5 when it
    decodes a heatmap, i.e. pixel ``i`` spans ``[i, i + 1)`` as here.
    """
    return points.clone()


def from_torchvision(points: Tensor) -> Tensor:
    """torchvision keypoints/boxes -> ours (identity, see :func:`to_torchvision`)."""
    return points.clone()


def uncrop(crop_map: Tensor, matrix: Tensor, image_size: Sequence[int],
           threshold: float = 0.5) -> tuple[Tensor, tuple[int, int]]:
    """Paste a map predicted in a crop back into its image: the inverse of :func:`crop_images`.

    Only the window of the image the crop covers is computed (a crop is a small part of a
    radiograph).

    Parameters
    ----------
    crop_map : Tensor
        (C, h, w) values in crop pixels (e.g. a body-mask probability).
    matrix : Tensor
        (3, 3) original-image -> crop pixel matrix of that crop.
    image_size : (H, W)
        Size of the original image.
    threshold : float
        The window is ``crop_map > threshold`` (bool); pass ``-inf`` to keep the values.

    Returns
    -------
    window : Tensor
        (C, h_win, w_win) the map in image pixels, thresholded.
    offset : (row, col)
        Top-left pixel of the window in the image (the window may be empty: size 0).
    """
    h, w = crop_map.shape[-2:]
    inv = torch.linalg.inv(matrix.double())
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], dtype=torch.float64,
                           device=inv.device)
    img_pts = transform_points(corners, inv)
    x0 = int(max(math.floor(float(img_pts[:, 0].min())), 0))
    y0 = int(max(math.floor(float(img_pts[:, 1].min())), 0))
    x1 = int(min(math.ceil(float(img_pts[:, 0].max())), int(image_size[1])))
    y1 = int(min(math.ceil(float(img_pts[:, 1].max())), int(image_size[0])))
    if x1 <= x0 or y1 <= y0:
        return crop_map.new_zeros((crop_map.shape[0], 0, 0), dtype=torch.bool), (y0, x0)
    shift = torch.eye(3, dtype=torch.float64, device=inv.device)
    shift[0, 2], shift[1, 2] = -x0, -y0
    window = crop_images(crop_map[None].float(), (shift @ inv)[None], (y1 - y0, x1 - x0))[0]
    return window > threshold, (y0, x0)


def opencv_affine(matrix: np.ndarray | Tensor) -> np.ndarray:
    """``cv2.warpAffine`` matrix of a transform between our continuous pixel coordinates.

    OpenCV indexes pixels by their centres (centre of pixel ``i`` is ``i``); the conversion
    uses the converters of :mod:`spinelandmarks.geometry`, i.e.
    ``M_cv = T(-1/2) @ M @ T(+1/2)``.

    Parameters
    ----------
    matrix : (3, 3) array
        Map from source pixels to destination pixels (ours).

    Returns
    -------
    np.ndarray
        (2, 3) float64 forward map for ``cv2.warpAffine`` (without ``WARP_INVERSE_MAP``).
    """
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float64))  # a tensor too (via __array__)
    basis = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    img = to_kornia_pixels(transform_points(from_kornia_pixels(basis), m))
    o, ex, ey = img[0], img[1] - img[0], img[2] - img[0]
    return torch.stack((ex, ey, o), -1).numpy()
