"""Deprecated: moved to :mod:`spinelandmarks.phantoms.outline` in 0.2; this path goes in 0.3."""

from __future__ import annotations

import warnings

from ..phantoms.outline import *  # noqa: F403
from ..phantoms.outline import __all__  # noqa: F401

warnings.warn("spinelandmarks.data.outline is deprecated: import from "
              "spinelandmarks.phantoms.outline", DeprecationWarning, stacklevel=2)
