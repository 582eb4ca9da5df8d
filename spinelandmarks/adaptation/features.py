"""The step-1 backbone's pooled features of radiographs: what the shift model summarizes and
what ``select`` spreads its choice over."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.intensity import robust_normalize
from ..inference import PipelineInput, SpineLandmarkPipeline
from ..inference.inputs import to_radiograph

__all__ = ["image_descriptors", "pooled_features"]


@torch.no_grad()
def image_descriptors(pipeline: SpineLandmarkPipeline, inputs: Sequence[PipelineInput],
                      batch_size: int = 8) -> dict[str, Tensor]:
    """The descriptors of :meth:`~spinelandmarks.inference.SpineLandmarkPipeline.descriptors`
    for every input, in order.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
    inputs : sequence of PipelineInput
        Paths, arrays, tensors, DICOM datasets or radiographs (as for ``predict``).
    batch_size : int
        Radiographs per forward pass (consecutive inputs of equal size are batched).

    Returns
    -------
    dict of str to Tensor
        ``pooled`` (N, C) and ``intensity`` (N, K), float32 on the CPU.

    Raises
    ------
    ValueError, OSError
        An input cannot be read or used (the message names it).
    """
    dev = next(pipeline.parameters()).device
    parts: dict[str, list[Tensor]] = {"pooled": [], "intensity": []}
    batch: list[np.ndarray] = []

    def flush() -> None:
        images = torch.stack([torch.from_numpy(x) for x in batch]).unsqueeze(1).to(dev)
        for key, value in pipeline.descriptors(images.float()).items():
            parts[key].append(value.float().cpu())
        batch.clear()

    for x in inputs:
        pixels = robust_normalize(to_radiograph(x).pixels)
        if batch and (len(batch) == batch_size or batch[0].shape != pixels.shape):
            flush()
        batch.append(pixels)
    if batch:
        flush()
    if not parts["pooled"]:
        raise ValueError("no input images")
    return {k: torch.cat(v) for k, v in parts.items()}


def pooled_features(pipeline: SpineLandmarkPipeline, inputs: Sequence[PipelineInput],
                    batch_size: int = 8) -> Tensor:
    """Global-average-pooled step-1 backbone features of each image at the pipeline's input
    size.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
    inputs : sequence of PipelineInput
    batch_size : int

    Returns
    -------
    Tensor
        (N, C) float32 on the CPU: the last (stride-32) feature map of the landmark model's
        backbone on the letterboxed, windowed image, averaged over its positions.
    """
    return image_descriptors(pipeline, inputs, batch_size)["pooled"]
