"""The pipeline's inference options: one frozen, validated record, saved with the pipeline."""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..anatomy.measurements import GENANT_LOSS
from ..qc import QCThresholds

__all__ = ["REMOVED_OPTIONS", "PipelineOptions"]

#: Options of 0.1 removed in 0.2 -> the value they had by default. The project's own
#: measurements rejected them (CHANGELOG, 0.2.0): a saved pipeline that set one loads with a
#: warning and runs without it.
REMOVED_OPTIONS: dict[str, Any] = {"refine_iterations": 1, "middle_peak_radius": None,
                                   "level_rule": "landmarks"}


@dataclass(frozen=True)
class PipelineOptions:
    """How :class:`~spinelandmarks.inference.SpineLandmarkPipeline` runs its networks.

    Change one with :func:`dataclasses.replace` and assign the result to the pipeline's
    ``options`` (the pipeline checks it against its networks)::

        pipe.options = dataclasses.replace(pipe.options, tta=False)

    Attributes
    ----------
    crop_scale : float or None
        Step-2 crop side as a multiple of the step-1 body extent (> 0); ``None``: the scale
        the refiner was trained at (its ``crop_scale``; the pipeline resolves it when built).
    min_level_score : float
        Detector score in [0, 1] that confirms a level on its own.
    min_adjacent_score : float
        Lower detector score in [0, ``min_level_score``] that confirms a level next to a
        confirmed one; levels between two confirmed levels are always kept
        (:func:`~spinelandmarks.levels.confirm_levels`). Other levels are missing.
    detector_presence : bool
        Let the detector decide which levels are present (the two scores above). ``False``:
        every level of the schema is predicted, as without a detector, and the detector's
        scores and boxes only feed the QC flags. ``calibrate_qc`` chooses this and the two
        scores on the validation images (:func:`~spinelandmarks.levels.fit_presence`).
    facing_check : bool
        Give all levels the facing of most of them, and the spine a standing patient's
        (:func:`~spinelandmarks.levels.consistent_facing`), before and after step 2.
    column_repair : bool
        After step 2, move a level lying off the column to where the column below continues,
        refined there (:func:`~spinelandmarks.levels.repair_column`); such levels are listed
        in ``relabelled_levels``.
    recrop : bool
        Orient a level's crop across its column where its own corners depart from that
        direction by more than :data:`~spinelandmarks.geometry.MAX_AXIS_DEPARTURE_DEG`, and
        refine once more, in a crop built from its refined corners, a level so turned or whose
        refined corners moved off its crop (:data:`~spinelandmarks.inference.RECROP_SHIFT`,
        :data:`~spinelandmarks.inference.RECROP_ANGLE_DEG`).
    tta : bool
        Step-2 test-time augmentation over
        :data:`~spinelandmarks.inference.TTA_VIEWS` (four times the refiner's work; cost and
        gain in BENCHMARKS.md).
    masks : bool or None
        Paste the refiner's body masks back (needs a refiner trained with masks); ``None``:
        whenever the refiner has a mask head (the pipeline resolves it when built).
    fracture_screen_loss : float
        Predicted height loss (a fraction; finite) from which a body is listed in
        ``suspected_fractures`` (Genant grade 2 by default;
        :meth:`~spinelandmarks.inference.SpineLandmarkPipeline.calibrate_qc` fits it).
    qc_thresholds : QCThresholds
        Thresholds of the QC flags (fitted by ``calibrate_qc``).
    """

    crop_scale: float | None = None
    min_level_score: float = 0.3
    min_adjacent_score: float = 0.1
    detector_presence: bool = True
    facing_check: bool = True
    column_repair: bool = True
    recrop: bool = True
    tta: bool = True
    masks: bool | None = None
    fracture_screen_loss: float = GENANT_LOSS[1]
    qc_thresholds: QCThresholds = field(default_factory=QCThresholds)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "min_level_score", "min_adjacent_score",
                     "fracture_screen_loss"):
            value = getattr(self, name)
            if value is None and name == "crop_scale":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # numpy scalars -> JSON-safe floats
        for name in ("detector_presence", "facing_check", "column_repair", "recrop", "tta"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.masks is not None:
            object.__setattr__(self, "masks", bool(self.masks))
        if self.crop_scale is not None and not self.crop_scale > 0:
            raise ValueError(f"crop_scale must be > 0, got {self.crop_scale}")
        if not 0.0 <= self.min_level_score <= 1.0:
            raise ValueError(f"min_level_score must be in [0, 1], got {self.min_level_score}")
        if not 0.0 <= self.min_adjacent_score <= self.min_level_score:
            raise ValueError(f"min_adjacent_score must be in [0, min_level_score="
                             f"{self.min_level_score}], got {self.min_adjacent_score}")
        if not isinstance(self.qc_thresholds, QCThresholds):
            raise TypeError(f"qc_thresholds must be a QCThresholds, got "
                            f"{type(self.qc_thresholds).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (``pipeline.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str = "pipeline.json"
                  ) -> PipelineOptions:
        """Options from ``pipeline.json`` (any version): unknown keys are ignored, missing
        ones take their defaults, and a removed option that was set warns (it is not used).

        Raises
        ------
        ValueError
            A saved value is out of range; the message names ``source``.
        """
        for name, default in REMOVED_OPTIONS.items():
            if saved.get(name, default) != default:
                warnings.warn(f"{source}: option {name}={saved[name]!r} was removed in "
                              "spinelandmarks 0.2 (CHANGELOG) and is ignored; the pipeline "
                              "runs with the default behaviour", UserWarning, stacklevel=3)
        known = {f.name for f in dataclasses.fields(cls)} - {"qc_thresholds"}
        values = {k: v for k, v in saved.items() if k in known}
        try:
            return cls(**values, qc_thresholds=_thresholds(saved.get("qc_thresholds")))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc


def _thresholds(saved: dict[str, Any] | None) -> QCThresholds:
    """QC thresholds from ``pipeline.json`` (defaults for pipelines saved without them)."""
    if not saved:
        return QCThresholds()
    known = {f.name for f in dataclasses.fields(QCThresholds)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in saved.items() if k in known}
    return QCThresholds(**values)
