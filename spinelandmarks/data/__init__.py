"""Radiograph I/O, annotation formats, validation, augmentation, datasets and the DataModule
(the synthetic phantoms moved to :mod:`spinelandmarks.phantoms` in 0.2).

Submodules are imported on first access (``spinelandmarks.data.annotations`` after ``import
spinelandmarks as sl``: ``sl.data.annotations``), so importing the package stays light.
"""

# No ``from __future__ import annotations`` here: it would bind the name ``annotations`` and
# hide the submodule of that name.
import importlib
import importlib.util
from typing import Any


def __getattr__(name: str) -> Any:
    """Import a public submodule on first access (PEP 562)."""
    if (name.isidentifier() and not name.startswith("_")
            and importlib.util.find_spec(f"{__name__}.{name}") is not None):
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
