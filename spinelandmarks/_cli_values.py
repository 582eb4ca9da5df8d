"""Command-line values checked where they are read: every option is validated by the parser,
before anything is written, and a bad value is one line with a hint (not a usage block).

Kept free of torch so that ``--help`` and a refused value stay instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

__all__ = ["BACKBONE_NAMES", "DETECTOR_BACKBONE_NAMES", "MIN_CROP_SIZE", "MIN_IMAGE_SIZE",
           "HelpFormatter", "Parser", "float_above", "float_at_least", "int_at_least",
           "schema_value", "size_at_least"]

#: Backbones of the landmark model and refiner (``models.backbones.BACKBONES``, kept equal by a
#: test: importing that module would import torch).
BACKBONE_NAMES = ("convnext_tiny", "efficientnet_b0", "efficientnet_b2", "mobilenet_v3_large",
                  "resnet18", "resnet34", "resnet50", "resnet_lite")
#: Detector backbones: torchvision's ResNet-FPN ones (``models.detector.DETECTOR_BACKBONES``)
#: and every landmark backbone.
DETECTOR_BACKBONE_NAMES = tuple(sorted({*BACKBONE_NAMES, "resnet101", "resnext50_32x4d",
                                        "wide_resnet50_2"}))
#: Smallest model input side: below it the stride-32 features of the backbones are 1 pixel
#: and the detector's anchors do not fit.
MIN_IMAGE_SIZE = 64
#: Smallest refiner crop side (stride-32 features of at least 1 x 1).
MIN_CROP_SIZE = 32


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a hint, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message}\n"
                         f"hint: `{self.prog} --help` lists the options, their defaults and "
                         "choices\n")
        sys.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default unless its help already says it (or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None
                or default is False or default is argparse.SUPPRESS or default == []):
            return text  # (identity: a default of 0 is shown, only False is not)
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def int_at_least(low: int) -> Callable[[str], int]:
    """Parser type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def float_above(low: float) -> Callable[[str], float]:
    """Parser type: a finite number > ``low``."""
    def parse(text: str) -> float:
        value = _float(text)
        if not value > low:
            raise argparse.ArgumentTypeError(f"must be greater than {low:g}, got {text}")
        return value
    return parse


def float_at_least(low: float) -> Callable[[str], float]:
    """Parser type: a finite number >= ``low``."""
    def parse(text: str) -> float:
        value = _float(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value
    return parse


def size_at_least(low: int) -> Callable[[str], tuple[int, int]]:
    """Parser type: ``512x384`` or ``512`` (square) -> (H, W), each side >= ``low``."""
    def parse(text: str) -> tuple[int, int]:
        parts = text.lower().split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"size must look like 512x384, got {text!r}") from None
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2:
            raise argparse.ArgumentTypeError(f"size must look like 512x384, got {text!r}")
        if min(vals) < low:
            raise argparse.ArgumentTypeError(
                f"{text}: each side must be at least {low} pixels (the networks' stride-32 "
                "features need it)")
        return vals[0], vals[1]
    return parse


def schema_value(text: str) -> str:
    """Parser type of ``--schema``: a registered name, or a schema file that exists."""
    looks_like_path = text.lower().endswith(".json") or "/" in text or "\\" in text
    if looks_like_path and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such schema file")
    return text
