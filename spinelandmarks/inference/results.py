"""What the pipeline returns per radiograph, and how its tensors become results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..adaptation.shift_model import ShiftModel
from ..anatomy.angles import schema_parameters
from ..anatomy.measurements import height_loss
from ..data.annotations import ImageRecord
from ..data.io import Radiograph
from ..data.masks import rle_from_mask
from ..geometry import uncrop
from ..qc import LEVEL_FLAGS, disagreeing_parameters, implausible_angles, quality_flags
from ..schema import LandmarkSchema
from .options import PipelineOptions

__all__ = ["SpineResult", "assemble_results", "suspected_fractures"]


@dataclass
class SpineResult:
    """What the pipeline found on one radiograph (original-image pixels throughout).

    Attributes
    ----------
    source : str
        File name or a description of the input.
    image_size : (H, W)
        Size of the radiograph in pixels.
    pixel_spacing : (row_mm, col_mm) or None
        From the DICOM header, when known.
    points : np.ndarray
        (P, 2) step-2 (refined) points (x, y); NaN for levels reported missing.
    points_step1 : np.ndarray
        (P, 2) step-1 points (x, y); NaN for missing levels.
    point_scores : np.ndarray
        (P,) confidence in (0, 1]: ``1 / (1 + spread)`` with the heatmap spread in pixels of
        the network that produced the point; NaN for missing levels.
    level_scores : np.ndarray
        (num_levels,) detector scores (NaN without a detector).
    missing_levels : list of str
        Levels the detector did not find.
    parameters : dict of str to float
        Clinical parameters from the step-2 points, degrees (NaN where not measurable).
    parameters_step1 : dict of str to float
        The same from the step-1 points.
    qc : dict of str to list of str
        Quality-control flags raised (:func:`~spinelandmarks.qc.quality_flags`): per-level
        flags map to the levels concerned, ``angle_range`` to the parameters out of range.
    needs_review : bool
        Any flag raised: a reader should check this radiograph before its figures are used.
    relabelled_levels : list of str
        Levels whose step-2 points were moved to where the column continues
        (``column_repair``, :func:`~spinelandmarks.levels.repair_column`).
    suspected_fractures : list of str
        Body levels whose predicted height loss reaches the pipeline's
        ``options.fracture_screen_loss``: suspected fractures of Genant grade 2 or worse, for a
        reader to confirm (the grade itself is in the measurements).
    level_boxes : np.ndarray
        (num_levels, 4) detector boxes ``(x1, y1, x2, y2)`` in image pixels; NaN without a
        detector or where it found no box.
    masks : dict of str to dict
        Level -> body mask as a COCO RLE (``data.masks.mask_from_segmentation`` decodes it),
        for the levels found, when the pipeline segments (``masks``).
    error : str or None
        Why the input could not be predicted (one input of a list); None when it was.
    shift_score : float or None
        How unlike the pipeline's training images the radiograph is (about 1 for an image
        like its validation images; ``docs/conventions.md``, "Shift score"); None when the
        pipeline has no shift model.
    shifted : bool or None
        ``shift_score`` above the pipeline's fitted threshold (advice, not a QC flag: it does
        not set ``needs_review``); None without a shift model.
    """

    source: str
    image_size: tuple[int, int]
    pixel_spacing: tuple[float, float] | None
    points: np.ndarray
    points_step1: np.ndarray
    point_scores: np.ndarray
    level_scores: np.ndarray
    missing_levels: list[str] = field(default_factory=list)
    parameters: dict[str, float] = field(default_factory=dict)
    parameters_step1: dict[str, float] = field(default_factory=dict)
    qc: dict[str, list[str]] = field(default_factory=dict)
    needs_review: bool = False
    relabelled_levels: list[str] = field(default_factory=list)
    suspected_fractures: list[str] = field(default_factory=list)
    level_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    shift_score: float | None = None
    shifted: bool | None = None

    @classmethod
    def failed(cls, source: str, schema: LandmarkSchema, error: str) -> SpineResult:
        """The result of an input that could not be predicted: no points, ``error`` set."""
        nan = np.full((schema.num_points, 2), np.nan)
        return cls(source=source, image_size=(0, 0), pixel_spacing=None, points=nan,
                   points_step1=nan.copy(), point_scores=np.full(schema.num_points, np.nan),
                   level_scores=np.full(schema.num_levels, np.nan),
                   missing_levels=list(schema.level_names), needs_review=True,
                   level_boxes=np.full((schema.num_levels, 4), np.nan), error=error)

    def to_record(self, schema: LandmarkSchema, step: int = 2, image_id: int = 0) -> ImageRecord:
        """The result as an annotation record (predictions use the annotation layout)."""
        pts = self.points if step == 2 else self.points_step1
        vis = np.where(np.isfinite(pts).all(-1), 2, 0).astype(np.int8)
        return ImageRecord(file_name=self.source, width=self.image_size[1],
                           height=self.image_size[0], points=pts.astype(np.float64),
                           visibility=vis, image_id=image_id, pixel_spacing=self.pixel_spacing,
                           scores=self.point_scores.astype(np.float64),
                           level_scores=self.level_scores.astype(np.float64),
                           meta={"parameters": {  # JSON has no NaN: not measurable -> null
                               k: (v if np.isfinite(v) else None) for k, v in
                               (self.parameters if step == 2 else self.parameters_step1).items()},
                               "needs_review": bool(self.needs_review),
                               "relabelled_levels": list(self.relabelled_levels),
                               "suspected_fractures": list(self.suspected_fractures),
                               "qc": {k: list(v) for k, v in self.qc.items()},
                               "shift_score": self.shift_score, "shifted": self.shifted},
                           masks=dict(self.masks) if step == 2 else {})


def assemble_results(group: Sequence[Radiograph], out: dict[str, Tensor],
                     schema: LandmarkSchema, options: PipelineOptions, has_detector: bool,
                     shift_model: ShiftModel | None) -> list[SpineResult]:
    """One :class:`SpineResult` per radiograph of ``group`` from the pipeline's forward
    output ``out`` (CPU tensors, batch order): parameters of both steps (only those the
    schema defines), QC flags, suspected fractures, masks and shift scores."""
    params2 = schema_parameters(out["points"].double(), schema)
    params1 = schema_parameters(out["points_step1"].double(), schema)
    qc, review = _qc(out, params2, params1, schema, options, has_detector)
    suspected = suspected_fractures(out["points"], schema, options.fracture_screen_loss)
    shift = (shift_model.score(out["pooled"], out["intensity"]).tolist()
             if shift_model is not None and "pooled" in out else None)
    names = schema.level_names
    res = []
    for i, r in enumerate(group):
        missing = [lv for lv, ok in zip(names, out["present"][i].tolist(), strict=True)
                   if not ok]
        shift_fields: dict[str, Any] = {} if shift is None or shift_model is None else {
            "shift_score": shift[i], "shifted": shift[i] > shift_model.threshold}
        res.append(SpineResult(
            source=r.source, image_size=(int(r.pixels.shape[0]), int(r.pixels.shape[1])),
            pixel_spacing=r.pixel_spacing, points=out["points"][i].double().numpy(),
            points_step1=out["points_step1"][i].double().numpy(),
            point_scores=out["point_scores"][i].numpy(),
            level_scores=out["level_scores"][i].numpy(), missing_levels=missing,
            parameters={k: float(v[i]) for k, v in params2.items()},
            parameters_step1={k: float(v[i]) for k, v in params1.items()},
            qc=qc[i], needs_review=review[i],
            relabelled_levels=[lv for lv, on in zip(names, out["relabelled"][i].tolist(),
                                                    strict=True) if on],
            suspected_fractures=suspected[i], level_boxes=out["boxes"][i].double().numpy(),
            masks=_masks_of(out, i, r.pixels.shape[-2:], missing, schema), **shift_fields))
    return res


def _qc(out: dict[str, Tensor], params: dict[str, Tensor], params1: dict[str, Tensor],
        schema: LandmarkSchema, options: PipelineOptions, has_detector: bool
        ) -> tuple[list[dict[str, list[str]]], list[bool]]:
    """Raised flags per image (flag -> levels or parameters) and ``needs_review``."""
    flags = quality_flags(out["points"], out["points_step1"], out["point_scores"], params,
                          schema, parameters_step1=params1, present=out["present"],
                          level_scores=out["level_scores"] if has_detector else None,
                          boxes=out["boxes"] if has_detector else None,
                          thresholds=options.qc_thresholds)
    names = schema.level_names
    implausible = implausible_angles(params)
    disagree = disagreeing_parameters(params, params1, options.qc_thresholds.steps_disagree_deg)
    per_image: list[dict[str, list[str]]] = []
    for i in range(out["points"].shape[0]):
        raised = {k: [lv for lv, on in zip(names, flags[k][i].tolist(), strict=True) if on]
                  for k in LEVEL_FLAGS}
        raised["angle_range"] = [k for k, v in implausible.items() if bool(v[i])]
        raised["steps_disagree"] = [k for k, v in disagree.items() if bool(v[i])]
        per_image.append({k: v for k, v in raised.items() if v})
    return per_image, [bool(v) for v in flags["needs_review"].tolist()]


def suspected_fractures(points: Tensor, schema: LandmarkSchema, screen_loss: float
                        ) -> list[list[str]]:
    """Per image of (B, P, 2) ``points``, the body levels whose predicted height loss
    reaches ``screen_loss``."""
    loss = height_loss(points.double(), schema)
    hit = torch.nan_to_num(loss, nan=-1.0) >= screen_loss
    return [[lv for lv, on in zip(schema.body_levels, row, strict=True) if on]
            for row in hit.tolist()]


def _masks_of(out: dict[str, Tensor], i: int, size: Sequence[int], missing: Sequence[str],
              schema: LandmarkSchema) -> dict[str, dict[str, Any]]:
    """Image ``i``'s body masks, pasted back from the crops, as RLE per level found."""
    if "mask_probs" not in out:
        return {}
    h, w = int(size[0]), int(size[1])
    masks = {}
    for li, lv in enumerate(schema.level_names):
        if lv in missing or lv not in schema.body_levels:  # bodies only, not S1
            continue
        window, (y0, x0) = uncrop(out["mask_probs"][i, li], out["mask_matrices"][i, li], (h, w))
        full = np.zeros((h, w), bool)
        win = window[0].numpy()
        full[y0: y0 + win.shape[0], x0: x0 + win.shape[1]] = win
        if full.any():
            masks[lv] = rle_from_mask(full)
    return masks
