"""Deprecated: moved to :mod:`spinelandmarks.anatomy.alignment` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from .anatomy.alignment import *  # noqa: F403
from .anatomy.alignment import __all__  # noqa: F401

warnings.warn("spinelandmarks.alignment is deprecated: import from "
              "spinelandmarks.anatomy.alignment", DeprecationWarning, stacklevel=2)
