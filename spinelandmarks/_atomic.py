"""Atomic file writes: a temp file next to the target, then ``os.replace``.

A reader never sees a half-written file, and an interrupted job leaves the previous version
(or nothing) in place. Every writer of the package goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from os import PathLike
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, then move it into place.

    The file gets the usual permissions (``0666 & ~umask``), not ``mkstemp``'s 0600.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
