"""Saving and loading networks and pipeline directories (weights-only files)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_write, atomic_write_text
from .._version import __version__
from ..adaptation.shift_model import ShiftModel
from ..models.base import LandmarkTask
from ..models.classes import check_kind, class_path, import_class, warn_if_unimportable
from ..models.detector import VertebraDetector
from ..models.landmark import CropRefiner, LandmarkModel
from ..schema import LandmarkSchema
from .options import PipelineOptions

__all__ = ["SavedPipeline", "load_module", "read_pipeline", "save_module", "write_pipeline"]

#: Network roles of a pipeline directory, their file stems and the class each must derive from.
ROLES: dict[str, type[LandmarkTask]] = {"landmark": LandmarkModel, "refiner": CropRefiner,
                                        "detector": VertebraDetector}


def save_module(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Save a task module as ``{"class", "class_path", "hyper_parameters", "state_dict"}``,
    atomically.

    The file holds only tensors and plain containers, so it loads with ``weights_only=True``;
    ``class_path`` (``module:qualname``) lets :func:`load_module` rebuild a subclass. A class
    that another process could not import (defined in a script run directly, or inside a
    function) is saved with a warning.
    """
    warn_if_unimportable(type(module), str(path))
    hparams = dict(getattr(module, "hparams", {}))
    payload = {"class": type(module).__name__, "class_path": class_path(type(module)),
               "hyper_parameters": hparams, "state_dict": module.state_dict(),
               "version": __version__}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_module(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                base: type[LandmarkTask] = LandmarkTask, exclude: type | None = None
                ) -> LandmarkTask:
    """Load a file written by :func:`save_module` or a Lightning checkpoint of a task module.

    The class is imported from the ``class_path`` the file records (files of version 0.1
    name one of the library's classes only); the weights load with ``weights_only=True``.

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device
    base : type
        The class the saved one must be or derive from (default: any task module).
    exclude : type, optional
        A subclass of ``base`` refused all the same (``CropRefiner`` where a step-1
        ``LandmarkModel`` is needed).

    Returns
    -------
    LandmarkTask
        The module, in eval mode.

    Raises
    ------
    ValueError
        The file cannot be read, its class cannot be imported (the message names the module
        to install or put on ``PYTHONPATH``) or is not a subclass of ``base``.
    """
    p = Path(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: cannot load model file ({exc})") from exc
    # both also in Lightning checkpoints (LandmarkTask.on_save_checkpoint)
    saved_path, name = payload.get("class_path"), payload.get("class")
    if isinstance(saved_path, str):
        cls = import_class(saved_path, base, what=str(p), exclude=exclude)
    else:
        legacy = {c.__name__: c for c in ROLES.values()}
        if name not in legacy:
            raise ValueError(f"{p}: unknown module class {name!r} (a file saved without its "
                             "class path names one of " + ", ".join(sorted(legacy)) + ")")
        cls = legacy[name]
        check_kind(cls, base, what=str(p), exclude=exclude)
    module = cls(**payload["hyper_parameters"])
    module.load_state_dict(payload["state_dict"])
    return module.eval()


@dataclass(frozen=True)
class SavedPipeline:
    """What a pipeline directory holds: its networks by role, options and shift model."""

    networks: dict[str, LandmarkTask]
    options: PipelineOptions
    shift_model: ShiftModel | None


def write_pipeline(directory: str | os.PathLike[str], networks: dict[str, nn.Module | None],
                   schema: LandmarkSchema, options: PipelineOptions,
                   shift_model: ShiftModel | None) -> Path:
    """Write ``pipeline.json``, one weights-only file per network (``<role>.pt``) and the
    shift model (``shift.pt``) into ``directory``; ``pipeline.json`` is written last."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    models: dict[str, str] = {}
    for role, module in networks.items():
        if module is not None:
            save_module(module, d / f"{role}.pt")
            models[role] = f"{role}.pt"
    config: dict[str, Any] = {"version": __version__, "schema": schema.to_dict(),
                              "models": models, **options.to_dict()}
    if shift_model is not None:
        config["shift_model"] = shift_model.save(d / "shift.pt").name
    atomic_write_text(d / "pipeline.json", json.dumps(config, indent=2) + "\n")
    return d


def read_pipeline(directory: str | os.PathLike[str],
                  map_location: str | torch.device = "cpu") -> SavedPipeline:
    """Read a directory written by :func:`write_pipeline` (any version since 0.1).

    Raises
    ------
    FileNotFoundError
        ``directory`` has no ``pipeline.json``.
    ValueError
        A network cannot be loaded, none is a landmark model, or an option is out of range;
        the message names the file.
    """
    d = Path(directory)
    cfg_path = d / "pipeline.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: not a saved pipeline directory")
    cfg = json.loads(cfg_path.read_text())
    networks = {role: load_module(d / name, map_location, ROLES.get(role, LandmarkTask),
                                  exclude=CropRefiner if role == "landmark" else None)
                for role, name in cfg["models"].items()}
    if "landmark" not in networks:
        raise ValueError(f"{cfg_path}: no landmark model listed")
    shift = ShiftModel.load(d / cfg["shift_model"]) if cfg.get("shift_model") else None
    return SavedPipeline(networks, PipelineOptions.from_dict(cfg, str(cfg_path)), shift)
