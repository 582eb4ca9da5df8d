"""Vertebral body masks as COCO segmentations: polygons (annotations) and RLE (predictions).

A segmentation is what a COCO annotation's ``segmentation`` field holds: a list of polygons
``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates (conventions section 1: the image's
top-left corner is (0, 0), pixel centres at half-integers), or a run-length encoding
``{"size": [height, width], "counts": ...}`` (compressed string or uncompressed list).
Encoding and decoding are pycocotools'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from ..geometry import opencv_affine

__all__ = ["Segmentation", "check_segmentation", "mask_from_segmentation", "rle_from_mask",
           "warp_segmentation"]

#: A COCO segmentation: polygons or an RLE dict.
Segmentation = list[list[float]] | dict[str, Any]


def check_segmentation(seg: Any) -> Segmentation:
    """``seg`` as a valid segmentation, or a ``ValueError`` saying what is wrong."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and v >= 0 for v in size)):
            raise ValueError(f"RLE size must be [height, width], got {size!r}")
        if not isinstance(counts, (str, list)):
            raise ValueError("RLE counts must be a string or a list of run lengths")
        return {"size": [int(size[0]), int(size[1])], "counts": counts}
    if not isinstance(seg, list) or not seg:
        raise ValueError("segmentation must be a non-empty list of polygons or an RLE dict")
    polys = []
    for poly in seg:
        if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in poly)):
            raise ValueError("each polygon must be a flat list [x1, y1, x2, y2, ...] of at "
                             "least 3 finite points")
        polys.append([float(v) for v in poly])
    return polys


def mask_from_segmentation(seg: Segmentation, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of a segmentation (pixels whose centre is inside)."""
    if isinstance(seg, dict):
        rle = seg if isinstance(seg["counts"], (str, bytes)) else coco_mask.frPyObjects(
            seg, *seg["size"])
        if isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"RLE of size {list(rle['size'])} for an image of "
                             f"{[height, width]} pixels")
    else:
        rle = coco_mask.merge(coco_mask.frPyObjects(seg, height, width))
    return coco_mask.decode(rle).astype(bool)


def rle_from_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a (H, W) mask, JSON-ready (``counts`` as a string)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def warp_segmentation(seg: Segmentation, matrix: np.ndarray, out_hw: tuple[int, int],
                      src_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) bool mask of a segmentation seen through an image -> output pixel transform.

    Polygons are transformed and rasterized at the output size (exact); an RLE is decoded at
    the source size ``src_hw`` (H, W) and resampled (bilinear, then thresholded at 0.5).

    Parameters
    ----------
    matrix : np.ndarray
        (3, 3) source-image pixels -> output pixels (a crop matrix).
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    m = np.asarray(matrix, np.float64)
    if isinstance(seg, dict):
        import cv2

        src = mask_from_segmentation(seg, *src_hw).astype(np.float32)
        warped = cv2.warpAffine(src, opencv_affine(m), (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return warped > 0.5
    polys = []
    for poly in seg:
        xy = np.asarray(poly, np.float64).reshape(-1, 2) @ m[:2, :2].T + m[:2, 2]
        polys.append(xy.reshape(-1).tolist())
    return mask_from_segmentation(polys, h, w)
