"""The package version (one place, read by the packaging metadata)."""

__version__ = "0.1.0"
