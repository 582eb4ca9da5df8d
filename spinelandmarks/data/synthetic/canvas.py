"""Deprecated: moved to :mod:`spinelandmarks.phantoms.canvas` in 0.2."""

from ...phantoms.canvas import *  # noqa: F403
