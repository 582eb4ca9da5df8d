"""Deprecated: moved to :mod:`spinelandmarks.phantoms.frames` in 0.2."""

from ...phantoms.frames import *  # noqa: F403
