"""Deprecated: moved to :mod:`spinelandmarks.phantoms.phantom` in 0.2."""

from ...phantoms.phantom import *  # noqa: F403
