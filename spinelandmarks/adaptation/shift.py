"""The shift alarm: is an image, and is an archive, unlike the images a pipeline was trained on?

``train`` fits a :class:`~spinelandmarks.adaptation.shift_model.ShiftModel` on the training
images (threshold on the validation images) and saves it with the pipeline;
:func:`fit_shift_model` adds one to a pipeline trained before. ``predict`` then gives every
image a ``shift_score`` and ``shifted``, and writes ``summary.json`` (:class:`RunSummary`)
whose ``shift_alarm`` follows the rule of :func:`archive_alarm`. Advice only: nothing is
refused.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..inference import PipelineInput, SpineLandmarkPipeline, SpineResult
from .features import image_descriptors
from .shift_model import ShiftModel

__all__ = ["ALARM_FRACTION", "MAX_FIT_IMAGES", "SUMMARY", "RunSummary", "ShiftModel",
           "advice", "archive_alarm", "fit_shift_model", "summarize", "write_summary"]

#: The archive alarm fires when at least this fraction of its images are ``shifted``. The
#: per-image threshold lets through 1 % or fewer of the validation images (its fitting rule),
#: so this is at least 20 times the false-alarm rate on images like the training images.
ALARM_FRACTION = 0.2
#: Training images a shift model is fitted on at most (a random subset of larger sets).
MAX_FIT_IMAGES = 500
#: The run summary ``predict`` writes into its output folder.
SUMMARY = "summary.json"


def fit_shift_model(pipeline: SpineLandmarkPipeline, train_inputs: Sequence[PipelineInput],
                    val_inputs: Sequence[PipelineInput], *, batch_size: int = 8,
                    max_train: int = MAX_FIT_IMAGES, seed: int = 0) -> ShiftModel:
    """Fit a shift model for ``pipeline`` and set it as ``pipeline.shift_model``.

    Save the pipeline afterwards (``pipeline.save(directory)``) to keep it; ``train`` does
    this itself.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
    train_inputs : sequence of PipelineInput
        Images the networks were trained on (at most ``max_train`` are used, drawn at random
        with ``seed``).
    val_inputs : sequence of PipelineInput
        Images of the same source the networks were not trained on: the unit of the score
        and its threshold are fitted on them.
    batch_size, max_train, seed
        See above.

    Returns
    -------
    ShiftModel

    Raises
    ------
    ValueError
        Fewer than 2 training or 1 validation images, or an unreadable image (named).
    """
    train = list(train_inputs)
    if len(train) > max_train:
        train = random.Random(seed).sample(train, max_train)
    tr = image_descriptors(pipeline, train, batch_size) if train else None
    val = list(val_inputs)
    va = image_descriptors(pipeline, val, batch_size) if val else None
    if tr is None or va is None:
        raise ValueError(f"a shift model needs training and validation images, got "
                         f"{len(train)} and {len(val)}")
    model = ShiftModel.fit(tr["pooled"], tr["intensity"], va["pooled"], va["intensity"])
    pipeline.shift_model = model
    return model


def archive_alarm(shifted: int, images: int) -> bool:
    """The run-level rule: at least :data:`ALARM_FRACTION` of the images are shifted."""
    return images > 0 and shifted >= ALARM_FRACTION * images


@dataclass(frozen=True)
class RunSummary:
    """The counts of a ``predict`` run (``PRED/summary.json``).

    Attributes
    ----------
    images : int
        Images predicted.
    needs_review : int
        Of those, with a QC flag raised.
    shifted : int or None
        Of those, with ``shift_score`` above the pipeline's threshold; None when the
        pipeline has no shift model.
    shift_alarm : bool
        :func:`archive_alarm`: the archive as a whole does not look like the training images
        (False without a shift model).
    shift_threshold : float or None
        The pipeline's per-image threshold.
    """

    images: int
    needs_review: int
    shifted: int | None
    shift_alarm: bool
    shift_threshold: float | None

    def to_json(self) -> dict[str, Any]:
        """The summary as written to ``summary.json`` (with the fraction and the rule)."""
        frac = (self.shifted / self.images if self.shifted is not None and self.images
                else None)
        return {**asdict(self), "shifted_fraction": frac,
                "alarm_rule": f"shift_alarm when at least {ALARM_FRACTION:.0%} of the images "
                              "are shifted (shift_score above shift_threshold)"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunSummary:
        """Inverse of :meth:`to_json`."""
        return cls(int(d["images"]), int(d["needs_review"]),
                   None if d.get("shifted") is None else int(d["shifted"]),
                   bool(d.get("shift_alarm", False)),
                   None if d.get("shift_threshold") is None else float(d["shift_threshold"]))


def summarize(results: Iterable[SpineResult], shift_model: ShiftModel | None) -> RunSummary:
    """Count the results (streamed: one in memory at a time)."""
    images = review = shifted = 0
    for res in results:
        images += 1
        review += bool(res.needs_review)
        shifted += bool(res.shifted)
    if shift_model is None:
        return RunSummary(images, review, None, False, None)
    return RunSummary(images, review, shifted, archive_alarm(shifted, images),
                      shift_model.threshold)


def write_summary(summary: RunSummary, path: str | os.PathLike[str]) -> Path:
    """Write ``summary.json``, atomically."""
    atomic_write_text(path, json.dumps(summary.to_json(), indent=2) + "\n")
    return Path(path)


def advice(summary: RunSummary, run: str) -> list[str]:
    """What a run's last lines say about the shift, in words, with the remedy.

    Parameters
    ----------
    summary : RunSummary
    run : str
        The run or pipeline directory as the user named it (quoted in the commands).
    """
    if summary.shifted is None:
        return [f"no shift score: the pipeline in {run} has no shift model (trained before "
                "it was added); fit one with spinelandmarks.adaptation.fit_shift_model"]
    n, k = summary.images, summary.shifted
    if not summary.shift_alarm:
        return [f"shift: {k} of {n} images look unlike the training images (shifted in "
                "predictions.json); the archive as a whole does not (no shift alarm)"]
    return [f"SHIFT ALARM: {k} of {n} images ({k / n:.0%}) do not look like the images this "
            "pipeline was trained on (shift_score above "
            f"{summary.shift_threshold:.2f}); expect failures the QC flags may not all catch.",
            f"Remedy: choose images to annotate with `spinelandmarks select {run} IMAGES "
            "--n 20 --out to_annotate.txt --export cvat --export-out TO_CORRECT`, correct "
            "and import them, then fine-tune with `spinelandmarks train NEW --out RUN2 "
            f"--init-from {run}` (docs/new-source.md)."]
