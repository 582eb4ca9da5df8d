"""The library's defaults and recipes, in one place.

Every other module takes these values from here (and some re-export them under their old
names: ``demo.CPU_BUDGET_S``, ``demo.CPU_DETECTOR``, ``training.BUDGET_SHARES``), so that a
default changes in one line. Sizes are ``(H, W)`` in pixels, times in seconds. What each
default measures to is in BENCHMARKS.md.

Examples
--------
>>> from spinelandmarks import defaults
>>> defaults.INPUT_SIZE, defaults.CROP_SIZE, defaults.CROP_SCALE
((512, 384), (128, 128), 1.6)
>>> round(sum(defaults.BUDGET_SHARES.values()), 12)
1.0
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["BUDGET_SHARES", "CPU_BUDGET_S", "CPU_DETECTOR", "CROP_SCALE", "CROP_SIZE",
           "DETECTOR_HEADS", "GPU_BUDGET_S", "INPUT_SIZE", "detector_head"]

#: Input ``(H, W)`` of the detector and the step-1 landmark model (``spinelandmarks train``).
INPUT_SIZE: Final[tuple[int, int]] = (512, 384)

#: Crop ``(H, W)`` of the step-2 refiner.
CROP_SIZE: Final[tuple[int, int]] = (128, 128)

#: Side of a vertebra's oriented crop as a multiple of the body's larger extent
#: (:func:`~spinelandmarks.geometry.vertebra_crop_params`); training and prediction must agree.
CROP_SCALE: Final[float] = 1.6

#: Seconds of training per stage on a 2-core CPU: the demo must finish in under 10 minutes there.
#: A plain dict (it is written to ``config.json``): copy it before changing it.
CPU_BUDGET_S: Final[dict[str, float]] = {"detector": 100.0, "landmark": 210.0, "refiner": 120.0}

#: Seconds of training per stage of the demo on a GPU.
GPU_BUDGET_S: Final[dict[str, float]] = {"detector": 60.0, "landmark": 120.0, "refiner": 60.0}

#: Share of a total time budget given to each stage (``train --time-budget 20m``): the
#: proportions of :data:`CPU_BUDGET_S` (100 : 210 : 120).
BUDGET_SHARES: Final[dict[str, float]] = {
    stage: seconds / sum(CPU_BUDGET_S.values()) for stage, seconds in CPU_BUDGET_S.items()}

#: Keyword arguments of :class:`~spinelandmarks.models.VertebraDetector` for a smaller
#: Faster R-CNN head on CPU (torchvision's defaults cost seconds per training step there and
#: 3.6x the inference FLOPs; ``train --detector-head small``, the default of ``train`` and the
#: demo on CPU). Copy it before changing it.
CPU_DETECTOR: Final[dict[str, Any]] = {
    "fpn_channels": 64, "representation_size": 256, "proposals_train": 300,
    "proposals_test": 100, "box_batch_size_per_image": 64,
    "anchor_sizes": (16, 32, 64, 128, 256)}

#: ``train --detector-head``: the keyword arguments of each named detector head.
DETECTOR_HEADS: Final[dict[str, dict[str, Any]]] = {"small": CPU_DETECTOR, "full": {}}


def detector_head(gpu: bool) -> str:
    """The detector head trained by default: ``"full"`` (torchvision's) on a GPU, ``"small"``
    (:data:`CPU_DETECTOR`) on a CPU, where the full head's cost is not repaid."""
    return "full" if gpu else "small"

#: Long side of the overlay images ``predict`` writes, in pixels (smaller radiographs keep
#: their size; ``--overlay-size 0``: full resolution).
OVERLAY_MAX_SIDE: Final[int] = 1024

#: Default byte budget of a training-data memory cache
#: (:class:`~spinelandmarks.data.image_cache.ImageCache`), per process (each worker has its own).
DEFAULT_CACHE_BYTES: Final[int] = 1 << 30

#: The crop datasets keep each radiograph at the resolution where its smallest training crop
#: (jitter included) has this many source pixels per crop pixel (never above full resolution):
#: the crops are then warped at twice their size at least and box-averaged.
CROP_SOURCE_OVERSAMPLE: Final[float] = 2.0
