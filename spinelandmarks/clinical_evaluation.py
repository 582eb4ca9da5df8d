"""Deprecated: moved to :mod:`spinelandmarks.evaluation.clinical` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .evaluation.clinical import *  # noqa: F403
from .evaluation.clinical import __all__  # noqa: F401

warnings.warn("spinelandmarks.clinical_evaluation is deprecated: import from "
              "spinelandmarks.evaluation.clinical", DeprecationWarning, stacklevel=2)
