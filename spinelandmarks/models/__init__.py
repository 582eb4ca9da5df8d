"""LightningModules of the two-step method and their building blocks."""

from .backbones import BACKBONES, Backbone, FPNDecoder
from .base import LandmarkTask
from .detector import VertebraDetector
from .landmark import CropRefiner, LandmarkModel

__all__ = ["BACKBONES", "Backbone", "CropRefiner", "FPNDecoder", "LandmarkModel",
           "LandmarkTask", "VertebraDetector"]
