"""Deprecated: moved to :mod:`spinelandmarks.phantoms.rendering` in 0.2."""

from ...phantoms.rendering import *  # noqa: F403
