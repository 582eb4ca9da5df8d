"""Deprecated: moved to :mod:`spinelandmarks.phantoms.config` in 0.2."""

from ...phantoms.config import *  # noqa: F403
