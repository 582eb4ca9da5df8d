"""spinelandmarks: vertebral corners on sagittal spine radiographs, and the spine measured from them.

Submodules
----------
schema      landmark schemas (levels and their ordered points)
dsnt        differentiable spatial to numerical transform, its losses and head
geometry    coordinate conventions, oriented crops, letterbox, converters
metrics     clinical angles, normalized localization errors, torchmetrics metrics
data        radiograph I/O, annotation formats, synthetic phantoms, DataModule
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from .schema import LUMBAR_SAGITTAL, LandmarkSchema, Level

__all__ = ["LUMBAR_SAGITTAL", "LandmarkSchema", "Level", "__version__"]
