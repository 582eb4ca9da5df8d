"""Overlap and boundary distance of vertebral body masks: Dice, IoU and the 95th-percentile
Hausdorff distance, per level and per image.

Surfaces are the mask pixels with a background 4-neighbour (``mask & ~binary_erosion(mask)``);
surface distances come from scipy's exact Euclidean distance transform, in mm with the pixel
spacing. HD95 is the larger of the two directed 95th percentiles (as MONAI's
``compute_hausdorff_distance(percentile=95)``). Figures are NaN when both masks are empty;
HD95 is NaN when one is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.annotations import ImageRecord
from ..data.masks import mask_from_segmentation
from ..schema import LandmarkSchema

__all__ = ["dice", "evaluate_masks", "hausdorff95", "iou"]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2 |A & B| / (|A| + |B|) of two bool masks; NaN when both are empty."""
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else math.nan


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union |A & B| / |A | B| of two bool masks; NaN when both are empty."""
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else math.nan


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred: np.ndarray, truth: np.ndarray,
                spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the masks' surfaces.

    Parameters
    ----------
    pred, truth : np.ndarray
        (H, W) bool masks.
    spacing : (row_mm, col_mm), optional
        Pixel spacing; without it the distance is in pixels.
    """
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    if not a.any() or not b.any():
        return math.nan
    rows, cols = np.nonzero(a | b)  # work on the union's bounding box (plus a margin)
    r0, r1 = max(rows.min() - 2, 0), rows.max() + 3
    c0, c1 = max(cols.min() - 2, 0), cols.max() + 3
    a, b = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
    sa, sb = _surface(a), _surface(b)
    sampling = tuple(spacing) if spacing is not None else (1.0, 1.0)
    to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return float(max(np.percentile(to_b[sa], 95), np.percentile(to_a[sb], 95)))


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if not v.size:
        return {"n": 0, "mean": math.nan, "median": math.nan, "min": math.nan}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "min": float(v.min())}


def evaluate_masks(pred: Sequence[ImageRecord | None], truth: Sequence[ImageRecord],
                   schema: LandmarkSchema) -> dict[str, Any]:
    """Dice, IoU and HD95 (mm where the spacing is known) of every level with a reference mask.

    A level with a reference mask and no predicted one scores Dice and IoU 0 (and no HD95).

    Returns
    -------
    dict
        ``per_level``: level -> {``dice``, ``iou``, ``hd95``: {n, mean, median, min}};
        ``per_image``: mean Dice of each image's levels, summarized; ``missed``: levels with a
        reference mask and no prediction; ``hd95_unit``.
    """
    per: dict[str, dict[str, list[float]]] = {}
    image_dice: list[float] = []
    missed, in_mm = 0, True
    for p, t in zip(pred, truth, strict=True):
        scores = []
        for lv in (lv for lv in schema.level_names if lv in t.masks):
            gt = mask_from_segmentation(t.masks[lv], t.height, t.width)
            seg = None if p is None else p.masks.get(lv)
            pm = (np.zeros_like(gt) if seg is None
                  else mask_from_segmentation(seg, t.height, t.width))
            missed += seg is None
            in_mm &= t.pixel_spacing is not None
            d = per.setdefault(lv, {"dice": [], "iou": [], "hd95": []})
            d["dice"].append(dice(pm, gt))
            d["iou"].append(iou(pm, gt))
            d["hd95"].append(hausdorff95(pm, gt, t.pixel_spacing))
            scores.append(d["dice"][-1])
        if scores:
            image_dice.append(float(np.nanmean(scores)))
    return {"per_level": {lv: {k: _summary(v) for k, v in d.items()} for lv, d in per.items()},
            "per_image": _summary(image_dice), "missed": missed,
            "hd95_unit": "mm" if in_mm else "px (mm where the spacing is known)"}
