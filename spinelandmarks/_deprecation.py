"""Names that moved in 0.2: a module ``__getattr__`` that still serves them, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module`` (PEP 562) serving each name of ``moved`` from its new
    module (name -> absolute module path) with a ``DeprecationWarning`` naming it; any other
    name is an ``AttributeError`` as usual."""

    def __getattr__(name: str) -> Any:
        if name in moved:
            warnings.warn(f"{module}.{name} is deprecated: import it from {moved[name]}",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(moved[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
