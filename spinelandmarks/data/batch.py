"""Typed samples and batches shared by the DataModule, the models and the pipeline.

All point coordinates in a batch are pixels of the *model input* (after letterbox or crop),
in the conventions' continuous convention, ordered (x, y). ``matrices`` map original-image
pixels to model-input pixels, so ``transform_points(pred, torch.linalg.inv(matrices))`` puts
predictions back on the radiograph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["LandmarkBatch", "collate"]


@dataclass
class LandmarkBatch:
    """A batch of whole images or crops with their targets.

    Attributes
    ----------
    images : Tensor
        (B, 1, H, W) float32 intensities in [0, 1].
    points : Tensor
        (B, P, 2) float32 target pixels in the model input; NaN where absent.
    visibility : Tensor
        (B, P) int64: 0 absent, 1 occluded, 2 visible (absent also after augmentation moved the
        point out of the image).
    matrices : Tensor
        (B, 3, 3) float64 original-image -> model-input pixel transforms.
    pixel_spacing : Tensor
        (B, 2) float32 (row_mm, col_mm) of the original image, NaN when unknown.
    image_ids : list of str
        File names of the source images.
    boxes : list of Tensor
        Per image (n_i, 4) float32 boxes (x1, y1, x2, y2) in model-input pixels (detector).
    labels : list of Tensor
        Per image (n_i,) int64 level labels, 1-based (0 is background for torchvision).
    levels : Tensor
        (B,) int64 level index of each crop (refiner batches), -1 for whole images.
    body_masks : Tensor or None
        (B, 1, H, W) float32 body mask of each crop's level (refiner batches with masks).
    has_masks : Tensor or None
        (B,) bool: the crop's level has a reference mask.
    """

    images: Tensor
    points: Tensor
    visibility: Tensor
    matrices: Tensor
    pixel_spacing: Tensor
    image_ids: list[str] = field(default_factory=list)
    boxes: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    levels: Tensor | None = None
    body_masks: Tensor | None = None
    has_masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def mask(self) -> Tensor:
        """(B, P) bool: labelled points (visibility > 0 and finite coordinates)."""
        return (self.visibility > 0) & torch.isfinite(self.points).all(-1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LandmarkBatch:
        """Copy every tensor to ``device``."""
        def move(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.to(device, non_blocking=non_blocking)
            if isinstance(v, list):
                return [move(x) for x in v]
            return v
        return LandmarkBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pin_memory(self) -> LandmarkBatch:
        """Page-locked copy, called by ``DataLoader(pin_memory=True)``."""
        def pin(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.pin_memory()
            if isinstance(v, list):
                return [pin(x) for x in v]
            return v
        return LandmarkBatch(**{f.name: pin(getattr(self, f.name)) for f in fields(self)})


def collate(samples: list[dict[str, Any]]) -> LandmarkBatch:
    """Stack per-sample dicts (keys as the batch attributes, unbatched) into a batch."""
    def stack(key: str) -> Tensor:
        return torch.stack([torch.as_tensor(s[key]) for s in samples])

    levels = stack("level") if "level" in samples[0] else None
    return LandmarkBatch(
        images=stack("image").float(),
        points=stack("points").float(),
        visibility=stack("visibility").long(),
        matrices=stack("matrix").double(),
        pixel_spacing=stack("pixel_spacing").float(),
        image_ids=[str(s.get("image_id", "")) for s in samples],
        boxes=[torch.as_tensor(s["boxes"]).float().reshape(-1, 4) for s in samples]
        if "boxes" in samples[0] else [],
        labels=[torch.as_tensor(s["labels"]).long().reshape(-1) for s in samples]
        if "labels" in samples[0] else [],
        levels=levels.long() if levels is not None else None,
        body_masks=stack("body_mask").float() if "body_mask" in samples[0] else None,
        has_masks=stack("has_mask").bool() if "has_mask" in samples[0] else None,
    )
