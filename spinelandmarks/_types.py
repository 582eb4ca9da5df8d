"""Type aliases shared across the package."""

from __future__ import annotations

from os import PathLike
from typing import TypeAlias

__all__ = ["StrPath"]

#: A file-system path as the public API accepts it: ``str`` or any ``os.PathLike[str]``.
StrPath: TypeAlias = str | PathLike[str]
