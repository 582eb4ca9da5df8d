"""opencv_affine: cv2.warpAffine with it samples what crop_images samples."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from spinelandmarks.geometry import crop_images, opencv_affine


def _checkerboard(h: int, w: int, square: int) -> np.ndarray:
    rows, cols = np.indices((h, w))
    return (((rows // square) + (cols // square)) % 2).astype(np.float32)


def _matrix(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """Source pixels -> crop pixels: scale and rotate about the origin, then shift."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1]])


def _interior(matrix: np.ndarray, src_hw: tuple[int, int], out_hw: tuple[int, int],
              margin: float = 2.0) -> np.ndarray:
    """(H_out, W_out) bool: crop pixels whose source lies ``margin`` px inside the image."""
    inv = np.linalg.inv(matrix)
    ys, xs = np.indices(out_hw) + 0.5  # pixel centres, our convention
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return ((sx > margin) & (sx < src_hw[1] - margin)
            & (sy > margin) & (sy < src_hw[0] - margin))


def test_warp_affine_with_opencv_affine_matches_crop_images() -> None:
    image = _checkerboard(64, 48, 6)
    out_hw = (40, 36)
    matrix = _matrix(20.0, 0.8, 4.3, -6.1)
    ours = crop_images(torch.from_numpy(image)[None, None], torch.from_numpy(matrix)[None],
                       out_hw)[0, 0].numpy()
    cv = cv2.warpAffine(image, opencv_affine(matrix), (out_hw[1], out_hw[0]),
                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = _interior(matrix, image.shape, out_hw)
    assert inside.sum() > 0.5 * inside.size
    diff = np.abs(ours - cv)[inside]
    # cv2 interpolates with 1/32-pixel fixed-point weights: differences of a few percent at
    # the squares' edges, none in their flat middles
    assert diff.max() < 0.08 and diff.mean() < 0.01
    # the half-pixel conversion matters: the plain (2, 3) block is off at every edge
    naive = cv2.warpAffine(image, matrix[:2], (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR)
    assert np.abs(ours - naive)[inside].max() > 0.3


def test_opencv_affine_of_a_pure_shift_and_a_scale() -> None:
    # a shift is the same in both conventions; a scale s moves the origin by (s - 1) / 2
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(opencv_affine(shift), shift[:2])
    scale = np.diag([2.0, 2.0, 1.0])
    np.testing.assert_allclose(opencv_affine(scale), [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]])
    np.testing.assert_allclose(opencv_affine(torch.from_numpy(scale)), opencv_affine(scale))
