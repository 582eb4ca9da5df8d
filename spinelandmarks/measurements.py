"""Deprecated: moved to :mod:`spinelandmarks.anatomy.measurements` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .anatomy.measurements import *  # noqa: F403
from .anatomy.measurements import __all__  # noqa: F401

warnings.warn("spinelandmarks.measurements is deprecated: import from "
              "spinelandmarks.anatomy.measurements", DeprecationWarning, stacklevel=2)
