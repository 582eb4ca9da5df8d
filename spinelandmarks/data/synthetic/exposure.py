"""Deprecated: moved to :mod:`spinelandmarks.phantoms.exposure` in 0.2."""

from ...phantoms.exposure import *  # noqa: F403
