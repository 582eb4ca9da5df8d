"""The package version (one place, read by the packaging metadata)."""

__version__ = "0.2.0.dev0"
