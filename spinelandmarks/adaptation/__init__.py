"""Bringing a pipeline to a new source: how unlike its training images an archive is
(:mod:`.shift`), which images to annotate (:mod:`.select`), the backbone features both use
(:mod:`.features`), and self-training on the unlabeled archive (:mod:`.self_training`).

Names are imported on first use, so that :mod:`spinelandmarks.pipeline` can load a shift
model (:mod:`.shift_model`) without importing the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunSummary", "Selection", "ShiftModel", "fit_shift_model", "image_descriptors",
           "pooled_features", "select_images"]

_WHERE = {"RunSummary": "shift", "Selection": "select", "ShiftModel": "shift_model",
          "fit_shift_model": "shift", "image_descriptors": "features",
          "pooled_features": "features", "select_images": "select"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
