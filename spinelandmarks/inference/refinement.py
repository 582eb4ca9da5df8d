"""Step 2: each level refined in an oriented crop of the full-resolution radiograph.

A level's crop is built from its current corners (:func:`~spinelandmarks.geometry.
vertebra_crop_params`), cut by one affine matrix per crop, refined by the step-2 network,
and its points mapped back by the inverse matrix. With test-time augmentation each level is
refined in every view of :data:`TTA_VIEWS` and the mapped-back points are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..anatomy.vertebrae import level_centres
from ..geometry import (
    MAX_AXIS_DEPARTURE_DEG,
    axis_departures,
    column_axis_angles,
    crop_images,
    crop_matrix,
    endplate_angles,
    hflip_matrix,
    transform_points,
    vertebra_crop_params,
)
from ..schema import LandmarkSchema
from .protocols import StepTwoModel

__all__ = ["RECROP_ANGLE_DEG", "RECROP_SHIFT", "TTA_VIEWS", "Refinement", "StepTwo"]

#: ``recrop``: a level whose refined centre lies further than this many body sizes (its
#: larger extent) from the centre of the corners its crop was built from is refined again.
#: Chosen on the cross-style benchmark's validation images (docs/training.md).
RECROP_SHIFT = 0.25
#: ``recrop``: the same for its endplate direction, degrees.
RECROP_ANGLE_DEG = 10.0

#: Step-2 test-time augmentation views, ``(crop side factor, mirrored left-right)``: the
#: refiner is trained on both patient facings and on jittered crop sizes, so each view is an
#: input it knows; the scales stay inside the training jitter. The plain crop first (its masks
#: are the ones pasted back). Four views: the two more of the six used before 0.3 (0.94
#: mirrored, 1.06 plain) cost half as much again and changed no figure measurably
#: (``benchmarks/probes/tta_views.py``, BENCHMARKS.md).
TTA_VIEWS: tuple[tuple[float, bool], ...] = (
    (1.0, False), (1.0, True), (0.94, False), (1.06, True))


@dataclass(frozen=True)
class Refinement:
    """Step 2's output for a batch (original-image pixels).

    Attributes
    ----------
    points : Tensor
        (B, P, 2) points; the levels not refined keep the points they were given.
    scores : Tensor
        (B, P) confidence ``1 / (1 + spread)``, spread in original pixels.
    body : dict of str to Tensor
        With masks: ``mask_probs`` (B, L, 1, h, w) and ``mask_matrices`` (B, L, 3, 3), zeros
        for the levels not refined; empty otherwise.
    turned : Tensor
        (B, L) bool, levels whose crop was turned to their column's direction (``recrop``).
    """

    points: Tensor
    scores: Tensor
    body: dict[str, Tensor]
    turned: Tensor


@dataclass(frozen=True)
class StepTwo:
    """The crop refinement of one pipeline, as configured by its options.

    Parameters
    ----------
    refiner : StepTwoModel
    schema : LandmarkSchema
    crop_size : (h, w)
        The refiner's input, pixels.
    crop_scale : float
        Crop side as a multiple of the body extent.
    tta, recrop, masks : bool
        As :class:`~spinelandmarks.inference.PipelineOptions`.
    channels_last : bool
        Crops in NHWC memory format.
    """

    refiner: StepTwoModel
    schema: LandmarkSchema
    crop_size: tuple[int, int]
    crop_scale: float
    tta: bool
    recrop: bool
    masks: bool
    channels_last: bool = False

    @property
    def refined_index(self) -> list[int]:
        """Indices of the levels step 2 refines (not the femoral heads), caudal-most last."""
        return [i for i, lv in enumerate(self.schema.level_names)
                if lv in self.schema.refined_levels]

    def refine(self, images: Tensor, points: Tensor, scores: Tensor,
               levels: Sequence[int] | None = None) -> Refinement:
        """Refine the levels of :attr:`refined_index` (or the indices ``levels``).

        Parameters
        ----------
        images : Tensor
            (B, 1, H, W) windowed radiographs, original resolution.
        points : Tensor
            (B, P, 2) current points, original pixels; the crops are built from them.
        scores : Tensor
            (B, P) their confidences.
        levels : sequence of int, optional
            Level indices to refine (default: every refined level).
        """
        sel = list(self.refined_index if levels is None else levels)
        table = self.schema.level_point_table().to(images.device)[sel]  # (L', K), -1 padding
        b, num_levels, k = images.shape[0], table.shape[0], table.shape[1]
        per_level = per_level_points(points, self.schema, sel).flatten(0, 1)  # (B*L', K, 2)
        angles = endplate_angles(per_level)
        turned = torch.zeros_like(angles, dtype=torch.bool)
        if self.recrop:
            axis = column_axes(points, self.schema)[:, sel].reshape(-1).to(angles.dtype)
            turned = axis_departures(angles, axis).abs() > MAX_AXIS_DEPARTURE_DEG
            angles = torch.where(turned, axis, angles)
        centers, sizes, angles = vertebra_crop_params(per_level, scale=self.crop_scale,
                                                      angles_deg=angles)
        mats, view_sizes = self._view_matrices(centers, sizes, angles, b, num_levels)
        v = mats.shape[1] // num_levels
        crops = crop_images(images, mats, self.crop_size).flatten(0, 1)  # (B*L*V, 1, h, w)
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        body: dict[str, Tensor] = {}
        if self.masks:
            crop_pts, spread, probs = self.refiner.predict_points_and_masks(crops)
            body = self._paste_body(probs, mats, b, num_levels, v, sel)
        else:
            crop_pts, spread = self.refiner.predict_points(crops)
        crop_pts = crop_pts.reshape(b, num_levels * v, -1, 2)[:, :, :k]
        spread = spread.reshape(b, num_levels, v, -1)[..., :k]
        # back to the image, then the mean over the views
        refined = transform_points(crop_pts, torch.linalg.inv(mats))
        refined = refined.reshape(b, num_levels, v, k, 2).mean(2)  # (B, L', K, 2)
        # crop pixels -> original pixels: the crop side over the crop size
        px = (view_sizes[:, 0] / self.crop_size[1]).reshape(b, num_levels, v, 1).to(spread.dtype)
        new_scores = (1.0 / (1.0 + spread * px)).mean(2)
        valid = table >= 0
        flat = table[valid]  # (P',) in level-major order = schema order
        out, out_scores = points.clone(), scores.clone()
        out[:, flat] = refined[:, valid].to(out.dtype)
        out_scores[:, flat] = new_scores[:, valid].to(out_scores.dtype)
        turned_levels = torch.zeros(b, self.schema.num_levels, dtype=torch.bool,
                                    device=images.device)
        turned_levels[:, sel] = turned.reshape(b, num_levels)
        return Refinement(out, out_scores, body, turned_levels)

    def _view_matrices(self, centers: Tensor, sizes: Tensor, angles: Tensor, b: int,
                       num_levels: int) -> tuple[Tensor, Tensor]:
        """(B, L'*V, 3, 3) crop matrices, V views per level (same centre and angle, side
        times the view's scale, mirrored or not), and the (B*L'*V, 2) crop sides."""
        views = TTA_VIEWS if self.tta else ((1.0, False),)
        v = len(views)
        scale = torch.tensor([s for s, _ in views], dtype=torch.float64, device=centers.device)
        view_sizes = (sizes.double()[:, None, :] * scale[None, :, None]).flatten(0, 1)
        mats = crop_matrix(centers.double().repeat_interleave(v, 0), view_sizes,
                           angles.repeat_interleave(v, 0), self.crop_size)
        mirrored = torch.tensor([m for _, m in views], device=centers.device).repeat(
            b * num_levels)
        flip = hflip_matrix(self.crop_size[1], device=mats.device)
        mats = torch.where(mirrored[:, None, None], flip @ mats, mats)
        return mats.reshape(b, num_levels * v, 3, 3), view_sizes

    def _paste_body(self, probs: Tensor, mats: Tensor, b: int, num_levels: int, v: int,
                    sel: list[int]) -> dict[str, Tensor]:
        """The plain view's masks and crop matrices (side 1.0, not mirrored: TTA_VIEWS[0])
        as (B, L, ...) with zeros for the levels not refined."""
        body = {"mask_probs": probs.reshape(b, num_levels, v, *probs.shape[1:])[:, :, 0],
                "mask_matrices": mats.reshape(b, num_levels, v, 3, 3)[:, :, 0]}
        index = torch.tensor(sel, device=probs.device)
        return {key: x.new_zeros(b, self.schema.num_levels, *x.shape[2:]).index_copy_(
            1, index, x) for key, x in body.items()}

    def refine_again(self, images: Tensor, step: Refinement, levels: Tensor) -> Refinement:
        """Refine once more the (B, L) bool ``levels``, each in a crop built from its refined
        corners; the other levels keep theirs."""
        rows = levels.any(1).nonzero()[:, 0]
        named = levels.any(0).nonzero()[:, 0].tolist()  # only levels some row names
        again = self.refine(images[rows], step.points[rows], step.scores[rows], named)
        take = levels[rows][:, self.schema.point_level.to(levels.device)]  # (R, P)
        points, scores = step.points.clone(), step.scores.clone()
        points[rows] = torch.where(take[..., None], again.points, points[rows])
        scores[rows] = torch.where(take, again.scores, scores[rows])
        body = {key: value.clone() for key, value in step.body.items()}
        for key, value in again.body.items():
            keep = levels[rows].reshape(*levels[rows].shape, *([1] * (value.dim() - 2)))
            body[key][rows] = torch.where(keep, value.to(body[key].dtype), body[key][rows])
        return Refinement(points, scores, body, step.turned)

    def moved(self, before: Tensor, after: Tensor) -> Tensor:
        """(B, L) bool: refined levels whose corners step 2 moved off the crop it was given,
        the centre by more than :data:`RECROP_SHIFT` body sizes or the endplate direction by
        more than :data:`RECROP_ANGLE_DEG`."""
        index = self.refined_index
        old = per_level_points(before, self.schema, index).flatten(0, 1)  # (B*L', K, 2)
        new = per_level_points(after, self.schema, index).flatten(0, 1)
        new_angles = endplate_angles(new)
        _, extent, _ = vertebra_crop_params(new, scale=1.0, angles_deg=new_angles)
        shift = torch.linalg.vector_norm(level_centres(after, self.schema)[:, index]
                                         - level_centres(before, self.schema)[:, index], dim=-1)
        turn = axis_departures(new_angles, endplate_angles(old)).abs()
        moved = (shift.flatten() > RECROP_SHIFT * extent[:, 0]) | (turn > RECROP_ANGLE_DEG)
        out = torch.zeros(after.shape[0], self.schema.num_levels, dtype=torch.bool,
                          device=after.device)
        out[:, index] = moved.reshape(after.shape[0], -1)
        return out


def per_level_points(points: Tensor, schema: LandmarkSchema, levels: Sequence[int]) -> Tensor:
    """(B, P, 2) points -> (B, L', K, 2) those of the level indices ``levels``, NaN where a
    level has fewer than K points."""
    table = schema.level_point_table().to(points.device)[list(levels)]  # (L', K), -1 padding
    x = points[:, table.clamp_min(0)]
    return torch.where((table >= 0)[None, :, :, None], x, torch.full_like(x, float("nan")))


def column_axes(points: Tensor, schema: LandmarkSchema) -> Tensor:
    """(B, L) endplate directions the column of refined levels implies (degrees; NaN for the
    levels not refined)."""
    centres = level_centres(points, schema)
    axes = torch.full(centres.shape[:2], float("nan"), dtype=centres.dtype,
                      device=centres.device)
    index = torch.tensor([i for i, lv in enumerate(schema.level_names)
                          if lv in schema.refined_levels], device=centres.device)
    return axes.index_copy(1, index, column_axis_angles(centres[:, index]))
