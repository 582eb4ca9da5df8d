"""Overlays: a radiograph with the predicted corners, endplates, levels, angles, graded
fractures and QC flags."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from ._atomic import atomic_write
from .anatomy.alignment import sagittal_alignment
from .anatomy.measurements import genant_grades, morphometry, spinopelvic_parameters
from .data.intensity import robust_normalize
from .data.io import Radiograph
from .data.masks import mask_from_segmentation
from .data.plot import draw_points
from .defaults import OVERLAY_MAX_SIDE
from .inference import SpineLandmarkPipeline, SpineResult
from .measurement_table import ANGLE_LABELS
from .qc import LEVEL_FLAGS
from .schema import FEMORAL_HEADS, LandmarkSchema

__all__ = ["OVERLAY_FORMATS", "OVERLAY_MAX_SIDE", "draw_overlay", "save_overlay"]

#: File formats of :func:`save_overlay`, by file suffix.
OVERLAY_FORMATS = {".png": "PNG", ".jpg": "JPEG"}
#: JPEG quality of :func:`save_overlay` (text and thin lines stay legible).
JPEG_QUALITY = 90

def draw_overlay(radiograph: Radiograph, result: SpineResult,
                 pipeline: SpineLandmarkPipeline, max_side: int | None = None) -> np.ndarray:
    """RGB overlay: step-2 points, endplate lines, level names, body outlines (cyan, when the
    pipeline segments), the measured angles (and PI, PT, SS, LL with femoral heads in the
    schema; SVA, T4-T12 kyphosis and T1PA for whole-spine schemas), graded fractures (orange box and Genant grade), the suspected fractures of the
    pipeline's screen (listed) and the QC flags (flagged levels circled in red).

    The radiograph is windowed by its own percentiles
    (:func:`~spinelandmarks.data.intensity.robust_normalize`), so 12-bit data stored in 16-bit
    files and narrow-range DICOM are readable.

    Parameters
    ----------
    radiograph : Radiograph
    result : SpineResult
        The pipeline's result on ``radiograph`` (points in its pixels).
    pipeline : SpineLandmarkPipeline
    max_side : int, optional
        Draw on the radiograph shrunk (``INTER_AREA``) to at most this many pixels on its
        long side; None: at full resolution. Measurements and grades are computed from the
        full-resolution points either way.

    Returns
    -------
    numpy.ndarray
        (h, w, 3) uint8 RGB.
    """
    px = np.asarray(radiograph.pixels, dtype=np.float32)
    h, w = px.shape[:2]
    f = 1.0 if max_side is None or max(h, w) <= max_side else max_side / max(h, w)
    if f < 1.0:
        px = np.asarray(cv2.resize(px, (max(1, round(w * f)), max(1, round(h * f))),
                                   interpolation=cv2.INTER_AREA), np.float32)
    view = result.points * np.array([px.shape[1] / w, px.shape[0] / h])  # drawn positions
    rgb = np.array(draw_points(robust_normalize(px),  # a writable copy
                               np.nan_to_num(view, nan=-1e6), pipeline.schema,
                               visibility=np.isfinite(view).all(-1).astype(np.int64) * 2))
    scale = max(1, rgb.shape[0] // 400)
    _outline_masks(rgb, result.masks, scale, (h, w))
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    _circle_flagged(draw, result, view, pipeline, scale)
    fractures = _mark_fractures(draw, result.points, view, pipeline.schema, scale)
    y = 4
    for line in _text_lines(result, pipeline.schema, fractures):
        color = (255, 64, 64) if line.startswith("NEEDS REVIEW") else (255, 255, 0)
        draw.text((6, y), line, fill=color, font_size=10 * scale)
        y += 12 * scale
    return np.asarray(img)


def save_overlay(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 overlay atomically, as PNG or JPEG after the suffix of
    ``path`` (:data:`OVERLAY_FORMATS`)."""
    p = Path(path)
    fmt = OVERLAY_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p}: overlays are written as {' or '.join(OVERLAY_FORMATS)}")
    extra = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    return atomic_write(p, lambda tmp: Image.fromarray(np.asarray(rgb)).save(
        tmp, format=fmt, **extra))


def _circle_flagged(draw: ImageDraw.ImageDraw, result: SpineResult, view: np.ndarray,
                    pipeline: SpineLandmarkPipeline, scale: int) -> None:
    """A red circle around every level with a per-level QC flag (at the ``view`` points)."""
    # image flags (angle_range, steps_disagree) name parameters, not levels
    flagged = {lv for k, levels in result.qc.items() if k in LEVEL_FLAGS for lv in levels}
    for lv in flagged:
        box = _level_box(view, pipeline.schema, lv)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        pad = 0.3 * max(x1 - x0, y1 - y0, 10.0)
        draw.ellipse((x0 - pad, y0 - pad, x1 + pad, y1 + pad), outline=(255, 0, 0),
                     width=2 * scale)


def _level_box(points: np.ndarray, schema: LandmarkSchema, level: str
               ) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` around a level's found points; None when none was found."""
    pts = points[schema.level_indices(level)]
    pts = pts[np.isfinite(pts).all(-1)]
    if not len(pts):
        return None
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _spinopelvic_lines(points: np.ndarray, schema: LandmarkSchema) -> list[str]:
    """``PI 52.1  PT 13.0  SS 39.1  LL 55.2 deg`` for schemas with femoral heads."""
    if FEMORAL_HEADS.name not in schema.level_names:
        return []
    par = spinopelvic_parameters(torch.as_tensor(points, dtype=torch.float64)[None], schema)
    text = "  ".join(f"{label} {float(par[k][0]):.1f}" if np.isfinite(float(par[k][0]))
                     else f"{label} n/a" for k, label in (
                         ("pelvic_incidence", "PI"), ("pelvic_tilt", "PT"),
                         ("sacral_slope", "SS"), ("lumbar_lordosis", "LL")))
    return [text + " deg"]


def _alignment_lines(result: SpineResult, schema: LandmarkSchema) -> list[str]:
    """``SVA 23.1 mm  TK 41.2  T1PA 12.0 deg`` for whole-spine schemas (what they define)."""
    pts = torch.as_tensor(result.points, dtype=torch.float64)[None]
    par = {k: float(v[0]) for k, v in sagittal_alignment(pts, schema,
                                                         result.pixel_spacing).items()}
    if not par:
        return []

    def show(value: float, unit: str = "") -> str:
        return f"{value:.1f}{unit}" if np.isfinite(value) else "n/a"

    parts = []
    if "sva_px" in par:
        parts.append("SVA " + (show(par["sva_mm"], " mm") if result.pixel_spacing is not None
                               else show(par["sva_px"], " px")))
    if "thoracic_kyphosis_t4_t12" in par:
        parts.append("TK " + show(par["thoracic_kyphosis_t4_t12"]))
    if "t1_pelvic_angle" in par:
        parts.append("T1PA " + show(par["t1_pelvic_angle"]))
    return ["  ".join(parts) + " deg"]


def _text_lines(result: SpineResult, schema: LandmarkSchema, fractures: list[str]
                ) -> list[str]:
    """The overlay's text, top to bottom: angles, spinopelvic angles, graded and suspected
    fractures, missing levels, the QC flags."""
    lines = [f"{ANGLE_LABELS.get(k, k)}: {v:.1f} deg" if np.isfinite(v) else
             f"{ANGLE_LABELS.get(k, k)}: n/a" for k, v in result.parameters.items()]
    lines += _spinopelvic_lines(result.points, schema)
    lines += _alignment_lines(result, schema)
    if fractures:
        lines.append("fracture (Genant): " + ", ".join(fractures))
    if result.suspected_fractures:
        lines.append("suspected fracture (screen): " + ", ".join(result.suspected_fractures))
    if result.missing_levels:
        lines.append("missing: " + ", ".join(result.missing_levels))
    if result.needs_review:
        lines.append("NEEDS REVIEW: " + "; ".join(f"{k} {' '.join(v)}"
                                                  for k, v in result.qc.items()))
    return lines


def _mark_fractures(draw: ImageDraw.ImageDraw, points: np.ndarray, view: np.ndarray,
                    schema: LandmarkSchema, scale: int) -> list[str]:
    """An orange box (at the ``view`` points) and ``G<grade>`` beside every body graded 1 or
    worse (from the full-resolution ``points``); returns ``["L2 G2 wedge", ...]``."""
    grades = genant_grades(morphometry(torch.as_tensor(points, dtype=torch.float64)[None],
                                       schema))
    shapes = ("wedge", "biconcave", "crush")
    found = []
    for j, lv in enumerate(schema.body_levels):
        grade = int(grades["grade"][0, j])
        box = _level_box(view, schema, lv)
        if grade < 1 or box is None:
            continue
        x0, y0, x1, y1 = box
        draw.rectangle((x0, y0, x1, y1), outline=(255, 160, 0), width=scale)
        draw.text((x1 + 4 * scale, y0), f"G{grade}", fill=(255, 160, 0), font_size=10 * scale)
        found.append(f"{lv} G{grade} {shapes[int(grades['shape'][0, j])]}")
    return found


def _outline_masks(rgb: np.ndarray, masks: dict[str, dict], scale: int,
                   size: tuple[int, int]) -> None:
    """Draw each body mask (of an image of ``size`` (H, W)) outlined (cyan, ``scale`` pixels
    wide) into ``rgb`` in place."""
    h, w = rgb.shape[:2]
    for seg in masks.values():
        m = mask_from_segmentation(seg, *size)
        if m.shape != (h, w):
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        edge = m & ~ndimage.binary_erosion(m, iterations=scale, border_value=0)
        rgb[edge] = (0, 220, 255)
