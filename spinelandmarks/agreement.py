"""Deprecated: moved to :mod:`spinelandmarks.evaluation.agreement` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .evaluation.agreement import *  # noqa: F403
from .evaluation.agreement import __all__  # noqa: F401

warnings.warn("spinelandmarks.agreement is deprecated: import from "
              "spinelandmarks.evaluation.agreement", DeprecationWarning, stacklevel=2)
