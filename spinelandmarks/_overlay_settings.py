"""Defaults of the overlays, importable without torch (the command line's help reads them)."""

from __future__ import annotations

__all__ = ["OVERLAY_MAX_SIDE"]

#: Default long side of the overlays of ``predict``, pixels (smaller radiographs keep theirs).
OVERLAY_MAX_SIDE = 1024
