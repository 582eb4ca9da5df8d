"""The two-step inference pipeline: radiograph -> labelled, refined corners -> measurements.

Step 1: the whole radiograph is letterboxed to the landmark model's input and every point of
the schema is predicted (and, with a detector, each level is confirmed or reported missing).
Step 2: each vertebra is cut from the *full-resolution* radiograph in an oriented crop built
from its step-1 corners, the refiner predicts its points in the crop, and the crop matrix maps
them back. The clinical parameters are computed from the step-2 points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from torch import Tensor, nn

from ._atomic import atomic_write, atomic_write_text
from ._version import __version__
from .adaptation.shift_model import ShiftModel, intensity_statistics
from .data.annotations import ImageRecord
from .data.intensity import robust_normalize
from .data.io import Radiograph, read_dicom, read_image
from .data.masks import rle_from_mask
from .defaults import CROP_SCALE, CROP_SIZE
from .geometry import (
    MAX_AXIS_DEPARTURE_DEG,
    axis_departures,
    column_axis_angles,
    crop_images,
    crop_matrix,
    endplate_angles,
    hflip_matrix,
    letterbox,
    transform_points,
    uncrop,
    vertebra_crop_params,
)
from .levels import anchor_to_sacrum, consistent_facing, off_column, reconcile_chain
from .measurements import GENANT_LOSS, fit_fracture_screen, height_loss
from .metrics import level_centres, level_identification, schema_parameters
from .models.base import LandmarkTask
from .models.classes import check_kind, class_path, import_class, warn_if_unimportable
from .models.detector import VertebraDetector, confirm_levels
from .models.landmark import CropRefiner, LandmarkModel
from .qc import (
    LEVEL_FLAGS,
    QCThresholds,
    calibrate_thresholds,
    disagreeing_parameters,
    implausible_angles,
    qc_statistics,
    quality_flags,
)
from .schema import LandmarkSchema

__all__ = ["RECROP_ANGLE_DEG", "RECROP_SHIFT", "TTA_VIEWS", "PipelineInput",
           "SpineLandmarkPipeline", "SpineResult", "load_module", "save_module"]

PipelineInput = str | os.PathLike[str] | np.ndarray | Tensor | pydicom.Dataset | Radiograph

#: ``recrop``: a level whose refined centre lies further than this many body sizes (its
#: larger extent) from the centre of the corners its crop was built from is refined again.
#: Chosen on the cross-style benchmark's validation images (docs/training.md).
RECROP_SHIFT = 0.25
#: ``recrop``: the same for its endplate direction, degrees.
RECROP_ANGLE_DEG = 10.0

#: Step-2 test-time augmentation views, ``(crop side factor, mirrored left-right)``: the
#: refiner is trained on both patient facings and on jittered crop sizes, so each view is an
#: input it knows; the scales stay inside the training jitter.
TTA_VIEWS: tuple[tuple[float, bool], ...] = (
    (1.0, False), (1.0, True), (0.94, False), (0.94, True), (1.06, False), (1.06, True))

_PRECISIONS = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16,
               "16-mixed": torch.float16}


@dataclass
class SpineResult:
    """What the pipeline found on one radiograph (original-image pixels throughout).

    Attributes
    ----------
    source : str
        File name or a description of the input.
    image_size : (H, W)
        Size of the radiograph in pixels.
    pixel_spacing : (row_mm, col_mm) or None
        From the DICOM header, when known.
    points : np.ndarray
        (P, 2) step-2 (refined) points (x, y); NaN for levels reported missing.
    points_step1 : np.ndarray
        (P, 2) step-1 points (x, y); NaN for missing levels.
    point_scores : np.ndarray
        (P,) confidence in (0, 1]: ``1 / (1 + spread)`` with the heatmap spread in pixels of
        the network that produced the point; NaN for missing levels.
    level_scores : np.ndarray
        (num_levels,) detector scores (NaN without a detector).
    missing_levels : list of str
        Levels the detector did not find.
    parameters : dict of str to float
        Clinical parameters from the step-2 points, degrees (NaN where not measurable).
    parameters_step1 : dict of str to float
        The same from the step-1 points.
    qc : dict of str to list of str
        Quality-control flags raised (:func:`~spinelandmarks.qc.quality_flags`): per-level
        flags map to the levels concerned, ``angle_range`` to the parameters out of range.
    needs_review : bool
        Any flag raised: a reader should check this radiograph before its figures are used.
    relabelled_levels : list of str
        Levels moved onto another body: step-1 points moved into the detector's box of their
        name (``level_rule="detector"``), or step-2 points moved to where the column
        continues (``column_repair``); see :mod:`spinelandmarks.levels`.
    suspected_fractures : list of str
        Body levels whose predicted height loss reaches the pipeline's
        ``fracture_screen_loss``: suspected fractures of Genant grade 2 or worse, for a
        reader to confirm (the grade itself is in the measurements).
    level_boxes : np.ndarray
        (num_levels, 4) detector boxes ``(x1, y1, x2, y2)`` in image pixels; NaN without a
        detector or where it found no box.
    masks : dict of str to dict
        Level -> body mask as a COCO RLE (``data.masks.mask_from_segmentation`` decodes it),
        for the levels found, when the pipeline segments (``masks``).
    error : str or None
        Why the input could not be predicted (one input of a list); None when it was.
    shift_score : float or None
        How unlike the pipeline's training images the radiograph is (about 1 for an image
        like its validation images; ``docs/conventions.md``, "Shift score"); None when the
        pipeline has no shift model.
    shifted : bool or None
        ``shift_score`` above the pipeline's fitted threshold (advice, not a QC flag: it does
        not set ``needs_review``); None without a shift model.
    """

    source: str
    image_size: tuple[int, int]
    pixel_spacing: tuple[float, float] | None
    points: np.ndarray
    points_step1: np.ndarray
    point_scores: np.ndarray
    level_scores: np.ndarray
    missing_levels: list[str] = field(default_factory=list)
    parameters: dict[str, float] = field(default_factory=dict)
    parameters_step1: dict[str, float] = field(default_factory=dict)
    qc: dict[str, list[str]] = field(default_factory=dict)
    needs_review: bool = False
    relabelled_levels: list[str] = field(default_factory=list)
    suspected_fractures: list[str] = field(default_factory=list)
    level_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    shift_score: float | None = None
    shifted: bool | None = None

    @classmethod
    def failed(cls, source: str, schema: LandmarkSchema, error: str) -> SpineResult:
        """The result of an input that could not be predicted: no points, ``error`` set."""
        nan = np.full((schema.num_points, 2), np.nan)
        return cls(source=source, image_size=(0, 0), pixel_spacing=None, points=nan,
                   points_step1=nan.copy(), point_scores=np.full(schema.num_points, np.nan),
                   level_scores=np.full(schema.num_levels, np.nan),
                   missing_levels=list(schema.level_names), needs_review=True,
                   level_boxes=np.full((schema.num_levels, 4), np.nan), error=error)

    def to_record(self, schema: LandmarkSchema, step: int = 2, image_id: int = 0) -> ImageRecord:
        """The result as an annotation record (predictions use the annotation layout)."""
        pts = self.points if step == 2 else self.points_step1
        vis = np.where(np.isfinite(pts).all(-1), 2, 0).astype(np.int8)
        return ImageRecord(file_name=self.source, width=self.image_size[1],
                           height=self.image_size[0], points=pts.astype(np.float64),
                           visibility=vis, image_id=image_id, pixel_spacing=self.pixel_spacing,
                           scores=self.point_scores.astype(np.float64),
                           level_scores=self.level_scores.astype(np.float64),
                           meta={"parameters": {  # JSON has no NaN: not measurable -> null
                               k: (v if np.isfinite(v) else None) for k, v in
                               (self.parameters if step == 2 else self.parameters_step1).items()},
                               "needs_review": bool(self.needs_review),
                               "relabelled_levels": list(self.relabelled_levels),
                               "suspected_fractures": list(self.suspected_fractures),
                               "qc": {k: list(v) for k, v in self.qc.items()},
                               "shift_score": self.shift_score, "shifted": self.shifted},
                           masks=dict(self.masks) if step == 2 else {})


def save_module(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Save a task module as ``{"class", "class_path", "hyper_parameters", "state_dict"}``,
    atomically.

    The file holds only tensors and plain containers, so it loads with ``weights_only=True``;
    ``class_path`` (``module:qualname``) lets :func:`load_module` rebuild a subclass. A class
    that another process could not import (defined in a script run directly, or inside a
    function) is saved with a warning.
    """
    warn_if_unimportable(type(module), str(path))
    hparams = dict(getattr(module, "hparams", {}))
    payload = {"class": type(module).__name__, "class_path": class_path(type(module)),
               "hyper_parameters": hparams, "state_dict": module.state_dict(),
               "version": __version__}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _module_classes() -> dict[str, type[LandmarkTask]]:
    """The library's classes by bare name: files saved before class paths were recorded."""
    return {"LandmarkModel": LandmarkModel, "CropRefiner": CropRefiner,
            "VertebraDetector": VertebraDetector}


def load_module(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                base: type[LandmarkTask] = LandmarkTask, exclude: type | None = None
                ) -> LandmarkTask:
    """Load a file written by :func:`save_module` or a Lightning checkpoint of a task module.

    The class is imported from the ``class_path`` the file records (files of version 0.1
    name one of the library's classes only); the weights load with ``weights_only=True``.

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device
    base : type
        The class the saved one must be or derive from (default: any task module).
    exclude : type, optional
        A subclass of ``base`` refused all the same (``CropRefiner`` where a step-1
        ``LandmarkModel`` is needed).

    Returns
    -------
    LandmarkTask
        The module, in eval mode.

    Raises
    ------
    ValueError
        The file cannot be read, its class cannot be imported (the message names the module
        to install or put on ``PYTHONPATH``) or is not a subclass of ``base``.
    """
    p = Path(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: cannot load model file ({exc})") from exc
    # both also in Lightning checkpoints (LandmarkTask.on_save_checkpoint)
    saved_path, name = payload.get("class_path"), payload.get("class")
    if isinstance(saved_path, str):
        cls = import_class(saved_path, base, what=str(p), exclude=exclude)
    else:
        legacy = _module_classes()
        if name not in legacy:
            raise ValueError(f"{p}: unknown module class {name!r} (a file saved without its "
                             "class path names one of " + ", ".join(sorted(legacy)) + ")")
        cls = legacy[name]
        check_kind(cls, base, what=str(p), exclude=exclude)
    module = cls(**payload["hyper_parameters"])
    module.load_state_dict(payload["state_dict"])
    return module.eval()


class SpineLandmarkPipeline(nn.Module):
    """Chains detector (optional), landmark model and refiner (optional) for inference.

    Parameters
    ----------
    landmark_model : LandmarkModel
        Step-1 network.
    refiner : CropRefiner, optional
        Step-2 network; without it the step-2 points equal the step-1 points.
    detector : VertebraDetector, optional
        Confirms each level; levels it does not find are reported missing (NaN points).
    crop_scale : float
        Crop side as a multiple of the step-1 body extent (the refiner's training value).
    refine_iterations : int
        Times step 2 is applied, each crop built from the previous estimate.
    min_level_score : float
        Detector score that confirms a level on its own.
    min_adjacent_score : float
        Lower detector score that confirms a level next to a confirmed one; levels between two
        confirmed levels are always kept (the spine is contiguous, see
        :func:`~spinelandmarks.models.detector.confirm_levels`). Other levels are missing.
    level_rule : {"landmarks", "detector"}
        Who names the levels when the detector and the step-1 chain disagree.
        ``"landmarks"`` (default): the step-1 chain; the detector confirms presence, and a
        level more than half a box height from the detector's box of its name is reported
        (QC flag ``detector_disagrees``). Chosen by measurement on the cross-style
        benchmark's validation images (figures in ``docs/training.md``; BENCHMARKS.md).
        ``"detector"``: the detector's boxes,
        renamed by counting bodies up from the sacrum
        (:func:`~spinelandmarks.levels.anchor_to_sacrum`), with every step-1 level moved into
        its box (:func:`~spinelandmarks.levels.reconcile_chain`) before step 2.
    facing_check : bool
        Give all levels the facing of most of them, and the spine a standing patient's
        (:func:`~spinelandmarks.levels.consistent_facing`), before and after step 2 (default).
    column_repair : bool
        After step 2, walk up the column from the sacrum and move a level lying off it (more
        than half a body height from where both the level below and the level above place
        it) to where the column below continues, refined there (rule 4 of
        :mod:`spinelandmarks.levels`; default). Such levels are listed in
        ``relabelled_levels``.
    recrop : bool
        Re-crop the levels whose step-1 crop was wrong (default). A level's crop is oriented
        across its column (perpendicular to the line through the neighbouring levels'
        centres, :func:`~spinelandmarks.geometry.column_axis_angles`) where its own corners
        depart from that direction by more than
        :data:`~spinelandmarks.geometry.MAX_AXIS_DEPARTURE_DEG` (collapsed step-1 corners
        otherwise give a crop turned on its side, and the refiner draws the body rotated by
        90 degrees); and a level so turned, or whose refined corners moved from its crop
        (centre by more than :data:`RECROP_SHIFT` body sizes, direction by more than
        :data:`RECROP_ANGLE_DEG`), is refined once more in a crop built from its refined
        corners. On the images a model was trained on nothing moves that far, so nothing
        changes there (``docs/training.md`` has the figures).
    fracture_screen_loss : float
        Predicted height loss from which a body is listed in ``suspected_fractures``
        (default 0.25, Genant grade 2). :meth:`calibrate_qc` fits it to the pipeline on
        annotated images (:func:`~spinelandmarks.measurements.fit_fracture_screen`): a
        lower line that catches the fractures the refiner measures just short of grade 2, at
        a specificity of :data:`~spinelandmarks.measurements.SCREEN_SPECIFICITY`.
    middle_peak_radius : float, optional
        Read the refiner's endplate mid-points (``middle_superior``, ``middle_inferior``, in
        schemas that have them) by a local soft-argmax: the expectation of the heatmap
        within this many heatmap cells of its peak (:func:`~spinelandmarks.dsnt.local_dsnt`).
        The map of a concave endplate's middle spreads along the bowl, whose ends rise, and
        its plain expectation reads the middle shallow. ``None`` (default): the whole map's
        expectation, as for every other point. The corners are decoded as before, but a
        level's centre averages all its points, so ``recrop`` and ``column_repair`` may crop
        a level a little differently. Needs a refiner with endplate middles.
    tta : bool
        Test-time augmentation of step 2: each vertebra is refined in the crops of
        :data:`TTA_VIEWS` (three scales, each also mirrored) and the points mapped back from
        all of them are averaged (default). Six times the refiner's work, for lower median
        errors (cost and gain measured in BENCHMARKS.md).
    channels_last : bool
        NHWC memory format for the landmark networks (faster convolutions on recent GPUs).
    compile : bool
        ``torch.compile`` the landmark networks (first call slow; GPU throughput).
    shift_model : ShiftModel, optional
        Summary of the training images: each result then has a ``shift_score`` and
        ``shifted`` (saved with the pipeline as ``shift.pt``).

    Examples
    --------
    >>> pipe = SpineLandmarkPipeline.load("runs/demo/pipeline")        # doctest: +SKIP
    >>> result = pipe.predict(["lateral.dcm"])[0]                       # doctest: +SKIP
    >>> result.parameters["l1_s1_lordosis"]                             # doctest: +SKIP
    """

    def __init__(self, landmark_model: LandmarkModel, refiner: CropRefiner | None = None,
                 detector: nn.Module | None = None, crop_scale: float = CROP_SCALE,
                 refine_iterations: int = 1, min_level_score: float = 0.3,
                 min_adjacent_score: float = 0.1, level_rule: str = "landmarks",
                 facing_check: bool = True, tta: bool = True,
                 channels_last: bool = False, compile: bool = False,
                 qc_thresholds: QCThresholds | None = None, masks: bool | None = None,
                 column_repair: bool = True, recrop: bool = True,
                 fracture_screen_loss: float = GENANT_LOSS[1],
                 middle_peak_radius: float | None = None,
                 shift_model: ShiftModel | None = None) -> None:
        super().__init__()
        self.landmark_model = landmark_model.eval()
        self.refiner = refiner.eval() if refiner is not None else None
        self.detector = detector.eval() if detector is not None else None
        self.schema: LandmarkSchema = landmark_model.schema
        if refiner is not None and refiner.schema != self.schema:
            raise ValueError("landmark model and refiner use different schemas")
        single = [lv.name for lv in self.schema.levels
                  if lv.name in self.schema.refined_levels and len(lv.points) < 2]
        if refiner is not None and single:
            raise ValueError(f"schema {self.schema.name!r}: levels {single} have one point, "
                             "from which no crop can be oriented or sized; use the landmark "
                             "model alone (refiner=None) for such a schema")
        self.crop_scale = float(crop_scale)
        self.refine_iterations = int(refine_iterations)
        self.min_level_score = float(min_level_score)
        self.min_adjacent_score = float(min_adjacent_score)
        if level_rule not in ("landmarks", "detector"):
            raise ValueError(f"level_rule must be 'landmarks' or 'detector', got {level_rule!r}")
        self.level_rule = level_rule
        self.facing_check = bool(facing_check)
        self.column_repair = bool(column_repair)
        self.recrop = bool(recrop)
        self.fracture_screen_loss = float(fracture_screen_loss)
        names = refiner.crop_point_names if refiner is not None else ()
        #: Refiner outputs that ``middle_peak_radius`` decodes near their peak.
        self._middle_outputs = [names.index(n) for n in ("middle_superior", "middle_inferior")
                                if n in names]
        self.middle_peak_radius = middle_peak_radius
        self.tta = bool(tta)
        can_mask = refiner is not None and refiner.has_masks
        if masks and not can_mask:
            raise ValueError("masks=True needs a refiner trained with masks (CropRefiner("
                             "masks=True), `spinelandmarks train --masks`)")
        self.masks = can_mask if masks is None else bool(masks)
        self.qc_thresholds = qc_thresholds or QCThresholds()
        #: Summary of the training images that ``shift_score`` is measured against (fitted by
        #: ``train``, or :func:`~spinelandmarks.adaptation.fit_shift_model`); None: no score.
        self.shift_model = shift_model
        self.channels_last = bool(channels_last)
        for net in (self.landmark_model, self.refiner):
            if net is not None and channels_last:
                net.to(memory_format=torch.channels_last)
            if net is not None and compile:
                net.compile_network()
        lm_size = landmark_model.hparams["input_size"]
        self.input_size: tuple[int, int] = (int(lm_size[0]), int(lm_size[1]))
        crop = refiner.hparams["input_size"] if refiner is not None else CROP_SIZE
        self.crop_size: tuple[int, int] = (int(crop[0]), int(crop[1]))
        # Which refiner output goes to which schema point: level l's point j is output j.
        self._level_table: Tensor
        self._point_level: Tensor
        self.register_buffer("_level_table", self.schema.level_point_table(), persistent=False)
        self.register_buffer("_point_level", self.schema.point_level, persistent=False)
        #: Indices of the levels step 2 refines (not the femoral heads).
        self._refined_index = [i for i, lv in enumerate(self.schema.level_names)
                               if lv in self.schema.refined_levels]

    @property
    def middle_peak_radius(self) -> float | None:
        """Radius (refiner heatmap cells) of the local soft-argmax of the endplate mid-points,
        or ``None`` for the whole map's expectation; checked when set."""
        return self._middle_peak_radius

    @middle_peak_radius.setter
    def middle_peak_radius(self, radius: float | None) -> None:
        if radius is not None:
            if not radius > 0:
                raise ValueError(f"middle_peak_radius must be > 0 heatmap cells or None, "
                                 f"got {radius}")
            if not self._middle_outputs:
                raise ValueError("middle_peak_radius needs a refiner whose points include "
                                 "middle_superior / middle_inferior (e.g. schema "
                                 "lumbar_morphometry); this pipeline's have none")
        self._middle_peak_radius = None if radius is None else float(radius)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``pipeline.json`` and one weights-only file per network into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        models: dict[str, str] = {}
        for key, module in (("landmark", self.landmark_model), ("refiner", self.refiner),
                            ("detector", self.detector)):
            if module is not None:
                save_module(module, d / f"{key}.pt")
                models[key] = f"{key}.pt"
        config = {"version": __version__, "schema": self.schema.to_dict(), "models": models,
                  "crop_scale": self.crop_scale, "refine_iterations": self.refine_iterations,
                  "min_level_score": self.min_level_score,
                  "min_adjacent_score": self.min_adjacent_score,
                  "level_rule": self.level_rule, "facing_check": self.facing_check,
                  "column_repair": self.column_repair, "recrop": self.recrop,
                  "tta": self.tta, "masks": self.masks,
                  "fracture_screen_loss": self.fracture_screen_loss,
                  "middle_peak_radius": self.middle_peak_radius,
                  "qc_thresholds": dataclasses.asdict(self.qc_thresholds)}
        if self.shift_model is not None:
            config["shift_model"] = self.shift_model.save(d / "shift.pt").name
        atomic_write_text(d / "pipeline.json", json.dumps(config, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str],
             map_location: str | torch.device = "cpu", backend: str = "torch"
             ) -> SpineLandmarkPipeline:
        """Rebuild a pipeline saved by :meth:`save`.

        ``backend="onnxruntime"`` runs the landmark model and the refiner with ONNX Runtime
        on the CPU (:func:`~spinelandmarks.ort_backend.use_onnxruntime`; needs
        ``pip install 'spinelandmarks[onnxruntime]'``); ``"torch"`` (default) eagerly.
        """
        from .ort_backend import BACKENDS, use_onnxruntime

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        d = Path(directory)
        cfg_path = d / "pipeline.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: not a saved pipeline directory")
        cfg = json.loads(cfg_path.read_text())
        bases: dict[str, type[LandmarkTask]] = {
            "landmark": LandmarkModel, "refiner": CropRefiner, "detector": VertebraDetector}
        mods = {k: load_module(d / v, map_location, bases.get(k, LandmarkTask),
                               exclude=CropRefiner if k == "landmark" else None)
                for k, v in cfg["models"].items()}
        if "landmark" not in mods:
            raise ValueError(f"{cfg_path}: no landmark model listed")
        pipe = cls(mods["landmark"], mods.get("refiner"), mods.get("detector"),  # type: ignore[arg-type]
                   crop_scale=cfg.get("crop_scale", CROP_SCALE),
                   refine_iterations=cfg.get("refine_iterations", 1),
                   min_level_score=cfg.get("min_level_score", 0.3),
                   min_adjacent_score=cfg.get("min_adjacent_score", 0.1),
                   level_rule=cfg.get("level_rule", "landmarks"),
                   facing_check=cfg.get("facing_check", True), tta=cfg.get("tta", True),
                   column_repair=cfg.get("column_repair", True),
                   recrop=cfg.get("recrop", True),
                   fracture_screen_loss=cfg.get("fracture_screen_loss", GENANT_LOSS[1]),
                   middle_peak_radius=cfg.get("middle_peak_radius"),
                   qc_thresholds=_thresholds(cfg.get("qc_thresholds")), masks=cfg.get("masks"),
                   shift_model=ShiftModel.load(d / cfg["shift_model"])
                   if cfg.get("shift_model") else None)
        return use_onnxruntime(pipe) if backend == "onnxruntime" else pipe

    # -- tensor hot path -----------------------------------------------------------------------
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Run both steps on a batch of same-size radiographs, all on the images' device.

        Parameters
        ----------
        images : Tensor
            (B, 1, H, W) float intensities in [0, 1], original resolution, each image already
            windowed by :func:`~spinelandmarks.data.intensity.robust_normalize` (as
            :meth:`predict` and the training datasets do).

        Returns
        -------
        dict of str to Tensor
            ``points_step1``, ``points`` (B, P, 2) original pixels; ``point_scores`` (B, P);
            ``level_scores`` (B, L) (NaN without detector); ``present`` (B, L) bool;
            ``boxes`` (B, L, 4) detector boxes ``(x1, y1, x2, y2)`` in original pixels (NaN
            without detector or where a level has no box); ``relabelled`` (B, L) bool, step-1
            levels moved into the detector's box of their name (:mod:`spinelandmarks.levels`).
        """
        inputs, m = letterbox(images, self.input_size)
        descriptors = self._descriptors(images, inputs) if self.shift_model is not None else {}
        inv = torch.linalg.inv(m)
        pts_in, spread = self.landmark_model.predict_points(self._memory_format(inputs))
        # spread in input pixels -> original pixels (isotropic letterbox scale)
        spread_orig = spread / m[0, 0].to(spread.dtype)
        step1 = transform_points(pts_in, inv)
        scores = 1.0 / (1.0 + spread_orig)
        levels = self._levels(inputs, inv, step1)
        step1, present = levels["points"], levels["present"]
        if self.facing_check:
            step1, _ = consistent_facing(step1, self.schema)
        points = step1
        body: dict[str, Tensor] = {}
        relabelled = levels["relabelled"]
        if self.refiner is not None:
            for _ in range(max(self.refine_iterations, 1)):
                before = points
                points, scores, body, turned = self._refine(images, points, scores)
            if self.recrop:
                again = turned | self._moved(before, points)
                if again.any():
                    points, scores, body = self._refine_again(images, points, scores, body,
                                                              again)
            if self.column_repair:
                points, scores, body, repaired = self._repair_column(images, points, scores,
                                                                     body)
                relabelled = relabelled | repaired
            if self.facing_check:
                points, _ = consistent_facing(points, self.schema)
        point_present = present[:, self._point_level]
        nan = torch.full_like(points, float("nan"))
        return {"points_step1": torch.where(point_present.unsqueeze(-1), step1, nan),
                "points": torch.where(point_present.unsqueeze(-1), points, nan),
                "point_scores": torch.where(point_present, scores, torch.full_like(scores, float("nan"))),
                "level_scores": levels["level_scores"], "present": present,
                "boxes": levels["boxes"], "relabelled": relabelled, **body, **descriptors}

    @torch.no_grad()
    def descriptors(self, images: Tensor) -> dict[str, Tensor]:
        """What the shift model summarizes, for a batch of same-size radiographs.

        Parameters
        ----------
        images : Tensor
            (B, 1, H, W) windowed intensities as for :meth:`forward`.

        Returns
        -------
        dict of str to Tensor
            ``pooled`` (B, C) float32: the step-1 backbone's last (stride-32) feature map of
            the letterboxed input, averaged over its positions; ``intensity`` (B, K)
            float32: :func:`~spinelandmarks.adaptation.shift_model.intensity_statistics`.
        """
        inputs, _ = letterbox(images, self.input_size)
        return self._descriptors(images, inputs)

    def _descriptors(self, images: Tensor, inputs: Tensor) -> dict[str, Tensor]:
        feats = self.landmark_model.backbone(self._memory_format(inputs))[-1]
        return {"pooled": feats.float().mean(dim=(-2, -1)),
                "intensity": intensity_statistics(images)}

    def _levels(self, inputs: Tensor, inv: Tensor, step1: Tensor) -> dict[str, Tensor]:
        """Which levels are present, and (``level_rule="detector"``) step-1 points reconciled
        with the detector's boxes, renamed from the sacrum up; see :mod:`spinelandmarks.levels`.
        Without a detector every level is present and the step-1 chain stands."""
        b, num_levels, dev = step1.shape[0], self.schema.num_levels, step1.device
        out = {"points": step1, "present": torch.ones(b, num_levels, dtype=torch.bool, device=dev),
               "relabelled": torch.zeros(b, num_levels, dtype=torch.bool, device=dev),
               "level_scores": torch.full((b, num_levels), float("nan"), device=dev),
               "boxes": torch.full((b, num_levels, 4), float("nan"), device=dev)}
        if self.detector is None:
            return out
        dets = self.detector.detect(inputs)  # type: ignore[operator]
        scores = torch.stack([d.scores.to(dev).float() for d in dets])
        found = torch.stack([d.present.to(dev) for d in dets])
        present = confirm_levels(scores, found, self.min_level_score, self.min_adjacent_score)
        corners = torch.stack([d.boxes.to(dev).float() for d in dets])
        boxes = transform_points(corners.reshape(b, -1, 2), inv).reshape(b, num_levels, 4)
        if self.level_rule == "detector":
            boxes, scores, present, _ = anchor_to_sacrum(boxes, scores, present, self.schema)
            out["points"], out["relabelled"] = reconcile_chain(step1, boxes, present,
                                                               self.schema)
        out.update(present=present, level_scores=scores, boxes=boxes)
        return out

    def _memory_format(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last \
            else images

    def _refine(self, images: Tensor, points: Tensor, scores: Tensor,
                levels: Sequence[int] | None = None
                ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """Step 2 on the refined levels (not the femoral heads, whose step-1 points stand)
        or on the level indices ``levels``: crops from ``points``, refined points mapped back;
        the body masks (if any) as (B, L, ...) with zeros for the levels not refined; (B, L)
        bool, the levels whose crop was turned to their column's direction (``recrop``)."""
        refiner = self.refiner
        if refiner is None:
            raise RuntimeError("step 2 needs a refiner; this pipeline has none")
        sel = list(self._refined_index if levels is None else levels)
        table = self._level_table[sel]  # (L', K) flat indices, -1 padding
        b, num_levels = images.shape[0], table.shape[0]
        k = table.shape[1]
        valid = table >= 0
        per_level = self._per_level(points, sel).flatten(0, 1)  # (B*L', K, 2)
        angles = endplate_angles(per_level)
        turned = torch.zeros_like(angles, dtype=torch.bool)
        if self.recrop:
            axis = self._column_axes(points)[:, sel].reshape(-1).to(angles.dtype)
            turned = axis_departures(angles, axis).abs() > MAX_AXIS_DEPARTURE_DEG
            angles = torch.where(turned, axis, angles)
        centers, sizes, angles = vertebra_crop_params(per_level, scale=self.crop_scale,
                                                      angles_deg=angles)
        views = TTA_VIEWS if self.tta else ((1.0, False),)
        v = len(views)
        scale = torch.tensor([s for s, _ in views], dtype=torch.float64, device=images.device)
        # (B*L*V) crops, V per level: same centre and angle, side times the view's scale
        view_sizes = (sizes.double()[:, None, :] * scale[None, :, None]).flatten(0, 1)
        mats = crop_matrix(centers.double().repeat_interleave(v, 0), view_sizes,
                           angles.repeat_interleave(v, 0), self.crop_size)
        mirrored = torch.tensor([m for _, m in views], device=images.device).repeat(b * num_levels)
        flip = hflip_matrix(self.crop_size[1], device=mats.device)
        mats = torch.where(mirrored[:, None, None], flip @ mats, mats).reshape(
            b, num_levels * v, 3, 3)
        crops = crop_images(images, mats, self.crop_size)  # (B, L*V, 1, h, w)
        body: dict[str, Tensor] = {}
        # only when asked, so that refiners overriding predict_points(images) keep working
        peak = ((self._middle_outputs, self.middle_peak_radius)
                if self.middle_peak_radius is not None else ())
        if self.masks:
            crop_pts, spread, probs = refiner.predict_points_and_masks(
                self._memory_format(crops.flatten(0, 1)), *peak)
            # the plain view (side 1.0, not mirrored: TTA_VIEWS[0]) carries the mask
            body = {"mask_probs": probs.reshape(b, num_levels, v, *probs.shape[1:])[:, :, 0],
                    "mask_matrices": mats.reshape(b, num_levels, v, 3, 3)[:, :, 0]}
            body = {key: x.new_zeros(b, self.schema.num_levels, *x.shape[2:]).index_copy_(
                1, torch.tensor(sel, device=x.device), x) for key, x in body.items()}
        else:
            crop_pts, spread = refiner.predict_points(self._memory_format(crops.flatten(0, 1)),
                                                      *peak)
        crop_pts = crop_pts.reshape(b, num_levels * v, -1, 2)[:, :, :k]
        spread = spread.reshape(b, num_levels, v, -1)[..., :k]
        # back to the image, then the mean over the views
        refined = transform_points(crop_pts, torch.linalg.inv(mats))
        refined = refined.reshape(b, num_levels, v, k, 2).mean(2)  # (B, L, K, 2)
        # crop pixels -> original pixels: the crop side over the crop size
        px = (view_sizes[:, 0] / self.crop_size[1]).reshape(b, num_levels, v, 1).to(spread.dtype)
        new_scores = (1.0 / (1.0 + spread * px)).mean(2)
        out = points.clone()
        out_scores = scores.clone()
        flat = table[valid]  # (P',) in level-major order = schema order
        out[:, flat] = refined[:, valid].to(out.dtype)
        out_scores[:, flat] = new_scores[:, valid].to(out_scores.dtype)
        turned_levels = torch.zeros(b, self.schema.num_levels, dtype=torch.bool,
                                    device=images.device)
        turned_levels[:, sel] = turned.reshape(b, num_levels)
        return out, out_scores, body, turned_levels

    def _refine_again(self, images: Tensor, points: Tensor, scores: Tensor,
                      body: dict[str, Tensor], levels: Tensor
                      ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Refine once more the (B, L) bool ``levels``, each in a crop built from its refined
        corners; the other levels keep theirs."""
        rows = levels.any(1).nonzero()[:, 0]
        named = levels.any(0).nonzero()[:, 0].tolist()  # only levels some row names
        again, again_scores, again_body, _ = self._refine(images[rows], points[rows],
                                                          scores[rows], named)
        take = levels[rows][:, self._point_level]  # (R, P)
        points, scores = points.clone(), scores.clone()
        points[rows] = torch.where(take[..., None], again, points[rows])
        scores[rows] = torch.where(take, again_scores, scores[rows])
        body = {key: value.clone() for key, value in body.items()}
        for key, value in again_body.items():
            keep = levels[rows].reshape(*levels[rows].shape, *([1] * (value.dim() - 2)))
            body[key][rows] = torch.where(keep, value.to(body[key].dtype), body[key][rows])
        return points, scores, body

    def _per_level(self, points: Tensor, levels: Sequence[int]) -> Tensor:
        """(B, P, 2) points -> (B, L', K, 2) those of the level indices ``levels``, NaN where
        a level has fewer than K points."""
        table = self._level_table[list(levels)]  # (L', K) flat indices, -1 padding
        x = points[:, table.clamp_min(0)]
        return torch.where((table >= 0)[None, :, :, None], x, torch.full_like(x, float("nan")))

    def _moved(self, before: Tensor, after: Tensor) -> Tensor:
        """(B, L) bool: refined levels whose corners step 2 moved off the crop it was given,
        the centre by more than :data:`RECROP_SHIFT` body sizes or the endplate direction by
        more than :data:`RECROP_ANGLE_DEG`."""
        index = self._refined_index
        old = self._per_level(before, index).flatten(0, 1)  # (B*L', K, 2)
        new = self._per_level(after, index).flatten(0, 1)
        new_angles = endplate_angles(new)
        _, extent, _ = vertebra_crop_params(new, scale=1.0, angles_deg=new_angles)
        shift = torch.linalg.vector_norm(level_centres(after, self.schema)[:, index]
                                         - level_centres(before, self.schema)[:, index], dim=-1)
        turn = axis_departures(new_angles, endplate_angles(old)).abs()
        moved = ((shift.flatten() > RECROP_SHIFT * extent[:, 0])
                 | (turn > RECROP_ANGLE_DEG))
        out = torch.zeros(after.shape[0], self.schema.num_levels, dtype=torch.bool,
                          device=after.device)
        out[:, index] = moved.reshape(after.shape[0], -1)
        return out

    def _column_axes(self, points: Tensor) -> Tensor:
        """(B, L) endplate directions the column of refined levels implies (degrees; NaN for
        the levels not refined)."""
        centres = level_centres(points, self.schema)
        axes = torch.full(centres.shape[:2], float("nan"), dtype=centres.dtype,
                          device=centres.device)
        index = torch.tensor(self._refined_index, device=centres.device)
        return axes.index_copy(1, index, column_axis_angles(centres[:, index]))

    def _repair_column(self, images: Tensor, points: Tensor, scores: Tensor,
                       body: dict[str, Tensor]
                       ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """Rule 4 of :mod:`spinelandmarks.levels`: walking up from the caudal-most refined
        level, a level off the column (:func:`~spinelandmarks.levels.off_column`) is moved
        to where the column below continues and refined there (twice); the result replaces
        it when it lands within :data:`~spinelandmarks.levels.COLUMN_TOLERANCE` body heights
        of the expectation and not within 0.75 body heights of another level (a body taken).
        Returns the points, scores, masks and (B, L) bool repaired."""
        points, scores = points.clone(), scores.clone()
        body = {k: v.clone() for k, v in body.items()}
        repaired = torch.zeros(points.shape[0], self.schema.num_levels, dtype=torch.bool,
                               device=points.device)
        order = [i for i, lv in enumerate(self.schema.level_names)
                 if lv in self.schema.refined_levels]
        for j in range(len(order) - 2, -1, -1):
            level = order[j]
            off, expected, tol = off_column(points, self.schema, order, j)
            rows = off.nonzero()[:, 0]
            if rows.numel() == 0:
                continue
            idx = self.schema.level_indices(self.schema.level_names[level])
            new_pts = points[rows].clone()
            shift = expected[rows] - level_centres(new_pts, self.schema)[:, level]
            new_pts[:, idx] += shift[:, None].to(new_pts.dtype)
            new_scores = scores[rows]
            for _ in range(2):
                new_pts, new_scores, new_body, _ = self._refine(images[rows], new_pts,
                                                                new_scores, [level])
            centres = level_centres(new_pts, self.schema)  # (R, L, 2)
            gap = torch.linalg.vector_norm(centres - centres[:, level, None], dim=-1)
            gap[:, level] = float("inf")
            ok = ((torch.linalg.vector_norm(centres[:, level] - expected[rows], dim=-1)
                   < tol[rows]) & ~(gap < 1.5 * tol[rows, None]).any(-1))
            hit = rows[ok]
            points[hit], scores[hit] = new_pts[ok], new_scores[ok]
            for key, value in new_body.items():
                body[key][hit, level] = value[ok, level].to(body[key].dtype)
            repaired[hit, level] = True
        return points, scores, body, repaired

    # -- user-facing API -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, inputs: PipelineInput | Iterable[PipelineInput], batch_size: int = 8,
                precision: str = "32", device: str | torch.device | None = None
                ) -> list[SpineResult]:
        """Predict corners and clinical parameters for radiographs.

        Parameters
        ----------
        inputs : path, array, tensor, pydicom Dataset, Radiograph, or an iterable of them
            Arrays/tensors are (H, W) or (1, H, W) intensities in [0, 1].
        batch_size : int
            Radiographs per forward pass (consecutive inputs of equal size are batched).
        precision : {"32", "bf16-mixed", "16-mixed"}
            Autocast dtype for the networks; DSNT and geometry stay float32/float64.
        device : str or torch.device, optional
            Where to run; default: where the pipeline's parameters are.

        Returns
        -------
        list of SpineResult
            One per input, in order. For a list, an input that cannot be read or is not a
            usable image (empty, smaller than :data:`MIN_SIDE` pixels, NaN or infinite pixels)
            gives a result with ``error`` set and no points; the others are predicted.

        Raises
        ------
        ValueError, OSError
            A single input that cannot be read or used (the message names it).
        """
        _check_precision(precision)
        if device is not None:
            self.to(device)
        if _is_single(inputs):
            single = _to_radiograph(inputs)  # type: ignore[arg-type]
            return self._predict_radiographs([single], batch_size, precision)
        return list(self.predict_iter(inputs, batch_size, precision))  # type: ignore[arg-type]

    def predict_iter(self, inputs: Iterable[PipelineInput], batch_size: int = 8,
                     precision: str = "32", device: str | torch.device | None = None
                     ) -> Iterator[SpineResult]:
        """Predict lazily: one result per input, in order, holding ``batch_size`` at a time.

        For a long list of paths (or a generator) in a notebook: memory stays flat in the
        number of inputs, and results can be written as they come. An input that cannot be
        read or used gives a result with ``error`` set, as in :meth:`predict`.

        Parameters
        ----------
        inputs : iterable of path, array, tensor, pydicom Dataset or Radiograph
            Read only when their batch is reached.
        batch_size, precision, device
            As for :meth:`predict`.

        Yields
        ------
        SpineResult
        """
        _check_precision(precision)
        if device is not None:
            self.to(device)
        it = iter(inputs)
        while chunk := list(itertools.islice(it, batch_size)):
            radiographs: list[Radiograph] = []
            errors: dict[int, SpineResult] = {}
            for i, x in enumerate(chunk):
                try:
                    radiographs.append(_to_radiograph(x))
                except (ValueError, OSError) as exc:
                    errors[i] = SpineResult.failed(_describe(x), self.schema, str(exc))
            done = iter(self._predict_radiographs(radiographs, batch_size, precision))
            yield from (errors[i] if i in errors else next(done) for i in range(len(chunk)))

    def _predict_radiographs(self, radiographs: list[Radiograph], batch_size: int,
                             precision: str) -> list[SpineResult]:
        dev = next(self.landmark_model.parameters()).device
        results: list[SpineResult] = []
        for group in _batches(radiographs, batch_size):
            images = torch.stack([torch.from_numpy(robust_normalize(r.pixels))
                                  for r in group]).unsqueeze(1).to(dev)
            dtype = _PRECISIONS[precision]
            ctx = (torch.autocast(dev.type, dtype=dtype) if dtype is not None
                   else contextlib.nullcontext())
            with ctx:
                out = self(images.float())
            results.extend(self._results(group, {  # matrices stay float64 (exact paste-back)
                k: v.cpu() if k == "mask_matrices" else v.float().cpu() for k, v in out.items()}))
        return results

    def calibrate_qc(self, inputs: Iterable[PipelineInput], truths: Sequence[np.ndarray], *,
                     quantile: float = 0.99, margin: float = 1.25, batch_size: int = 8
                     ) -> QCThresholds:
        """Fit the model-dependent QC thresholds and the fracture screen to this pipeline on
        annotated images.

        Predicts ``inputs``, keeps the levels it identified correctly (centre within half the
        true body height of the true centre) and sets :attr:`qc_thresholds` by
        :func:`~spinelandmarks.qc.calibrate_thresholds`, and :attr:`fracture_screen_loss` by
        :func:`~spinelandmarks.measurements.fit_fracture_screen` from every measurable body
        (both saved with the pipeline). Use images
        the networks were not trained on (the validation set): ``train`` does this itself.

        Parameters
        ----------
        inputs : iterable of PipelineInput
            Radiographs (paths, arrays, DICOM datasets).
        truths : sequence of np.ndarray
            (P, 2) true points per input, image pixels, NaN where not annotated.
        quantile, margin : float
            See :func:`~spinelandmarks.qc.calibrate_thresholds`.
        batch_size : int

        Returns
        -------
        QCThresholds
            The thresholds now in use.
        """
        results = self.predict(list(inputs), batch_size=batch_size)
        if len(results) != len(truths):
            raise ValueError(f"{len(results)} inputs but {len(truths)} ground truths")
        if not results:
            return self.qc_thresholds

        def stack(name: str) -> Tensor:
            return torch.from_numpy(np.stack([getattr(r, name) for r in results])).double()

        det = self.detector is not None
        stats = qc_statistics(stack("points"), stack("points_step1"), stack("point_scores"),
                              self.schema, stack("level_boxes") if det else None,
                              stack("level_scores") if det else None)
        truth = torch.from_numpy(np.stack(truths).astype(np.float64))
        good = level_identification(stack("points"), truth, self.schema) == 1.0
        self.qc_thresholds = calibrate_thresholds(stats, good, quantile=quantile,
                                                  margin=margin, base=self.qc_thresholds)
        if self.schema.body_levels:
            self.fracture_screen_loss = fit_fracture_screen(
                height_loss(stack("points"), self.schema).numpy(),
                height_loss(truth, self.schema).numpy())
        return self.qc_thresholds

    def _qc(self, out: dict[str, Tensor], params: dict[str, Tensor],
            params1: dict[str, Tensor]) -> tuple[list[dict[str, list[str]]], list[bool]]:
        """Raised flags per image (flag -> levels or parameters) and ``needs_review``."""
        flags = quality_flags(out["points"], out["points_step1"], out["point_scores"], params,
                              self.schema, parameters_step1=params1, present=out["present"],
                              level_scores=out["level_scores"] if self.detector is not None
                              else None,
                              boxes=out["boxes"] if self.detector is not None else None,
                              thresholds=self.qc_thresholds)
        names = self.schema.level_names
        per_image: list[dict[str, list[str]]] = []
        for i in range(out["points"].shape[0]):
            raised = {k: [lv for lv, on in zip(names, flags[k][i].tolist(), strict=True) if on]
                      for k in LEVEL_FLAGS}
            raised["angle_range"] = [k for k, v in implausible_angles(params).items()
                                     if bool(v[i])]
            raised["steps_disagree"] = [k for k, v in disagreeing_parameters(
                params, params1, self.qc_thresholds.steps_disagree_deg).items() if bool(v[i])]
            per_image.append({k: v for k, v in raised.items() if v})
        return per_image, [bool(v) for v in flags["needs_review"].tolist()]

    def _results(self, group: Sequence[Radiograph], out: dict[str, Tensor]) -> list[SpineResult]:
        # only the parameters the schema defines (none for one without the lumbar endplates)
        params2 = schema_parameters(out["points"].double(), self.schema)
        params1 = schema_parameters(out["points_step1"].double(), self.schema)
        qc, review = self._qc(out, params2, params1)
        suspected = self._suspected_fractures(out["points"])
        shift = (self.shift_model.score(out["pooled"], out["intensity"]).tolist()
                 if self.shift_model is not None and "pooled" in out else None)
        res = []
        for i, r in enumerate(group):
            missing = [lv for lv, ok in zip(self.schema.level_names, out["present"][i].tolist(),
                                            strict=True) if not ok]
            res.append(SpineResult(
                source=r.source, image_size=(int(r.pixels.shape[0]), int(r.pixels.shape[1])),
                pixel_spacing=r.pixel_spacing, points=out["points"][i].double().numpy(),
                points_step1=out["points_step1"][i].double().numpy(),
                point_scores=out["point_scores"][i].numpy(),
                level_scores=out["level_scores"][i].numpy(), missing_levels=missing,
                parameters={k: float(v[i]) for k, v in params2.items()},
                parameters_step1={k: float(v[i]) for k, v in params1.items()},
                qc=qc[i], needs_review=review[i],
                relabelled_levels=[lv for lv, on in zip(self.schema.level_names,
                                                        out["relabelled"][i].tolist(),
                                                        strict=True) if on],
                suspected_fractures=suspected[i],
                level_boxes=out["boxes"][i].double().numpy(),
                masks=self._masks_of(out, i, r.pixels.shape[-2:], missing),
                **self._shift_fields(shift, i)))
        return res

    def _shift_fields(self, scores: list[float] | None, i: int) -> dict[str, Any]:
        """``shift_score`` and ``shifted`` of image ``i`` (none without a shift model)."""
        if scores is None or self.shift_model is None:
            return {}
        return {"shift_score": scores[i], "shifted": scores[i] > self.shift_model.threshold}

    def _suspected_fractures(self, points: Tensor) -> list[list[str]]:
        """Per image, the body levels whose height loss reaches ``fracture_screen_loss``."""
        loss = height_loss(points.double(), self.schema)
        hit = torch.nan_to_num(loss, nan=-1.0) >= self.fracture_screen_loss
        body = self.schema.body_levels
        return [[lv for lv, on in zip(body, row, strict=True) if on] for row in hit.tolist()]

    def _masks_of(self, out: dict[str, Tensor], i: int, size: Sequence[int],
                  missing: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Image ``i``'s body masks, pasted back from the crops, as RLE per level found."""
        if "mask_probs" not in out:
            return {}
        h, w = int(size[0]), int(size[1])
        masks = {}
        for li, lv in enumerate(self.schema.level_names):
            if lv in missing or lv not in self.schema.body_levels:  # bodies only, not S1
                continue
            window, (y0, x0) = uncrop(out["mask_probs"][i, li], out["mask_matrices"][i, li],
                                      (h, w))
            full = np.zeros((h, w), bool)
            win = window[0].numpy()
            full[y0: y0 + win.shape[0], x0: x0 + win.shape[1]] = win
            if full.any():
                masks[lv] = rle_from_mask(full)
        return masks


def _thresholds(saved: dict[str, Any] | None) -> QCThresholds:
    """QC thresholds from ``pipeline.json`` (defaults for pipelines saved without them)."""
    if not saved:
        return QCThresholds()
    known = {f.name for f in dataclasses.fields(QCThresholds)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in saved.items() if k in known}
    return QCThresholds(**values)


def _check_precision(precision: str) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")


def _is_single(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike, np.ndarray, Tensor, pydicom.Dataset, Radiograph))


def _describe(x: Any) -> str:
    """How an input is named in results and messages."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, Radiograph):
        return x.source
    shape = getattr(x, "shape", None)
    return f"<{type(x).__name__} {'x'.join(map(str, shape))}>" if shape is not None else (
        f"<{type(x).__name__}>")


def _to_radiograph(x: PipelineInput) -> Radiograph:
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
            raise ValueError(f"{_describe(x)}: expected an (H, W) or (1, H, W) image, got "
                             f"shape {arr.shape}")
        rad = Radiograph(pixels=arr.astype(np.float32), pixel_spacing=None,
                         source=f"<array {arr.shape[0]}x{arr.shape[1]}>", meta={})
    _check_pixels(rad)
    return rad


#: Smallest image side the pipeline accepts, pixels (a radiograph is hundreds of pixels wide).
MIN_SIDE = 32


def _check_pixels(rad: Radiograph) -> None:
    """A clear ``ValueError`` naming the input for images nothing can be found in."""
    h, w = rad.pixels.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{rad.source}: image of {w} x {h} pixels is too small "
                         f"(at least {MIN_SIDE} pixels per side)")
    if not np.isfinite(rad.pixels).all():
        raise ValueError(f"{rad.source}: image has NaN or infinite pixels")


def _batches(items: list[Radiograph], size: int) -> Iterator[list[Radiograph]]:
    """Consecutive runs of equal image size, at most ``size`` long."""
    group: list[Radiograph] = []
    for r in items:
        if group and (len(group) == size or group[0].pixels.shape != r.pixels.shape):
            yield group
            group = []
        group.append(r)
    if group:
        yield group
