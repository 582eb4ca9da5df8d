"""Deprecated: moved to :mod:`spinelandmarks.inference` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .inference import (
    MIN_SIDE,
    RECROP_ANGLE_DEG,
    RECROP_SHIFT,
    TTA_VIEWS,
    PipelineInput,
    PipelineOptions,
    SpineLandmarkPipeline,
    SpineResult,
    load_module,
    save_module,
)

__all__ = ["MIN_SIDE", "RECROP_ANGLE_DEG", "RECROP_SHIFT", "TTA_VIEWS", "PipelineInput",
           "PipelineOptions", "SpineLandmarkPipeline", "SpineResult", "load_module",
           "save_module"]

warnings.warn("spinelandmarks.pipeline is deprecated: import from spinelandmarks.inference "
              "(or the package itself: spinelandmarks.SpineLandmarkPipeline)",
              DeprecationWarning, stacklevel=2)
