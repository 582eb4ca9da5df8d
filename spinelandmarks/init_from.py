"""``train --init-from``: the settings a saved pipeline's networks were built with.

Fine-tuning starts each stage from the networks of a saved pipeline, so the new run must
build networks of the same shapes: same schema, backbones, input and crop sizes, detector
head. :func:`inherit_settings` takes those of the source for every setting not given
explicitly; :func:`check_init_from` compares the networks the run would build with the
source's, layer by layer, before anything is written, and names the first layer that does
not fit, both shapes and the source's settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .schema import SCHEMAS, LandmarkSchema

if TYPE_CHECKING:
    from .training import TrainConfig

__all__ = ["INHERITED_FIELDS", "SourceSettings", "check_init_from", "inherit_settings",
           "pipeline_dir", "source_settings"]

#: :class:`~spinelandmarks.training.TrainConfig` fields ``--init-from`` takes from the source
#: pipeline unless given: those that fix the shapes of the networks, and the crop scale the
#: refiner was trained at.
INHERITED_FIELDS = ("schema", "image_size", "crop_size", "crop_scale", "backbone",
                    "detector_backbone", "detector_kwargs")

def pipeline_dir(source: str | os.PathLike[str]) -> Path:
    """The saved pipeline directory of ``source`` (``RUN/pipeline``, or ``RUN``)."""
    p = Path(source)
    if not (p / "pipeline.json").is_file() and (p / "pipeline" / "pipeline.json").is_file():
        return p / "pipeline"
    return p


@dataclass(frozen=True)
class SourceSettings:
    """What the networks of a saved pipeline were built with.

    Attributes
    ----------
    path : Path
        The pipeline directory.
    schema : dict
        The schema's dict form (``LandmarkSchema.to_dict``).
    image_size, crop_size : (H, W)
        Inputs of the landmark model and of the refiner, pixels.
    crop_scale : float
        Crop side as a multiple of the body extent.
    backbone : str
        Backbone of the landmark model (and refiner).
    detector_backbone : str or None
        Backbone of the detector; None when the pipeline has none.
    detector_kwargs : dict
        The detector's hyper-parameters that differ from
        :class:`~spinelandmarks.models.detector.VertebraDetector`'s defaults (e.g. the
        small head of ``--detector-head small``).
    masks : bool
        The refiner segments bodies (``train --masks``).
    """

    path: Path
    schema: dict[str, Any]
    image_size: tuple[int, int]
    crop_size: tuple[int, int]
    crop_scale: float
    backbone: str
    detector_backbone: str | None
    detector_kwargs: dict[str, Any]
    masks: bool

    def config_values(self) -> dict[str, Any]:
        """The :data:`INHERITED_FIELDS` as ``TrainConfig`` values (a registered schema by
        its name)."""
        name = self.schema.get("name")
        same = isinstance(name, str) and name in SCHEMAS and SCHEMAS[name].to_dict() == \
            LandmarkSchema.from_dict(self.schema).to_dict()
        values: dict[str, Any] = {
            "schema": name if same else self.schema, "image_size": self.image_size,
            "crop_size": self.crop_size, "crop_scale": self.crop_scale,
            "backbone": self.backbone, "detector_kwargs": dict(self.detector_kwargs)}
        if self.detector_backbone is not None:
            values["detector_backbone"] = self.detector_backbone
        return values

    def describe(self) -> str:
        """The settings in words, as the CLI options name them."""
        schema = LandmarkSchema.from_dict(self.schema)
        return describe_settings(schema, self.image_size, self.crop_size, self.crop_scale,
                                 self.backbone, self.detector_backbone, self.detector_kwargs,
                                 self.masks)


def describe_settings(schema: LandmarkSchema, image_size: tuple[int, int],
                      crop_size: tuple[int, int], crop_scale: float, backbone: str,
                      detector_backbone: str | None, detector_kwargs: Mapping[str, Any],
                      masks: bool) -> str:
    """Network settings in words: ``schema lumbar_sagittal (22 points), --image-size
    128x96, ...``."""
    parts = [f"schema {schema.name} ({schema.num_points} points)",
             f"--image-size {image_size[0]}x{image_size[1]}",
             f"--crop-size {crop_size[0]}x{crop_size[1]}", f"crop scale {crop_scale:g}",
             f"--backbone {backbone}"]
    if detector_backbone is not None:
        head = (", detector head " + ", ".join(f"{k}={v}" for k, v in
                                               sorted(detector_kwargs.items()))
                if detector_kwargs else ", default detector head")
        parts.append(f"--detector-backbone {detector_backbone}{head}")
    parts.append("refiner with body masks (--masks)" if masks else "refiner without masks")
    return ", ".join(parts)


def _hparams(path: Path) -> dict[str, Any]:
    payload = _payload(path)
    return dict(payload.get("hyper_parameters", {}))


def _payload(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load model file ({exc})") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path}: not a model file saved by spinelandmarks")
    return payload


def _detector_defaults() -> dict[str, Any]:
    from .models.detector import VertebraDetector

    return {k: p.default for k, p in inspect.signature(VertebraDetector).parameters.items()
            if p.default is not inspect.Parameter.empty}


#: Detector hyper-parameters that are not head settings (set by TrainConfig fields of their own
#: or by the optimizer).
_NOT_HEAD = {"schema", "backbone", "weights_path", "input_size", "lr", "weight_decay",
             "scheduler", "warmup_epochs"}


def source_settings(source: str | os.PathLike[str]) -> SourceSettings:
    """Read the network settings of a saved pipeline (``RUN/pipeline`` or ``RUN``).

    Raises
    ------
    FileNotFoundError
        ``source`` is not a saved pipeline directory.
    """
    d = pipeline_dir(source)
    cfg_path = d / "pipeline.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: --init-from needs a saved pipeline "
                                "directory (RUN/pipeline) or a training run")
    cfg = json.loads(cfg_path.read_text())
    models: dict[str, str] = cfg.get("models", {})
    if "landmark" not in models:
        raise ValueError(f"{cfg_path}: no landmark model listed")
    lm = _hparams(d / models["landmark"])
    ref = _hparams(d / models["refiner"]) if "refiner" in models else {}
    det = _hparams(d / models["detector"]) if "detector" in models else None
    defaults = _detector_defaults()
    head = {} if det is None else {
        k: _plain(v) for k, v in det.items()
        if k not in _NOT_HEAD and k in defaults and _plain(v) != _plain(defaults[k])}
    crop = ref.get("input_size", (128, 128))
    return SourceSettings(
        path=d, schema=dict(cfg["schema"]),
        image_size=(int(lm["input_size"][0]), int(lm["input_size"][1])),
        crop_size=(int(crop[0]), int(crop[1])), crop_scale=float(cfg.get("crop_scale", 1.6)),
        backbone=str(lm.get("backbone", "resnet18")),
        detector_backbone=None if det is None else str(det.get("backbone", "resnet18")),
        detector_kwargs=head, masks=bool(ref.get("masks", False)))


def _plain(v: Any) -> Any:
    """Tuples and lists compare equal (hyper-parameters come back as either)."""
    return tuple(_plain(x) for x in v) if isinstance(v, (list, tuple)) else v


def inherit_settings(cfg: TrainConfig, given: Collection[str] = ()
                     ) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with the :data:`INHERITED_FIELDS` not in ``given`` taken from the pipeline of
    ``cfg.init_from``.

    Parameters
    ----------
    cfg : TrainConfig
        With ``init_from`` set.
    given : collection of str
        Fields set explicitly (CLI options given): kept as they are.

    Returns
    -------
    cfg : TrainConfig
        The settings to train with.
    taken : dict
        The fields taken from the source whose value changed, and their new values.
    """
    if cfg.init_from is None:
        return cfg, {}
    values = source_settings(cfg.init_from).config_values()
    taken = {k: v for k, v in values.items()
             if k not in given and _plain(getattr(cfg, k)) != _plain(v)}
    return dataclasses.replace(cfg, **taken), taken


def check_init_from(cfg: TrainConfig, schema: LandmarkSchema,
                    networks: Mapping[str, nn.Module]) -> None:
    """Check that the networks a run would train have the shapes of the source's.

    Run before anything is written, so that a rerun with corrected options is not refused
    as a run "trained with other data or settings".

    Parameters
    ----------
    cfg : TrainConfig
        The run's settings (``init_from`` set; else nothing is checked).
    schema : LandmarkSchema
        The run's schema.
    networks : mapping of str to nn.Module
        Stage -> the freshly built network of that stage.

    Raises
    ------
    FileNotFoundError
        The source lacks a stage's network.
    ValueError
        A network does not fit: the message names the file, the first layer that differs,
        both shapes, and the source's and this run's settings.
    """
    if cfg.init_from is None:
        return
    src = source_settings(cfg.init_from)
    for stage, network in networks.items():
        path = src.path / f"{stage}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --init-from needs a saved pipeline "
                                    f"with a {stage} network (or leave the {stage} out of "
                                    "--stages)")
        payload = _payload(path)
        if payload.get("class") != type(network).__name__:
            hint = (f"; train with --{stage}-class {payload['class_path']} to start from it"
                    if payload.get("class_path") else "")
            raise ValueError(f"{path}: a {payload.get('class')}, not a "
                             f"{type(network).__name__}{hint}; nothing was written")
        problem = first_mismatch(network.state_dict(), payload["state_dict"])
        if problem is not None:
            here = describe_settings(schema, cfg.image_size, cfg.crop_size, cfg.crop_scale,
                                     cfg.backbone, cfg.detector_backbone if "detector" in
                                     cfg.stages else None, cfg.detector_kwargs, cfg.masks)
            raise ValueError(
                f"--init-from {src.path}: {path.name} does not fit this run's {stage} "
                f"network: {problem}. The source was trained with {src.describe()}; this "
                f"run asks for {here}. Leave out the options that differ (--init-from then "
                "takes them from the source) or train without --init-from; nothing was "
                "written")


def first_mismatch(ours: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]
                   ) -> str | None:
    """The first layer (state-dict key) whose presence or shape differs, in words; None
    when every layer fits."""
    def shape(t: torch.Tensor) -> str:
        return "x".join(map(str, t.shape)) or "scalar"

    for key, value in source.items():
        if key not in ours:
            return f"layer {key} ({shape(value)}) is in the source but not in this run's network"
        if ours[key].shape != value.shape:
            return (f"layer {key} is {shape(value)} in the source and {shape(ours[key])} in "
                    "this run")
    for key, value in ours.items():
        if key not in source:
            return f"layer {key} ({shape(value)}) is in this run's network but not in the source"
    return None
