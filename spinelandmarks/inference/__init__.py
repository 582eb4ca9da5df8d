"""Inference: the two-step pipeline, split into parts with declared contracts.

========================  ==============================================================
:mod:`.pipeline`          :class:`SpineLandmarkPipeline`, the class users call
:mod:`.options`           :class:`PipelineOptions`, frozen and validated, saved with it
:mod:`.protocols`         what the pipeline needs from its networks
:mod:`.refinement`        step 2: oriented crops, test-time views, re-cropping
:mod:`.results`           :class:`SpineResult` and how tensors become results
:mod:`.inputs`            what counts as a radiograph; checks and batching
:mod:`.persistence`       weights-only network files and pipeline directories
========================  ==============================================================
"""

from .inputs import MIN_SIDE, PipelineInput
from .options import PipelineOptions
from .persistence import load_module, save_module
from .pipeline import SpineLandmarkPipeline
from .protocols import LevelDetector, PointModel, StepTwoModel
from .refinement import RECROP_ANGLE_DEG, RECROP_SHIFT, TTA_VIEWS, StepTwo
from .results import SpineResult

__all__ = ["MIN_SIDE", "RECROP_ANGLE_DEG", "RECROP_SHIFT", "TTA_VIEWS", "LevelDetector",
           "PipelineInput", "PipelineOptions", "PointModel", "SpineLandmarkPipeline",
           "SpineResult", "StepTwo", "StepTwoModel", "load_module", "save_module"]
