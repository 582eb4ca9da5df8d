"""Task classes named by import path (``module:qualname``), as saved files record them.

A saved module (:func:`~spinelandmarks.pipeline.save_module`, a Lightning checkpoint) stores
the import path of its class next to its hyper-parameters and weights, so a user's subclass
loads as the library's own classes do. Loading imports that module (no pickled code is ever
run: the weights load with ``weights_only=True``) and accepts only subclasses of the expected
task base class.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import TypeVar

__all__ = ["ClassPathError", "check_kind", "class_path", "import_class",
           "warn_if_unimportable"]

T = TypeVar("T")


class ClassPathError(ValueError):
    """A class path that cannot be imported, or names a class of the wrong kind."""


def class_path(cls: type) -> str:
    """The import path ``module:qualname`` of ``cls``, as saved files record it.

    A class defined in a script run as ``__main__`` is recorded under the module name the
    script was run as (``python -m pkg.mod``) where Python knows it.

    Parameters
    ----------
    cls : type

    Returns
    -------
    str
        E.g. ``"spinelandmarks.models.landmark:LandmarkModel"``.

    Examples
    --------
    >>> from spinelandmarks.models import LandmarkModel
    >>> class_path(LandmarkModel)
    'spinelandmarks.models.landmark:LandmarkModel'
    """
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}:{cls.__qualname__}"


def warn_if_unimportable(cls: type, what: str) -> None:
    """Warn when ``cls`` could not be imported again by its :func:`class_path` (a class of a
    script run directly, or one defined inside a function): ``what`` (a file) would then
    load only in this process."""
    path = class_path(cls)
    module, _, qualname = path.partition(":")
    if module == "__main__" or "<locals>" in qualname:
        warnings.warn(f"{what}: class {path!r} cannot be imported by another process, so the "
                      f"file will not load there; define {cls.__name__} in a module (a .py "
                      "file on PYTHONPATH or in an installed package) and import it from there",
                      stacklevel=3)


def import_class(path: str, base: type[T], *, what: str = "class",
                 exclude: type | None = None) -> type[T]:
    """Import the class ``module:qualname`` and check that it is a subclass of ``base``.

    Parameters
    ----------
    path : str
        ``"package.module:ClassName"`` (``"package.module.ClassName"`` is also read).
    base : type
        The class it must derive from (or be).
    what : str
        How messages name the source of ``path`` (a file, a command-line option).
    exclude : type, optional
        A subclass of ``base`` that is refused all the same (``CropRefiner`` derives from
        ``LandmarkModel`` but is no step-1 model).

    Returns
    -------
    type
        The class.

    Raises
    ------
    ClassPathError
        ``path`` is malformed, its module cannot be imported, it has no such attribute, or
        the attribute is not a subclass of ``base``.
    """
    module_name, sep, qualname = path.partition(":")
    if not sep:  # dotted form: the last part is the class
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ClassPathError(f"{what}: {path!r} is not a class path; write it as "
                             "MODULE:CLASS, e.g. mypackage.models:MyLandmarkModel")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassPathError(
            f"{what}: class {path!r} cannot be imported ({exc}); install the package that "
            f"provides module {module_name!r}, or put the folder holding {module_name}.py "
            "on PYTHONPATH") from exc
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ClassPathError(f"{what}: module {module_name!r} has no class {qualname!r} "
                                 "(renamed or removed since the file was saved?)")
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise ClassPathError(f"{what}: {path!r} is not a class")
    check_kind(obj, base, what=what, exclude=exclude)
    return obj


def check_kind(cls: type, base: type, *, what: str, exclude: type | None = None) -> None:
    """Raise :class:`ClassPathError` unless ``cls`` derives from ``base`` (and not from
    ``exclude``); ``what`` names the source in the message."""
    if not issubclass(cls, base):
        raise ClassPathError(f"{what}: {class_path(cls)!r} is not a subclass of "
                             f"{base.__name__}; only spinelandmarks task classes "
                             f"({base.__name__} and its subclasses) are loaded")
    if exclude is not None and issubclass(cls, exclude):
        raise ClassPathError(f"{what}: {class_path(cls)!r} is a {exclude.__name__}, not the "
                             f"{base.__name__} this place needs")
