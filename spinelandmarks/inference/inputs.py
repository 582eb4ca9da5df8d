"""What the pipeline accepts as a radiograph, and how inputs are checked and batched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
from torch import Tensor

from ..data.io import Radiograph, read_dicom, read_image

__all__ = ["MIN_SIDE", "PipelineInput", "describe", "equal_size_batches", "is_single",
           "to_radiograph"]

PipelineInput = str | os.PathLike[str] | np.ndarray | Tensor | pydicom.Dataset | Radiograph

#: Smallest image side the pipeline accepts, pixels (a radiograph is hundreds of pixels wide).
MIN_SIDE = 32


def is_single(x: Any) -> bool:
    """Whether ``x`` is one input (not an iterable of them)."""
    return isinstance(x, (str, os.PathLike, np.ndarray, Tensor, pydicom.Dataset, Radiograph))


def describe(x: Any) -> str:
    """How an input is named in results and messages."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, Radiograph):
        return x.source
    shape = getattr(x, "shape", None)
    return f"<{type(x).__name__} {'x'.join(map(str, shape))}>" if shape is not None else (
        f"<{type(x).__name__}>")


def to_radiograph(x: PipelineInput) -> Radiograph:
    """Read or wrap one input; arrays and tensors are (H, W) or (1, H, W) in [0, 1].

    Raises
    ------
    ValueError, OSError
        The input cannot be read, or is not a usable image (smaller than :data:`MIN_SIDE`
        pixels a side, NaN or infinite pixels); the message names it.
    """
    if isinstance(x, Radiograph):
        rad = x
    elif isinstance(x, pydicom.Dataset):
        rad = read_dicom(x)
    elif isinstance(x, (str, os.PathLike)):
        rad = read_image(x)
    else:
        arr = (x.detach().cpu().float().numpy() if isinstance(x, Tensor)
               else np.asarray(x, np.float32))
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise ValueError(f"{describe(x)}: expected an (H, W) or (1, H, W) image, got "
                             f"shape {arr.shape}")
        rad = Radiograph(pixels=arr.astype(np.float32), pixel_spacing=None,
                         source=f"<array {arr.shape[0]}x{arr.shape[1]}>", meta={})
    _check_pixels(rad)
    return rad


def _check_pixels(rad: Radiograph) -> None:
    h, w = rad.pixels.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{rad.source}: image of {w} x {h} pixels is too small "
                         f"(at least {MIN_SIDE} pixels per side)")
    if not np.isfinite(rad.pixels).all():
        raise ValueError(f"{rad.source}: image has NaN or infinite pixels")


def equal_size_batches(items: list[Radiograph], size: int) -> Iterator[list[Radiograph]]:
    """Consecutive runs of equal image size, at most ``size`` long."""
    group: list[Radiograph] = []
    for r in items:
        if group and (len(group) == size or group[0].pixels.shape != r.pixels.shape):
            yield group
            group = []
        group.append(r)
    if group:
        yield group
