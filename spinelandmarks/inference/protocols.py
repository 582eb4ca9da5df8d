"""What the pipeline needs from its networks, as protocols.

The library's :class:`~spinelandmarks.models.LandmarkModel`,
:class:`~spinelandmarks.models.CropRefiner` and
:class:`~spinelandmarks.models.VertebraDetector` implement them; so may a user's network or a
test stub. The networks are also ``torch.nn.Module`` s: the pipeline moves them between
devices and puts them in eval mode.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..models.level_assignment import LevelDetections
from ..schema import LandmarkSchema

__all__ = ["LevelDetector", "PointModel", "StepTwoModel"]


@runtime_checkable
class PointModel(Protocol):
    """Step 1: every point of the schema on the letterboxed radiograph."""

    @property
    def schema(self) -> LandmarkSchema:
        """The points it predicts."""
        ...

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the input it expects, pixels."""
        ...

    def predict_points(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, H, W) in [0, 1] -> points (B, N, 2) in input pixels (x, y), and the
        heatmap spread (B, N) in input pixels."""
        ...

    def pooled_features(self, images: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, C) float32 image descriptor (the shift model's input)."""
        ...


@runtime_checkable
class StepTwoModel(PointModel, Protocol):
    """Step 2: one level's points in an oriented crop; optionally its body mask."""

    @property
    def crop_point_names(self) -> tuple[str, ...]:
        """The point names of one crop, in output order."""
        ...

    @property
    def crop_scale(self) -> float:
        """Crop side as a multiple of the body extent that it was trained on."""
        ...

    @property
    def has_masks(self) -> bool:
        """Whether :meth:`predict_points_and_masks` is available."""
        ...

    def predict_points_and_masks(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`predict_points`, plus (B, 1, h, w) body-mask probabilities."""
        ...


@runtime_checkable
class LevelDetector(Protocol):
    """Confirms which levels are present: one box per level of the schema."""

    def detect(self, images: Tensor) -> list[LevelDetections]:
        """(B, 1, H, W) letterboxed images -> one :class:`LevelDetections` per image, boxes
        in input pixels."""
        ...
