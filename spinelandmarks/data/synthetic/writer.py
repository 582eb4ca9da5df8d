"""Deprecated: moved to :mod:`spinelandmarks.phantoms.writer` in 0.2."""

from ...phantoms.writer import *  # noqa: F403
