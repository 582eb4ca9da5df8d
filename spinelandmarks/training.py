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
from .data.datamodule import SpineDataModule
from .models.base import LandmarkTask
from .models.detector import VertebraDetector
from .models.landmark import CropRefiner, LandmarkModel
from .pipeline import SpineLandmarkPipeline, load_module, save_module

__all__ = ["BUDGET_SHARES", "IDENTITY_FIELDS", "STAGES", "RunMismatchError", "TrainConfig",
           "run_identity", "split_time_budget", "train_pipeline"]

STAGES = ("detector", "landmark", "refiner")

_log = logging.getLogger(__name__)

#: Share of a total time budget given to each stage (the demo's CPU split, 100 : 210 : 120 s).
BUDGET_SHARES: dict[str, float] = {"detector": 100 / 430, "landmark": 210 / 430,
                                   "refiner": 120 / 430}


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
    detector_epochs: int | None = None
    refiner_epochs: int | None = None
    image_size: tuple[int, int] = (512, 384)
    crop_size: tuple[int, int] = (128, 128)
    crop_scale: float = 1.6
    batch_size: int = 8
    crop_batch_size: int = 32
    backbone: str = "resnet18"
    detector_backbone: str = "resnet18"
    weights_path: str | None = None
    lr: float = 1e-3
    num_workers: int = 2
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    val_dir: str | None = None
    #: Schema name or JSON file; ``None``: the one stored in the annotation file, else
    #: ``lumbar_sagittal`` (:func:`~spinelandmarks.data.datamodule.schema_for`).
    schema: str | None = None
    progress: bool = True
    #: Optional wall-clock budget per stage in seconds; the learning rate then follows a
    #: cosine over the budget (see :class:`TimeBudget`) instead of over the epochs.
    time_budget_s: dict[str, float] = field(default_factory=dict)
    #: Fit the pipeline's model-dependent QC thresholds on the validation images
    #: (:meth:`~spinelandmarks.pipeline.SpineLandmarkPipeline.calibrate_qc`).
    calibrate_qc: bool = True
    #: Extra keyword arguments of :class:`VertebraDetector` (e.g. a smaller head for CPU).
    detector_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Train the refiner's body-mask head on the annotations' masks (COCO segmentation).
    masks: bool = False
    #: Refiner training draws the crops of deformed bodies (reference height loss >= 15 %)
    #: this many times as often, detector training each radiograph with the mean weight of
    #: its bodies (:class:`~spinelandmarks.data.datamodule.SpineDataModule`); 1 disables it.
    #: 24 makes about half the crops deformed bodies when 4 % of the bodies are (the
    #: phantoms' rate); lower it for archives with more fractures (``docs/training.md``).
    deformity_weight: float = 24.0
    #: Weight of the refiner's body-height term (:class:`~spinelandmarks.models.CropRefiner`,
    #: ``docs/training.md``, "Height term"); 0 trains on the point loss alone.
    height_weight: float = 0.0
    #: A saved pipeline directory (``RUN/pipeline``, or ``RUN``) whose networks start each stage
    #: instead of random weights: fine-tuning on a few annotated images of a new source
    #: (``docs/training.md``, "Fine-tuning on a new source"). Same schema and sizes needed.
    init_from: str | None = None
    #: Unlabeled images of the new source (a folder, or a ``.txt`` / ``.csv`` list of paths)
    #: to self-train on with ``init_from`` as the teacher
    #: (:func:`~spinelandmarks.adaptation.self_training.train_with_unlabeled`,
    #: ``docs/new-source.md``); the annotated data may then be empty.
    unlabeled: str | None = None


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


def _datamodule(data_dir: str, cfg: TrainConfig, task: str) -> SpineDataModule:
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
    )


def _module(stage: str, cfg: TrainConfig, schema: dict[str, Any]) -> LandmarkTask:
    if stage == "detector":
        return VertebraDetector(schema=schema, backbone=cfg.detector_backbone,
                                input_size=cfg.image_size, **cfg.detector_kwargs)
    if stage == "landmark":
        return LandmarkModel(schema=schema, backbone=cfg.backbone, weights_path=cfg.weights_path,
                             input_size=cfg.image_size, lr=cfg.lr)
    return CropRefiner(schema=schema, backbone=cfg.backbone, weights_path=cfg.weights_path,
                       input_size=cfg.crop_size, lr=cfg.lr, masks=cfg.masks,
                       height_weight=cfg.height_weight)


def _epochs(stage: str, cfg: TrainConfig) -> int:
    if stage == "detector" and cfg.detector_epochs is not None:
        return cfg.detector_epochs
    if stage == "refiner" and cfg.refiner_epochs is not None:
        return cfg.refiner_epochs
    return cfg.max_epochs


def train_stage(stage: str, data_dir: str, run_dir: Path, cfg: TrainConfig) -> Path:
    """Train one stage (resuming from ``last.ckpt``); return its weights-only ``best.pt``."""
    stage_dir = run_dir / stage
    final = stage_dir / "best.pt"
    if final.is_file():
        return final
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage_dir / "config.json", json.dumps(
        {"data_dir": data_dir, **asdict(cfg)}, indent=2, default=str) + "\n")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = {"detector": "detection", "landmark": "landmarks", "refiner": "crops"}[stage]
    dm = _datamodule(data_dir, cfg, task)
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
    best = ckpt.best_model_path or ckpt.last_model_path
    if trainer.global_rank == 0:
        if best:
            model = load_module(best)  # type: ignore[assignment]
        save_module(model, final)
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
        raise ValueError(f"{path}: a {type(saved).__name__}, not a {type(model).__name__}")
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
    """
    cfg = cfg or TrainConfig()
    if cfg.unlabeled is not None:  # imported here: self-training builds on this module
        from .adaptation.self_training import train_with_unlabeled

        return train_with_unlabeled(data_dir, run_dir, cfg, overwrite=overwrite)
    if data_dir is None:
        raise ValueError("train_pipeline needs a dataset, or cfg.unlabeled (and cfg.init_from) "
                         "to adapt from unlabeled images alone")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
    if "landmark" not in cfg.stages:  # checked before hours of training, not after
        raise ValueError("the landmark stage is required to build a pipeline")
    run = Path(run_dir)
    _datamodule(str(data_dir), cfg, "landmarks").setup("fit")  # every data problem, at once
    identity = run_identity(data_dir, cfg)
    _check_run(run, identity, overwrite)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "config.json", json.dumps(
        {"data_dir": str(data_dir), **asdict(cfg), "identity": identity}, indent=2,
        default=str) + "\n")
    weights = {stage: train_stage(stage, str(data_dir), run, cfg) for stage in cfg.stages}
    landmark = load_module(weights["landmark"])
    refiner = load_module(weights["refiner"]) if "refiner" in weights else None
    detector = load_module(weights["detector"]) if "detector" in weights else None
    pipe = SpineLandmarkPipeline(landmark, refiner, detector,  # type: ignore[arg-type]
                                 crop_scale=cfg.crop_scale)
    if cfg.calibrate_qc:
        _calibrate_qc(pipe, str(data_dir), cfg)
    return pipe.save(run / "pipeline")


#: Settings that change what the weights of a run are: a run trained with other values (or on
#: other data) is not resumed into.
IDENTITY_FIELDS = ("schema", "image_size", "crop_size", "crop_scale", "backbone",
                   "detector_backbone", "weights_path", "detector_kwargs", "masks", "init_from")


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
    return json.loads(json.dumps(ident, default=str))  # tuples -> lists, as stored


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
    changed = [f"{k}: {stored.get(k)!r} in the run, {v!r} now" for k, v in identity.items()
               if k in stored and stored[k] != v]
    if changed:
        raise RunMismatchError(
            f"{run} was trained with other data or settings ({'; '.join(changed)}): "
            "use a new --out, or --overwrite to start this run over")


def _calibrate_qc(pipe: SpineLandmarkPipeline, data_dir: str, cfg: TrainConfig) -> None:
    """Fit the pipeline's model-dependent QC thresholds and fracture screen on the validation
    images."""
    dm = _datamodule(data_dir, cfg, "landmarks")
    dm.setup("fit")
    if not dm.val_records:
        return
    gpu = cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    pipe.to("cuda" if gpu else "cpu")
    truths = [np.where((r.visibility > 0)[:, None], r.points, np.nan) for r in dm.val_records]
    th = pipe.calibrate_qc(dm.image_paths("val"), truths, batch_size=cfg.batch_size)
    pipe.to("cpu")
    _log.info("QC thresholds fitted on %d validation images: spread %.2f, detector distance "
              "%.2f, refinement jump %.2f body heights; fracture screen at %.3f height loss",
              len(truths), th.max_spread_frac, th.detector_distance_frac,
              th.refinement_jump_frac, pipe.fracture_screen_loss)
