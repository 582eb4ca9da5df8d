"""spinelandmarks: vertebral corners on sagittal spine radiographs, and the spine measured from them.

The main classes and functions are importable from the package itself::

    import spinelandmarks as sl
    pipe = sl.SpineLandmarkPipeline.load("run/pipeline")
    result = pipe.predict("film.dcm")[0]
    result.parameters["l1_s1_lordosis"], result.needs_review

They are loaded on first use (PEP 562), so ``import spinelandmarks`` and the command line's
``--help`` do not import torch. Every submodule below is an attribute too, imported on first
access (``sl.data.annotations``, ``sl.metrics``).

Submodules
----------
schema      landmark schemas (levels and their ordered points)
dsnt        differentiable spatial to numerical transform, its losses and head
geometry    coordinate conventions, oriented crops, letterbox, converters
anatomy     the clinical definitions: angles, vertebra sizes, measurements, alignment
metrics     normalized localization errors, level identification, torchmetrics metrics
levels      level identification rules (sacral anchor, chain and detector, facing)
qc          plausibility checks and quality-control flags
data        radiograph I/O, annotation formats, datasets, DataModule
phantoms    synthetic radiographs with exact ground truth (three styles)
models      landmark model, crop refiner, vertebra detector, backbones
inference   the two-step pipeline on radiographs (its options, parts and results)
predict     batch prediction on files (overlays, measurements.csv)
training    the three-stage training recipe
evaluation  errors, clinical agreement, masks and the report against ground truth
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Public name -> submodule that defines it.
_EXPORTS: dict[str, str] = {
    "LUMBAR_SAGITTAL": "schema",
    "LUMBAR_MORPHOMETRY": "schema",
    "LUMBOPELVIC_SAGITTAL": "schema",
    "WHOLE_SPINE_SAGITTAL": "schema",
    "LandmarkSchema": "schema",
    "Level": "schema",
    "SpineLandmarkPipeline": "inference",
    "PipelineOptions": "inference",
    "SpineResult": "inference",
    "LandmarkModel": "models",
    "LandmarkTask": "models",
    "CropRefiner": "models",
    "VertebraDetector": "models",
    "SpineDataModule": "data.datamodule",
    "ImageRecord": "data.annotations",
    "read_coco": "data.annotations",
    "write_coco": "data.annotations",
    "Radiograph": "data.io",
    "read_image": "data.io",
    "robust_normalize": "data.intensity",
    "lumbar_parameters": "anatomy",
    "quality_flags": "qc",
    "predict_files": "predict",
    "TrainConfig": "training",
    "train_pipeline": "training",
    "evaluate": "evaluation",
}

__all__ = [
    "LUMBAR_MORPHOMETRY",
    "LUMBAR_SAGITTAL",
    "LUMBOPELVIC_SAGITTAL",
    "WHOLE_SPINE_SAGITTAL",
    "CropRefiner",
    "ImageRecord",
    "LandmarkModel",
    "LandmarkSchema",
    "LandmarkTask",
    "Level",
    "PipelineOptions",
    "Radiograph",
    "SpineDataModule",
    "SpineLandmarkPipeline",
    "SpineResult",
    "TrainConfig",
    "VertebraDetector",
    "__version__",
    "evaluate",
    "lumbar_parameters",
    "predict_files",
    "quality_flags",
    "read_coco",
    "read_image",
    "robust_normalize",
    "train_pipeline",
    "write_coco",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule, or a public submodule itself (``sl.data``,
    ``sl.metrics``), on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif _is_submodule(name):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'spinelandmarks' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def _is_submodule(name: str) -> bool:
    return (name.isidentifier() and not name.startswith("_")
            and importlib.util.find_spec(f"{__name__}.{name}") is not None)


def __dir__() -> list[str]:
    subs = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted({*globals(), *_EXPORTS, *subs})


if TYPE_CHECKING:  # static type checkers and IDEs see the real objects
    from .anatomy.angles import lumbar_parameters
    from .data.annotations import ImageRecord, read_coco, write_coco
    from .data.datamodule import SpineDataModule
    from .data.intensity import robust_normalize
    from .data.io import Radiograph, read_image
    from .evaluation import evaluate
    from .inference import PipelineOptions, SpineLandmarkPipeline, SpineResult
    from .models import CropRefiner, LandmarkModel, LandmarkTask, VertebraDetector
    from .predict import predict_files
    from .qc import quality_flags
    from .schema import (
        LUMBAR_MORPHOMETRY,
        LUMBAR_SAGITTAL,
        LUMBOPELVIC_SAGITTAL,
        WHOLE_SPINE_SAGITTAL,
        LandmarkSchema,
        Level,
    )
    from .training import TrainConfig, train_pipeline
