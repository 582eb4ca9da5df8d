"""Deprecated: moved to :mod:`spinelandmarks.evaluation.report` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .evaluation.report import *  # noqa: F403
from .evaluation.report import __all__  # noqa: F401

warnings.warn("spinelandmarks.report is deprecated: import from "
              "spinelandmarks.evaluation.report", DeprecationWarning, stacklevel=2)
