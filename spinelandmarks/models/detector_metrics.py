"""Validation metrics of the vertebra detector (torchmetrics, DDP-safe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from .level_assignment import LevelDetections

__all__ = ["LevelAccuracy", "MeanAveragePrecision50"]


class MeanAveragePrecision50(MeanAveragePrecision):
    """COCO mAP at IoU 0.5 over the level classes, as one scalar.

    ``update(preds, target)`` as :class:`torchmetrics.detection.MeanAveragePrecision` (lists of
    dicts with ``boxes`` (n, 4) xyxy pixels, ``scores`` (n,), ``labels`` (n,)); ``compute()``
    returns the 0-d ``map_50`` tensor (-1 when no ground-truth box was seen). Needs
    ``pycocotools`` (or ``faster-coco-eval`` with ``backend="faster_coco_eval"``).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("iou_thresholds", [0.5])
        kwargs.setdefault("box_format", "xyxy")
        super().__init__(**kwargs)

    def compute(self) -> Tensor:  # type: ignore[override]
        return super().compute()["map_50"]


class LevelAccuracy(Metric):
    """Fraction of images whose level assignment is entirely right.

    An image counts as correct when every ground-truth level is present in the prediction with
    IoU >= ``iou_threshold`` to its ground-truth box, and no level without ground truth is
    predicted.

    Notes
    -----
    ``update(preds, gt_boxes, gt_labels)``: ``preds`` a list of :class:`LevelDetections`,
    ``gt_boxes`` a list of (n_i, 4) xyxy pixel boxes, ``gt_labels`` a list of (n_i,) 1-based
    labels. ``compute()`` returns a 0-d float tensor (NaN before any image).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, iou_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iou_threshold = float(iou_threshold)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, preds: Sequence[LevelDetections], gt_boxes: Sequence[Tensor],
               gt_labels: Sequence[Tensor]) -> None:
        """Add a batch of images; see the class notes."""
        if not len(preds) == len(gt_boxes) == len(gt_labels):
            raise ValueError("preds, gt_boxes and gt_labels must have one entry per image")
        for pred, gb, gl in zip(preds, gt_boxes, gt_labels, strict=True):
            self.total += 1
            self.correct += float(self._image_correct(pred, gb, gl))

    def _image_correct(self, pred: LevelDetections, gt_boxes: Tensor, gt_labels: Tensor) -> bool:
        k = pred.num_levels
        gb = gt_boxes.detach().to("cpu", torch.float32).reshape(-1, 4)
        gl = gt_labels.detach().to("cpu", torch.long).reshape(-1) - 1
        present = pred.present.detach().cpu()
        boxes = pred.boxes.detach().to("cpu", torch.float32)
        expected = torch.zeros(k, dtype=torch.bool)
        valid = (gl >= 0) & (gl < k)
        expected[gl[valid]] = True
        if not torch.equal(expected, present):
            return False
        for level in gl[valid].tolist():
            rows = gb[gl == level]
            if float(box_iou(boxes[level : level + 1], rows).max()) < self.iou_threshold:
                return False
        return True

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.tensor(float("nan"), device=self.total.device)
        return (self.correct / self.total).float()
