"""The training recipe behind ``spinelandmarks train``: detector, landmark model, refiner.

Each stage trains in ``RUN/<stage>/`` with its own checkpoints; an interrupted run resumes
from ``last.ckpt`` and finished stages (marked by ``best.pt``) are skipped. At the end
``RUN/pipeline/`` holds a directory loadable by
:meth:`~spinelandmarks.pipeline.SpineLandmarkPipeline.load`, and ``RUN/config.json`` the
settings used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from ._atomic import atomic_write_text
from ._distributed import barrier, is_rank_zero
from .adaptation.shift import fit_shift_model
from .content_digest import pipeline_digest, short
from .data.datamodule import SpineDataModule
from .data.lenient import SKIPPED_FILE, skipped_summary, write_skipped
from .defaults import BUDGET_SHARES, CROP_SCALE, CROP_SIZE, INPUT_SIZE
from .inference import SpineLandmarkPipeline, load_module, save_module
from .init_from import check_init_from
from .models.base import LandmarkTask
from .models.classes import class_path, import_class
from .models.detector import VertebraDetector
from .models.landmark import CropRefiner, LandmarkModel

__all__ = ["BUDGET_SHARES", "IDENTITY_FIELDS", "STAGES", "STAGE_CLASSES", "RunMismatchError",
           "TrainConfig", "run_identity", "split_time_budget", "stage_class", "train_pipeline"]

STAGES = ("detector", "landmark", "refiner")

_log = logging.getLogger(__name__)

#: Fewer validation images than this: the QC calibration warns that its thresholds are rough.
MIN_QC_IMAGES = 10


def split_time_budget(total_s: float, stages: tuple[str, ...] = STAGES) -> dict[str, float]:
    """Split a total wall-clock budget over the stages to train, in :data:`BUDGET_SHARES`.

    Parameters
    ----------
    total_s : float
        Seconds for all the stages together (> 0).
    stages : tuple of str
        The stages that will train; the shares are renormalized over them.

    Returns
    -------
    dict of str to float
        Seconds per stage, summing to ``total_s``.

    Examples
    --------
    >>> split_time_budget(430.0)
    {'detector': 100.0, 'landmark': 210.0, 'refiner': 120.0}
    >>> {k: round(v) for k, v in split_time_budget(600.0, ("landmark", "refiner")).items()}
    {'landmark': 382, 'refiner': 218}
    """
    if not total_s > 0:
        raise ValueError(f"a time budget must be positive, got {total_s} s")
    unknown = set(stages) - set(BUDGET_SHARES)
    if unknown or not stages:
        raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {stages}")
    norm = sum(BUDGET_SHARES[s] for s in stages)
    return {s: total_s * BUDGET_SHARES[s] / norm for s in stages}


@dataclass
class TrainConfig:
    """Settings of the three-stage recipe (CLI options map one to one).

    Sizes are (H, W) pixels; epochs per stage. ``None`` epochs use ``max_epochs``.
    """

    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 30
    #: Epochs of the landmark model; ``None``: ``max_epochs``.
    landmark_epochs: int | None = None
    detector_epochs: int | None = None
    refiner_epochs: int | None = None
    image_size: tuple[int, int] = INPUT_SIZE
    crop_size: tuple[int, int] = CROP_SIZE
    crop_scale: float = CROP_SCALE
    batch_size: int = 8
    crop_batch_size: int = 32
    backbone: str = "resnet18"
    detector_backbone: str = "resnet18"
    #: Local weights of ``backbone`` for the landmark model and the refiner (not the detector,
    #: whose backbone starts from random weights or ``init_from``).
    weights_path: str | None = None
    #: Peak learning rate of the landmark model and the refiner; the detector's is its own
    #: (``detector_kwargs={"lr": ...}``).
    lr: float = 1e-3
    num_workers: int = 2
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    val_dir: str | None = None
    #: Schema name, JSON file or dict form (``LandmarkSchema.to_dict``, as ``--init-from``
    #: takes it from a pipeline); ``None``: the one stored in the annotation file, else
    #: ``lumbar_sagittal`` (:func:`~spinelandmarks.data.datamodule.schema_for`).
    schema: str | dict[str, Any] | None = None
    progress: bool = True
    #: Optional wall-clock budget per stage in seconds; the learning rate then follows a
    #: cosine over the budget (see :class:`TimeBudget`) instead of over the epochs.
    time_budget_s: dict[str, float] = field(default_factory=dict)
    #: Fit the pipeline's model-dependent QC thresholds on the validation images
    #: (:meth:`~spinelandmarks.pipeline.SpineLandmarkPipeline.calibrate_qc`).
    calibrate_qc: bool = True
    #: Fit the pipeline's shift model (``shift_score`` of each predicted image) on the
    #: training images, its threshold on the validation images
    #: (:func:`~spinelandmarks.adaptation.fit_shift_model`).
    fit_shift: bool = True
    #: Extra keyword arguments of :class:`VertebraDetector` (e.g. a smaller head for CPU).
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Train the refiner's body-mask head on the annotations' masks (COCO segmentation).
    masks: bool = False
    #: Refiner training draws the crops of deformed bodies (reference height loss >= 15 %)
    #: this many times as often, detector training each radiograph with the mean weight of
    #: its bodies (:class:`~spinelandmarks.data.datamodule.SpineDataModule`); 1 disables it.
    #: The default was chosen on the morphometry benchmark (BENCHMARKS.md); lower it for
    #: archives with more fractures (``docs/training.md``).
    deformity_weight: float = 24.0
    #: Weight of the refiner's body-height term (:class:`~spinelandmarks.models.CropRefiner`,
    #: ``docs/training.md``, "Height term"); 0 trains on the point loss alone.
    height_weight: float = 0.0
    #: A saved pipeline directory (``RUN/pipeline``, or ``RUN``) whose networks start each stage
    #: instead of random weights: fine-tuning on a few annotated images of a new source
    #: (``docs/training.md``, "Fine-tuning on a new source"). Same schema and sizes needed:
    #: :func:`~spinelandmarks.init_from.inherit_settings` takes them from the source, and
    #: :func:`train_pipeline` checks every layer before anything is written.
    init_from: str | None = None
    #: The class of each stage's module as an import path ``module:Class``: a subclass of
    #: :class:`LandmarkModel`, :class:`CropRefiner` or :class:`VertebraDetector` that takes
    #: their constructor arguments (``**kwargs``); ``None``: the library's class. The module
    #: must be importable wherever the pipeline is loaded (``docs/training.md``, "Your own
    #: module classes").
    landmark_class: str | None = None
    refiner_class: str | None = None
    detector_class: str | None = None
    #: Leave out the images whose annotations have problems (listed in
    #: ``RUN/skipped_records.csv``) instead of refusing the data set.
    skip_invalid: bool = False
    #: Cache of the decoded, normalized radiographs (:class:`~spinelandmarks.data.image_cache.ImageCache`):
    #: ``"memory"`` (per worker, within its byte budget), ``"disk"`` (memory-mapped files in
    #: ``RUN/cache``, shared by the workers and kept between stages and runs) or ``"none"``.
    cache: str = "memory"
    #: Unlabeled images of the new source (a folder, or a ``.txt`` / ``.csv`` list of paths)
    #: to self-train on with ``init_from`` as the teacher
    #: (:func:`~spinelandmarks.adaptation.self_training.train_with_unlabeled`,
    #: ``docs/new-source.md``); the annotated data may then be empty.
    unlabeled: str | None = None
    #: Rounds of self-training with ``unlabeled``: each round's student labels the archive
    #: again as the next round's teacher; the student budget is shared between the rounds.
    unlabeled_rounds: int = 1


class StageProgressBar(TQDMProgressBar):
    """One progress bar per stage, named after it (``landmark: epoch 3``); validation runs
    without a bar of its own (its loss shows on the training bar)."""

    def __init__(self, stage: str, refresh_rate: int = 5) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage

    def init_validation_tqdm(self) -> Any:
        bar = super().init_validation_tqdm()
        bar.disable = True
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.stage}: epoch {trainer.current_epoch}")


class RunMismatchError(ValueError):
    """A run directory holds weights trained from other data or settings."""


class TimeBudget(L.Callback):
    """Stop a stage after ``seconds`` and anneal the learning rate over that time.

    A cosine from the initial learning rate to 1 % of it, as a function of elapsed time
    rather than of epochs: used when a run must fit a time budget (the demo, CPU smoke runs),
    where the number of epochs is not known in advance.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._start = 0.0
        self._base: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        self._base = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        frac = min((time.monotonic() - self._start) / self.seconds, 1.0)
        factor = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac))
        for g, base in zip(trainer.optimizers[0].param_groups, self._base, strict=True):
            g["lr"] = base * factor
        if frac >= 1.0:
            trainer.should_stop = True


def _datamodule(data_dir: str, cfg: TrainConfig, task: str,
                run_dir: Path | None = None) -> SpineDataModule:
    """The stage's data; ``run_dir`` given: with the configured cache (in ``RUN/cache``)."""
    return SpineDataModule(
        data_dir, task=task,  # type: ignore[arg-type]
        # For crops the model input is the crop: keep the two hparams equal (Lightning merges
        # module and datamodule hparams for the logger and refuses conflicting values).
        input_size=cfg.crop_size if task == "crops" else cfg.image_size, crop_size=cfg.crop_size,
        batch_size=cfg.crop_batch_size if task == "crops" else cfg.batch_size,
        num_workers=cfg.num_workers, split=(0.9, 0.1, 0.0), val_dir=cfg.val_dir,
        seed=cfg.seed, persistent_workers=cfg.num_workers > 0, crop_scale=cfg.crop_scale,
        schema=cfg.schema, masks=cfg.masks and task == "crops",
        deformity_weight=cfg.deformity_weight if task in ("crops", "detection") else 1.0,
        skip_invalid=cfg.skip_invalid,
        cache=cfg.cache if run_dir is not None else "none",  # type: ignore[arg-type]
        cache_dir=str(run_dir / "cache") if run_dir is not None else None,
    )


#: The library's class of each stage, and the class a stage's own class must derive from.
STAGE_CLASSES: dict[str, type[LandmarkTask]] = {
    "detector": VertebraDetector, "landmark": LandmarkModel, "refiner": CropRefiner}


def stage_class(stage: str, cfg: TrainConfig) -> type[LandmarkTask]:
    """The module class ``stage`` trains: ``cfg.<stage>_class`` imported and checked to be a
    subclass of the stage's library class (:data:`STAGE_CLASSES`), else that class."""
    base = STAGE_CLASSES[stage]
    path: str | None = getattr(cfg, f"{stage}_class")
    if path is None:
        return base
    return import_class(path, base, what=f"--{stage}-class",
                        exclude=CropRefiner if stage == "landmark" else None)


def _module(stage: str, cfg: TrainConfig, schema: dict[str, Any]) -> LandmarkTask:
    cls: Any = stage_class(stage, cfg)
    if stage == "detector":
        return cls(schema=schema, backbone=cfg.detector_backbone,
                   input_size=cfg.image_size, **cfg.detector_kwargs)
    if stage == "landmark":
        return cls(schema=schema, backbone=cfg.backbone,
                   weights_path=cfg.weights_path, input_size=cfg.image_size, lr=cfg.lr)
    return cls(schema=schema, backbone=cfg.backbone,
               weights_path=cfg.weights_path, input_size=cfg.crop_size, lr=cfg.lr,
               masks=cfg.masks, height_weight=cfg.height_weight, crop_scale=cfg.crop_scale)


def _epochs(stage: str, cfg: TrainConfig) -> int:
    if stage == "detector" and cfg.detector_epochs is not None:
        return cfg.detector_epochs
    if stage == "refiner" and cfg.refiner_epochs is not None:
        return cfg.refiner_epochs
    if stage == "landmark" and cfg.landmark_epochs is not None:
        return cfg.landmark_epochs
    return cfg.max_epochs


def train_stage(stage: str, data_dir: str, run_dir: Path, cfg: TrainConfig) -> Path:
    """Train one stage (resuming from ``last.ckpt``); return its weights-only ``best.pt``.

    In a multi-process run every rank trains; rank 0 alone picks the best checkpoint and
    writes ``best.pt``, and every rank returns only once it is written (a barrier), so all
    ranks see the same finished stages when the next one starts.
    """
    stage_dir = run_dir / stage
    final = stage_dir / "best.pt"
    if final.is_file():
        return final
    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        atomic_write_text(stage_dir / "config.json", json.dumps(
            {"data_dir": data_dir, **asdict(cfg)}, indent=2, default=str) + "\n")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = {"detector": "detection", "landmark": "landmarks", "refiner": "crops"}[stage]
    dm = _datamodule(data_dir, cfg, task, run_dir)
    dm.setup("fit")
    model = _module(stage, cfg, dm.schema.to_dict())
    last = stage_dir / "last.ckpt"
    if cfg.init_from and not last.is_file():  # a resumed stage has its own weights
        _initialize(model, Path(cfg.init_from), stage)
    budget = cfg.time_budget_s.get(stage)
    if budget is not None:
        model.hparams["scheduler"] = "constant"  # the TimeBudget callback drives the rate
    monitor = "val/map_50" if stage == "detector" else "val/loss"
    has_val = len(dm.val_records) > 0
    ckpt = ModelCheckpoint(dirpath=stage_dir, filename="best", save_last=True,
                           enable_version_counter=False,  # resume overwrites last.ckpt
                           monitor=monitor if has_val else None,
                           mode="max" if stage == "detector" else "min")
    callbacks: list[Any] = [ckpt]
    if cfg.progress:
        callbacks.append(StageProgressBar(stage))
    if budget is not None:
        callbacks.append(TimeBudget(budget))
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=cfg.precision,  # type: ignore[arg-type]
        max_epochs=_epochs(stage, cfg) if budget is None else 10_000,
        default_root_dir=stage_dir, callbacks=callbacks,
        logger=L.pytorch.loggers.CSVLogger(stage_dir, name="logs"),
        enable_progress_bar=cfg.progress, enable_model_summary=False,
        limit_val_batches=1.0 if has_val else 0, num_sanity_val_steps=0,
        deterministic=False, log_every_n_steps=5,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    if is_rank_zero():
        best = ckpt.best_model_path or ckpt.last_model_path
        if best:
            model = load_module(best)
        save_module(model, final)
    barrier()
    return final


def _initialize(model: LandmarkTask, source: Path, stage: str) -> None:
    """Copy the weights of ``stage``'s network in the saved pipeline (or run) ``source`` into
    ``model``, which must be of the same kind and shape."""
    if not (source / "pipeline.json").is_file() and (source / "pipeline").is_dir():
        source = source / "pipeline"  # a run directory
    path = source / f"{stage}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --init-from needs a saved pipeline "
                                "directory (RUN/pipeline) with this stage's network")
    saved = load_module(path)
    if type(saved) is not type(model):
        raise ValueError(f"{path}: a {type(saved).__name__}, not a {type(model).__name__}; "
                         f"train with --{stage}-class {class_path(type(saved))} to start "
                         "from it")
    try:
        model.load_state_dict(saved.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{path}: its network does not fit this run's settings (schema, "
                         f"backbone, sizes): {str(exc).splitlines()[0]}") from exc


def train_pipeline(data_dir: str | os.PathLike[str] | None, run_dir: str | os.PathLike[str],
                   cfg: TrainConfig | None = None, *, overwrite: bool = False) -> Path:
    """Train the stages of ``cfg.stages`` in turn and assemble ``RUN/pipeline``.

    The data are validated first (every problem listed at once). Rerunning into the same
    ``run_dir`` resumes it: finished stages are kept, an interrupted one continues from its
    ``last.ckpt``. ``RUN/config.json`` records the settings and the run's identity (data
    hashes and the :data:`IDENTITY_FIELDS`); each stage's ``config.json`` the settings it was
    trained with.

    Parameters
    ----------
    data_dir : str or PathLike or None
        Dataset root (``annotations.json`` + images); None (or an empty dataset) only with
        ``cfg.unlabeled``.
    run_dir : str or PathLike
        Run directory.
    cfg : TrainConfig, optional
    overwrite : bool
        Clear a run made from other data or settings and train it anew, instead of refusing.

    Returns
    -------
    Path
        The pipeline directory.

    Raises
    ------
    AnnotationError
        The data have problems (missing or unreadable images, NaN labelled points, ...).
    RunMismatchError
        ``run_dir`` holds a run trained from other data or settings (without ``overwrite``).
    ValueError
        ``cfg.init_from``'s networks do not fit this run's settings (the message names the
        layer, both shapes and the source's settings; nothing is written).
    """
    cfg = cfg or TrainConfig()
    if cfg.unlabeled is not None:  # imported here: self-training builds on this module
        from .adaptation.self_training import SelfTrainingConfig, train_with_unlabeled

        return train_with_unlabeled(data_dir, run_dir, cfg,
                                    SelfTrainingConfig(rounds=cfg.unlabeled_rounds),
                                    overwrite=overwrite)
    if data_dir is None:
        raise ValueError("train_pipeline needs a dataset, or cfg.unlabeled (and cfg.init_from) "
                         "to adapt from unlabeled images alone")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
    if "landmark" not in cfg.stages:  # checked before hours of training, not after
        raise ValueError("the landmark stage is required to build a pipeline")
    for stage in cfg.stages:
        stage_class(stage, cfg)  # an unimportable class fails before any training
    run = Path(run_dir)
    dm = _datamodule(str(data_dir), cfg, "landmarks")
    dm.setup("fit")  # every data problem, at once
    if not dm.train_records:
        raise ValueError(f"{Path(data_dir) / 'annotations.json'}: the data set has no image "
                         "to train on; check the path, or add annotated images")
    if cfg.init_from is not None:  # before anything is written
        check_init_from(cfg, dm.schema, {stage: _module(stage, cfg, dm.schema.to_dict())
                                         for stage in cfg.stages})
    if is_rank_zero():  # other ranks start later (at the first fit) and must not clear the run
        identity = run_identity(data_dir, cfg)
        _check_run(run, identity, overwrite)
        _check_finished_stages(run, cfg)
        run.mkdir(parents=True, exist_ok=True)
        if cfg.skip_invalid:
            write_skipped(run / SKIPPED_FILE, dm.skipped)
            if dm.skipped:
                _log.warning("%s (--skip-invalid)", skipped_summary(dm.skipped, dm.n_read,
                                                                    run / SKIPPED_FILE))
        atomic_write_text(run / "config.json", json.dumps(
            {"data_dir": str(data_dir), **asdict(cfg), "identity": identity}, indent=2,
            default=str) + "\n")
    weights = {stage: train_stage(stage, str(data_dir), run, cfg) for stage in cfg.stages}
    if not is_rank_zero():
        barrier()  # until rank 0 has calibrated and saved the pipeline
        return run / "pipeline"
    out = _assemble(weights, str(data_dir), run, cfg)
    barrier()
    return out


def _assemble(weights: dict[str, Path], data_dir: str, run: Path, cfg: TrainConfig) -> Path:
    """Build the pipeline from the stages' ``best.pt``, calibrate its QC and save it
    (rank 0 only)."""
    landmark = load_module(weights["landmark"])
    refiner = load_module(weights["refiner"]) if "refiner" in weights else None
    detector = load_module(weights["detector"]) if "detector" in weights else None
    pipe = SpineLandmarkPipeline(landmark, refiner, detector)  # type: ignore[arg-type]
    if cfg.calibrate_qc:
        _calibrate_qc(pipe, data_dir, cfg)
    if cfg.fit_shift:
        _fit_shift(pipe, data_dir, cfg)
    return pipe.save(run / "pipeline")


#: Settings that change what the weights of a run are: a run trained with other values (or on
#: other data) is not resumed into.
IDENTITY_FIELDS = ("schema", "image_size", "crop_size", "crop_scale", "backbone",
                   "detector_backbone", "weights_path", "detector_kwargs", "masks", "init_from",
                   "landmark_class", "refiner_class", "detector_class")


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_identity(data_dir: str | os.PathLike[str], cfg: TrainConfig) -> dict[str, Any]:
    """What a run's weights depend on: the data (paths and annotation file hashes) and the
    :data:`IDENTITY_FIELDS` of the configuration, as plain JSON values."""
    ident: dict[str, Any] = {
        "data_dir": str(Path(data_dir).resolve()),
        "annotations_sha256": _sha256(Path(data_dir) / "annotations.json"),
        "val_dir": str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None,
        "val_annotations_sha256": _sha256(Path(cfg.val_dir) / "annotations.json")
        if cfg.val_dir else None}
    settings = asdict(cfg)
    ident.update({k: settings[k] for k in IDENTITY_FIELDS})
    ident.update(_content_identity(data_dir, cfg))
    return json.loads(json.dumps(ident, default=str))  # tuples -> lists, as stored


def _content_identity(data_dir: str | os.PathLike[str], cfg: TrainConfig) -> dict[str, Any]:
    """What the paths of a run do not say: the images' sizes and modification times, and the
    content digest of the ``--init-from`` pipeline (a source changed in place is another
    source)."""
    ident: dict[str, Any] = {"images_stat_sha256": _images_stat_digest(Path(data_dir))}
    if cfg.val_dir:
        ident["val_images_stat_sha256"] = _images_stat_digest(Path(cfg.val_dir))
    if cfg.init_from:
        source = Path(cfg.init_from)
        if not (source / "pipeline.json").is_file() and (source / "pipeline").is_dir():
            source = source / "pipeline"
        ident["init_from_sha256"] = (pipeline_digest(source)
                                     if (source / "pipeline.json").is_file() else None)
    return ident


def _images_stat_digest(root: Path) -> str | None:
    """SHA-256 of ``file_name|size|mtime_ns`` of every image the annotation file names."""
    try:
        doc = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
        names = sorted(str(im["file_name"]) for im in doc.get("images", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    h = hashlib.sha256()
    for name in names:
        try:
            st = (root / name).stat()
        except OSError:
            continue
        h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _check_run(run: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume a run made from other data or settings; or clear it (``overwrite``)."""
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        return
    if overwrite:
        for item in (*STAGES, "pipeline"):
            shutil.rmtree(run / item, ignore_errors=True)
        cfg_path.unlink()
        return
    stored = json.loads(cfg_path.read_text()).get("identity")
    if stored is None:  # a run from before identities were recorded
        return
    # a setting a run from an older version did not record is taken as unchanged
    changed = [_change(k, stored[k], v) for k, v in identity.items()
               if k in stored and stored[k] != v]
    if changed:
        raise RunMismatchError(
            f"{run} was trained with other data or settings ({'; '.join(changed)}): "
            "use a new --out, or --overwrite to start this run over")


def _stage_length(stage: str, settings: dict[str, Any]) -> str:
    """How long a stage trains under ``settings`` (a TrainConfig as a dict): ``3 epoch(s)`` or
    ``a 90 s time budget``."""
    budget = (settings.get("time_budget_s") or {}).get(stage)
    if budget is not None:
        return f"a {float(budget):g} s time budget"
    epochs = settings.get(f"{stage}_epochs")
    return f"{settings['max_epochs'] if epochs is None else epochs} epoch(s)"


def _check_finished_stages(run: Path, cfg: TrainConfig) -> None:
    """A finished stage is never extended: asking it for another length is refused, saying
    that nothing was trained and how to train longer (before anything is written).

    Continuing a finished stage would restart a learning-rate schedule that has already
    annealed to its floor; a clean way to train longer is to start over (``--overwrite``) or
    to fine-tune from the finished weights in a new run (``--init-from``).
    """
    now = asdict(cfg)
    finished = []
    for stage in cfg.stages:
        stage_cfg = run / stage / "config.json"
        if not ((run / stage / "best.pt").is_file() and stage_cfg.is_file()):
            continue
        try:
            stored = json.loads(stage_cfg.read_text(encoding="utf-8"))
            before = _stage_length(stage, stored)
        except (OSError, ValueError, KeyError):
            continue
        if before != _stage_length(stage, now):
            finished.append(f"{stage} finished with {before}, "
                            f"{_stage_length(stage, now)} asked")
    if finished:
        raise RunMismatchError(
            f"{run}: {'; '.join(finished)}. Nothing was trained: a finished stage is not "
            "extended. To train longer, --overwrite (start this run over with the new length), "
            f"or train into a new --out with --init-from {run} (continue from its weights)")


#: What a changed content digest means, for the refusal message.
_DIGEST_MEANING = {"annotations_sha256": "the annotation file changed",
                   "val_annotations_sha256": "the validation annotation file changed",
                   "images_stat_sha256": "images changed in place (size or time)",
                   "val_images_stat_sha256": "validation images changed in place",
                   "init_from_sha256": "the --init-from pipeline changed in place"}


def _change(key: str, before: Any, now: Any) -> str:
    """One difference between a stored run identity and the current one, as a user reads it."""
    if key in _DIGEST_MEANING:
        return (f"{key}: {short(before)} in the run, {short(now)} now "
                f"({_DIGEST_MEANING[key]})")
    return f"{key}: {before!r} in the run, {now!r} now"


def _calibrate_qc(pipe: SpineLandmarkPipeline, data_dir: str, cfg: TrainConfig) -> None:
    """Fit the pipeline's model-dependent QC thresholds and fracture screen on the validation
    images."""
    dm = _datamodule(data_dir, cfg, "landmarks")
    dm.setup("fit")
    if not dm.val_records:
        _log.warning("no validation images: the QC thresholds are left at their defaults; give "
                     "validation images (--val) to fit them to this pipeline")
        return
    gpu = cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    # the device Lightning gave this rank (set by a fit), not always cuda:0
    pipe.to(torch.device("cuda", torch.cuda.current_device()) if gpu else "cpu")
    truths = [np.where((r.visibility > 0)[:, None], r.points, np.nan) for r in dm.val_records]
    n = len(truths)
    if n < MIN_QC_IMAGES:
        _log.warning("QC thresholds are fitted on %d validation image(s), fewer than %d: they "
                     "are a rough guess (more review flags or fewer than they should be); give "
                     "more validation images (--val) or recalibrate later "
                     "(SpineLandmarkPipeline.calibrate_qc)", n, MIN_QC_IMAGES)
    _log.info("QC calibration: predicting %d validation image(s) with the new pipeline ...", n)
    t0 = time.perf_counter()
    th = pipe.calibrate_qc(dm.image_paths("val"), truths, batch_size=cfg.batch_size)
    pipe.to("cpu")
    o = pipe.options
    presence = (f"the detector's (scores {o.min_level_score:.2f} / {o.min_adjacent_score:.2f})"
                if o.detector_presence else "every level (the detector only feeds QC)")
    _log.info("QC thresholds fitted on %d validation images in %.0f s: spread %.2f, detector "
              "distance %.2f, refinement jump %.2f body heights, steps disagree %.1f deg; "
              "fracture screen at %.3f height loss; levels present: %s", n,
              time.perf_counter() - t0, th.max_spread_frac, th.detector_distance_frac,
              th.refinement_jump_frac, th.steps_disagree_deg, o.fracture_screen_loss,
              presence if pipe.detector is not None else "every level (no detector)")


def _fit_shift(pipe: SpineLandmarkPipeline, data_dir: str, cfg: TrainConfig) -> None:
    """Fit the pipeline's shift model on the training images (threshold on the validation
    images); without validation images there is none."""
    dm = _datamodule(data_dir, cfg, "landmarks")
    dm.setup("fit")
    if not dm.val_records or len(dm.train_records) < 2:
        _log.info("no shift model: it needs validation images")
        return
    gpu = cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    pipe.to(torch.device("cuda", torch.cuda.current_device()) if gpu else "cpu")
    model = fit_shift_model(pipe, dm.image_paths("train"), dm.image_paths("val"),
                            batch_size=cfg.batch_size, seed=cfg.seed)
    pipe.to("cpu")
    _log.info("shift model fitted on %d training images; threshold %.2f on %d validation "
              "images", model.num_train, model.threshold, model.num_val)
