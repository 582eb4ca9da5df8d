"""Deprecated: moved to :mod:`spinelandmarks.phantoms.projection` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from ..phantoms.projection import *  # noqa: F403
from ..phantoms.projection import __all__  # noqa: F401

warnings.warn("spinelandmarks.data.projection is deprecated: import from "
              "spinelandmarks.phantoms.projection", DeprecationWarning, stacklevel=2)
