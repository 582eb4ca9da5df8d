"""The two-step inference pipeline: radiograph -> labelled, refined corners -> measurements.

Step 1: the whole radiograph is letterboxed to the landmark model's input and every point of
the schema is predicted (and, with a detector, each level is confirmed or reported missing).
Step 2 (:mod:`~spinelandmarks.inference.refinement`): each vertebra is cut from the
*full-resolution* radiograph in an oriented crop built from its step-1 corners, the refiner
predicts its points in the crop, and the crop matrix maps them back. The level rules
(:mod:`spinelandmarks.levels`) and QC run around both steps; the clinical parameters are
computed from the step-2 points (:mod:`~spinelandmarks.inference.results`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..adaptation.shift_model import ShiftModel, intensity_statistics
from ..anatomy.measurements import fit_fracture_screen, height_loss
from ..anatomy.vertebrae import level_centres
from ..data.intensity import robust_normalize
from ..data.io import Radiograph
from ..defaults import CROP_SCALE, CROP_SIZE
from ..geometry import letterbox, transform_points
from ..levels import confirm_levels, consistent_facing, fit_presence, repair_column
from ..metrics import level_identification
from ..qc import QCThresholds, calibrate_thresholds, qc_statistics, steps_disagreement
from ..schema import LandmarkSchema
from .inputs import PipelineInput, describe, equal_size_batches, is_single, to_radiograph
from .options import REMOVED_OPTIONS, PipelineOptions
from .persistence import read_pipeline, write_pipeline
from .protocols import LevelDetector, PointModel, StepTwoModel
from .refinement import StepTwo
from .results import SpineResult, assemble_results

__all__ = ["PRECISIONS", "SpineLandmarkPipeline"]

#: ``precision`` of :meth:`SpineLandmarkPipeline.predict` -> autocast dtype (None: float32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(PipelineOptions)) | frozenset(
    REMOVED_OPTIONS)


def _module(net: Any, role: str) -> nn.Module:
    if not isinstance(net, nn.Module):
        raise TypeError(f"{role} must be a torch.nn.Module, got {type(net).__name__}")
    return net.eval()


class SpineLandmarkPipeline(nn.Module):
    """Chains detector (optional), landmark model and refiner (optional) for inference.

    Parameters
    ----------
    landmark_model : PointModel
        Step-1 network (:class:`~spinelandmarks.models.LandmarkModel`).
    refiner : StepTwoModel, optional
        Step-2 network (:class:`~spinelandmarks.models.CropRefiner`); without it the step-2
        points equal the step-1 points.
    detector : LevelDetector, optional
        Confirms each level (:class:`~spinelandmarks.models.VertebraDetector`); levels it does
        not find are reported missing (NaN points).
    options : PipelineOptions, optional
        How the networks run (defaults: ``PipelineOptions()``).
    shift_model : ShiftModel, optional
        Summary of the training images: each result then has a ``shift_score`` and
        ``shifted`` (saved with the pipeline as ``shift.pt``).
    channels_last : bool
        NHWC memory format for the landmark networks (faster convolutions on recent GPUs).
    compile : bool
        ``torch.compile`` the landmark networks (first call slow; GPU throughput).
    **option_values
        Shorthand for ``options=PipelineOptions(**option_values)`` (not with ``options``).

    Examples
    --------
    >>> pipe = SpineLandmarkPipeline.load("runs/demo/pipeline")        # doctest: +SKIP
    >>> result = pipe.predict(["lateral.dcm"])[0]                       # doctest: +SKIP
    >>> result.parameters["l1_s1_lordosis"]                             # doctest: +SKIP
    >>> pipe.options = dataclasses.replace(pipe.options, tta=False)     # doctest: +SKIP
    """

    landmark_model: PointModel
    refiner: StepTwoModel | None
    detector: LevelDetector | None

    def __init__(self, landmark_model: PointModel, refiner: StepTwoModel | None = None,
                 detector: LevelDetector | None = None, options: PipelineOptions | None = None,
                 *, shift_model: ShiftModel | None = None, channels_last: bool = False,
                 compile: bool = False, **option_values: Any) -> None:
        super().__init__()
        nets = {"landmark_model": _module(landmark_model, "landmark_model"),
                "refiner": None if refiner is None else _module(refiner, "refiner"),
                "detector": None if detector is None else _module(detector, "detector")}
        for role, net in nets.items():
            self.register_module(role, net)
        self.schema: LandmarkSchema = landmark_model.schema
        if refiner is not None and refiner.schema != self.schema:
            raise ValueError("landmark model and refiner use different schemas")
        single = [lv.name for lv in self.schema.levels
                  if lv.name in self.schema.refined_levels and len(lv.points) < 2]
        if refiner is not None and single:
            raise ValueError(f"schema {self.schema.name!r}: levels {single} have one point, "
                             "from which no crop can be oriented or sized; use the landmark "
                             "model alone (refiner=None) for such a schema")
        self.options = _options(options, option_values)
        #: Summary of the training images that ``shift_score`` is measured against (fitted by
        #: ``train``, or :func:`~spinelandmarks.adaptation.fit_shift_model`); None: no score.
        self.shift_model = shift_model
        self.channels_last = bool(channels_last)
        for net in (nets["landmark_model"], nets["refiner"]):
            if net is not None and channels_last:
                net.to(memory_format=torch.channels_last)
            if net is not None and compile:
                net.compile_network()  # type: ignore[operator]

    # -- options -------------------------------------------------------------------------------
    @property
    def options(self) -> PipelineOptions:
        """The inference options (:class:`PipelineOptions`); set a new record to change them
        (checked against the networks: masks need a refiner with a mask head)."""
        return self._options

    @options.setter
    def options(self, value: PipelineOptions) -> None:
        if not isinstance(value, PipelineOptions):
            raise TypeError(f"options must be a PipelineOptions, got {type(value).__name__}")
        can_mask = self.refiner is not None and self.refiner.has_masks
        if value.masks and not can_mask:
            raise ValueError("masks=True needs a refiner trained with masks (CropRefiner("
                             "masks=True), `spinelandmarks train --masks`)")
        if value.masks is None:
            value = dataclasses.replace(value, masks=can_mask)
        if value.crop_scale is None:  # the scale the refiner was trained at
            value = dataclasses.replace(value, crop_scale=self.refiner.crop_scale
                                        if self.refiner is not None else CROP_SCALE)
        object.__setattr__(self, "_options", value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTION_NAMES:
            raise AttributeError(
                f"{name!r} is an inference option: set it with pipe.options = "
                f"dataclasses.replace(pipe.options, {name}=...)"
                + (" (removed in 0.2, see the CHANGELOG)" if name in REMOVED_OPTIONS else ""))
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _OPTION_NAMES:
                raise AttributeError(f"{name!r} is an inference option: read "
                                     f"pipe.options.{name}") from None
            raise

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the radiograph is letterboxed to for step 1, pixels."""
        return self.landmark_model.input_size

    @property
    def crop_size(self) -> tuple[int, int]:
        """(h, w) of the step-2 crops, pixels."""
        return self.refiner.input_size if self.refiner is not None else CROP_SIZE

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``pipeline.json`` (schema, options), one weights-only file per network and
        the shift model into ``directory``
        (:func:`~spinelandmarks.inference.persistence.write_pipeline`)."""
        networks: dict[str, nn.Module | None] = {
            "landmark": self._net("landmark_model"), "refiner": self._net("refiner"),
            "detector": self._net("detector")}
        return write_pipeline(directory, networks, self.schema, self.options, self.shift_model)

    def _net(self, role: str) -> nn.Module | None:
        return self._modules.get(role)

    @classmethod
    def load(cls, directory: str | os.PathLike[str],
             map_location: str | torch.device = "cpu", backend: str = "torch"
             ) -> SpineLandmarkPipeline:
        """Rebuild a pipeline saved by :meth:`save` (by any version since 0.1).

        ``backend="onnxruntime"`` runs the landmark model and the refiner with ONNX Runtime
        on the CPU (:func:`~spinelandmarks.ort_backend.use_onnxruntime`; needs
        ``pip install 'spinelandmarks[onnxruntime]'``); ``"torch"`` (default) eagerly.
        """
        from ..ort_backend import BACKENDS, use_onnxruntime

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        saved = read_pipeline(directory, map_location)
        nets = saved.networks
        pipe = cls(nets["landmark"], nets.get("refiner"), nets.get("detector"),  # type: ignore[arg-type]
                   saved.options, shift_model=saved.shift_model)
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
            without detector or where a level has no box); ``relabelled`` (B, L) bool, levels
            moved by ``column_repair``; with masks ``mask_probs``, ``mask_matrices``; with a
            shift model ``pooled`` and ``intensity`` (:meth:`descriptors`).
        """
        inputs, m = letterbox(images, self.input_size)
        descriptors = self._descriptors(images, inputs) if self.shift_model is not None else {}
        inv = torch.linalg.inv(m)
        pts_in, spread = self.landmark_model.predict_points(self._memory_format(inputs))
        # spread in input pixels -> original pixels (isotropic letterbox scale)
        scores = 1.0 / (1.0 + spread / m[0, 0].to(spread.dtype))
        step1 = transform_points(pts_in, inv)
        present, level_scores, boxes = self._levels(inputs, inv)
        if self.options.facing_check:
            step1, _ = consistent_facing(step1, self.schema)
        points, body = step1, dict[str, Tensor]()
        relabelled = torch.zeros_like(present)
        if self.refiner is not None:
            points, scores, body, relabelled = self._step_two(images, step1, scores)
        point_present = present[:, self.schema.point_level.to(present.device)]
        nan = torch.full_like(points, float("nan"))
        return {"points_step1": torch.where(point_present.unsqueeze(-1), step1, nan),
                "points": torch.where(point_present.unsqueeze(-1), points, nan),
                "point_scores": torch.where(point_present, scores,
                                            torch.full_like(scores, float("nan"))),
                "level_scores": level_scores, "present": present, "boxes": boxes,
                "relabelled": relabelled, **body, **descriptors}

    def step_two(self) -> StepTwo:
        """The crop refinement as the options configure it (needs a refiner)."""
        if self.refiner is None:
            raise RuntimeError("step 2 needs a refiner; this pipeline has none")
        opts = self.options
        scale = opts.crop_scale if opts.crop_scale is not None else self.refiner.crop_scale
        return StepTwo(self.refiner, self.schema, self.crop_size, scale, opts.tta, opts.recrop,
                       bool(opts.masks), self.channels_last)

    def _step_two(self, images: Tensor, step1: Tensor, scores: Tensor
                  ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
        """Refinement, re-cropping, column repair and the facing check after step 2."""
        two = self.step_two()
        step = two.refine(images, step1, scores)
        if self.options.recrop:
            again = step.turned | two.moved(step1, step.points)
            if again.any():
                step = two.refine_again(images, step, again)
        points, scores, body = step.points, step.scores, step.body
        repaired = torch.zeros(images.shape[0], self.schema.num_levels, dtype=torch.bool,
                               device=images.device)
        if self.options.column_repair:
            def refine_level(rows: Tensor, pts: Tensor, sc: Tensor, level: int
                             ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
                out = two.refine(images[rows], pts, sc, [level])
                return out.points, out.scores, out.body

            points, scores, body, repaired = repair_column(points, scores, body, self.schema,
                                                           refine_level)
        if self.options.facing_check:
            points, _ = consistent_facing(points, self.schema)
        return points, scores, body, repaired

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
            ``pooled`` (B, C) float32: the step-1 model's
            :meth:`~spinelandmarks.models.LandmarkModel.pooled_features` of the letterboxed
            input; ``intensity`` (B, K) float32:
            :func:`~spinelandmarks.adaptation.shift_model.intensity_statistics`.
        """
        inputs, _ = letterbox(images, self.input_size)
        return self._descriptors(images, inputs)

    def _descriptors(self, images: Tensor, inputs: Tensor) -> dict[str, Tensor]:
        return {"pooled": self.landmark_model.pooled_features(self._memory_format(inputs)),
                "intensity": intensity_statistics(images)}

    def _levels(self, inputs: Tensor, inv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L) bool levels present, (B, L) detector scores, (B, L, 4) boxes in original
        pixels; without a detector every level is present, scores and boxes NaN (and every
        level is present with one whose ``detector_presence`` is off)."""
        b, num_levels, dev = inputs.shape[0], self.schema.num_levels, inputs.device
        if self.detector is None:
            return (torch.ones(b, num_levels, dtype=torch.bool, device=dev),
                    torch.full((b, num_levels), float("nan"), device=dev),
                    torch.full((b, num_levels, 4), float("nan"), device=dev))
        dets = self.detector.detect(inputs)
        scores = torch.stack([d.scores.to(dev).float() for d in dets])
        found = torch.stack([d.present.to(dev) for d in dets])
        present = confirm_levels(scores, found, self.options.min_level_score,
                                 self.options.min_adjacent_score) \
            if self.options.detector_presence else torch.ones_like(found, dtype=torch.bool)
        corners = torch.stack([d.boxes.to(dev).float() for d in dets])
        boxes = transform_points(corners.reshape(b, -1, 2), inv).reshape(b, num_levels, 4)
        return present, scores, boxes

    def _memory_format(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last \
            else images

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
            usable image (empty, smaller than
            :data:`~spinelandmarks.inference.inputs.MIN_SIDE` pixels, NaN or infinite pixels)
            gives a result with ``error`` set and no points; the others are predicted.

        Raises
        ------
        ValueError, OSError
            A single input that cannot be read or used (the message names it).
        """
        _check_precision(precision)
        if device is not None:
            self.to(device)
        if is_single(inputs):
            single = to_radiograph(inputs)  # type: ignore[arg-type]
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
                    radiographs.append(to_radiograph(x))
                except (ValueError, OSError) as exc:
                    errors[i] = SpineResult.failed(describe(x), self.schema, str(exc))
            done = iter(self._predict_radiographs(radiographs, batch_size, precision))
            yield from (errors[i] if i in errors else next(done) for i in range(len(chunk)))

    def _predict_radiographs(self, radiographs: list[Radiograph], batch_size: int,
                             precision: str) -> list[SpineResult]:
        dev = next(self.parameters()).device
        dtype = PRECISIONS[precision]
        results: list[SpineResult] = []
        for group in equal_size_batches(radiographs, batch_size):
            images = torch.stack([torch.from_numpy(robust_normalize(r.pixels))
                                  for r in group]).unsqueeze(1).to(dev)
            ctx = (torch.autocast(dev.type, dtype=dtype) if dtype is not None
                   else contextlib.nullcontext())
            with ctx:
                out = self(images.float())
            out = {k: v.cpu() if k == "mask_matrices" else v.float().cpu()  # matrices float64
                   for k, v in out.items()}
            results.extend(assemble_results(group, out, self.schema, self.options,
                                            self.detector is not None, self.shift_model))
        return results

    def calibrate_qc(self, inputs: Iterable[PipelineInput], truths: Sequence[np.ndarray], *,
                     quantile: float = 0.99, margin: float = 1.25, batch_size: int = 8
                     ) -> QCThresholds:
        """Fit the model-dependent QC thresholds, the level-presence rule and the fracture
        screen to this pipeline on annotated images.

        Predicts ``inputs``. With a detector, first chooses ``options.detector_presence`` and
        the detector's two scores (:func:`~spinelandmarks.levels.fit_presence`: the rule that
        reports exactly the annotated levels on the most images), predicting again when that
        changed them. Then keeps the levels it identified correctly (centre within half the
        true body height of the true centre) and sets ``options.qc_thresholds`` by
        :func:`~spinelandmarks.qc.calibrate_thresholds` (``steps_disagree_deg`` over the
        images with no misidentified level), and ``options.fracture_screen_loss`` by
        :func:`~spinelandmarks.anatomy.measurements.fit_fracture_screen` from every measurable
        body (all saved with the pipeline). Use images the networks were not trained on (the
        validation set): ``train`` does this itself.

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
        inputs = list(inputs)
        results = self.predict(inputs, batch_size=batch_size)
        if len(results) != len(truths):
            raise ValueError(f"{len(results)} inputs but {len(truths)} ground truths")
        if not results:
            return self.options.qc_thresholds
        truth = torch.from_numpy(np.stack(truths).astype(np.float64))
        if self.detector is not None and self._fit_presence(results, truth):
            results = self.predict(inputs, batch_size=batch_size)  # with the presence chosen

        def stack(name: str) -> Tensor:
            return torch.from_numpy(np.stack([getattr(r, name) for r in results])).double()

        def params(step: str) -> dict[str, Tensor]:
            return {k: torch.tensor([getattr(r, step)[k] for r in results], dtype=torch.float64)
                    for k in getattr(results[0], step)}

        det = self.detector is not None
        stats = qc_statistics(stack("points"), stack("points_step1"), stack("point_scores"),
                              self.schema, stack("level_boxes") if det else None,
                              stack("level_scores") if det else None)
        step1 = params("parameters_step1")
        if step1.keys() & results[0].parameters.keys():
            stats["steps_disagree_deg"] = steps_disagreement(params("parameters"), step1)
        status = level_identification(stack("points"), truth, self.schema)
        changes: dict[str, Any] = {"qc_thresholds": calibrate_thresholds(
            stats, status == 1.0, good_images=(status != 0.0).all(dim=1), quantile=quantile,
            margin=margin, base=self.options.qc_thresholds)}
        if self.schema.body_levels:
            changes["fracture_screen_loss"] = fit_fracture_screen(
                height_loss(stack("points"), self.schema).numpy(),
                height_loss(truth, self.schema).numpy())
        self.options = dataclasses.replace(self.options, **changes)
        return self.options.qc_thresholds

    def _fit_presence(self, results: Sequence[SpineResult], truth: Tensor) -> bool:
        """Choose ``detector_presence`` and the detector's thresholds on annotated images
        (:func:`~spinelandmarks.levels.fit_presence`); True when the options changed."""
        scores = torch.from_numpy(np.stack([r.level_scores for r in results])).double()
        scores = scores.nan_to_num(nan=0.0)  # 0: no box assigned
        labelled = torch.isfinite(level_centres(truth, self.schema)).all(-1)
        o = self.options
        from_detector, low, adjacent, _ = fit_presence(
            scores, scores > 0, labelled, (o.min_level_score, o.min_adjacent_score))
        chosen = dataclasses.replace(o, detector_presence=from_detector, min_level_score=low,
                                     min_adjacent_score=adjacent)
        changed = chosen != o
        self.options = chosen
        return changed


def _options(options: PipelineOptions | None, values: dict[str, Any]) -> PipelineOptions:
    """``options``, or one built from keyword values; removed options are refused by name."""
    removed = sorted(set(values) & set(REMOVED_OPTIONS))
    if removed:
        raise TypeError(f"{', '.join(removed)}: removed in spinelandmarks 0.2 (see the "
                        "CHANGELOG); the pipeline always runs without them")
    if options is not None and values:
        raise TypeError("give options= or option keywords, not both")
    return options if options is not None else PipelineOptions(**values)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
