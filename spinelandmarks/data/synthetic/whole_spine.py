"""Deprecated: moved to :mod:`spinelandmarks.phantoms.whole_spine` in 0.2."""

from ...phantoms.whole_spine import *  # noqa: F403
