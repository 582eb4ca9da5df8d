"""Deprecated: moved to :mod:`spinelandmarks.phantoms.anatomy` in 0.2."""

from ...phantoms.anatomy import *  # noqa: F403
