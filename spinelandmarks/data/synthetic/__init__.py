"""Deprecated: moved to :mod:`spinelandmarks.phantoms` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from ...phantoms import *  # noqa: F403
from ...phantoms import __all__  # noqa: F401

warnings.warn("spinelandmarks.data.synthetic is deprecated: import from "
              "spinelandmarks.phantoms", DeprecationWarning, stacklevel=2)
