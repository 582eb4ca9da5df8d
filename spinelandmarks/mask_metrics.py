"""Deprecated: moved to :mod:`spinelandmarks.evaluation.masks` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .evaluation.masks import *  # noqa: F403
from .evaluation.masks import __all__  # noqa: F401

warnings.warn("spinelandmarks.mask_metrics is deprecated: import from "
              "spinelandmarks.evaluation.masks", DeprecationWarning, stacklevel=2)
