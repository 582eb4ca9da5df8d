"""Lightning DataModule over COCO-keypoint datasets (whole images, detector targets, crops)."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..defaults import CROP_SCALE, CROP_SIZE, INPUT_SIZE
from ..schema import LUMBAR_SAGITTAL, LandmarkSchema, resolve_schema
from .annotations import AnnotationError, AnnotationProblem, ImageRecord, read_coco_problems
from .augment import AugmentConfig
from .batch import LandmarkBatch, collate
from .datasets import CropDataset, DetectionDataset, LandmarkDataset
from .image_cache import CacheMode
from .lenient import clip_to_border, leave_out_invalid
from .samplers import EpochSampler, GroupedEpochSampler
from .splits import split_records

__all__ = ["SpineDataModule", "schema_for", "seed_worker"]

Task = Literal["landmarks", "detection", "crops"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global RNGs from the worker's torch seed.

    The datasets do not use global RNGs (each sample has its own generators), but third-party
    code might; this keeps it reproducible and different between workers.
    """
    del worker_id
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002  (the global RNG is what third-party code uses)
    random.seed(s)


def schema_for(schema: LandmarkSchema | dict[str, Any] | str | None,
               annotation_files: Sequence[Path] = ()) -> LandmarkSchema:
    """The given schema (see :func:`~spinelandmarks.schema.resolve_schema`), or for ``None``
    the first annotation file's ``info.schema`` (written by
    :func:`~spinelandmarks.data.annotations.write_coco`), else ``LUMBAR_SAGITTAL``."""
    if schema is not None:
        return resolve_schema(schema)
    for f in annotation_files:
        try:
            info = json.loads(Path(f).read_text(encoding="utf-8")).get("info", {})
            if isinstance(info, dict) and isinstance(info.get("schema"), dict):
                return LandmarkSchema.from_dict(info["schema"])
        except (OSError, ValueError):
            continue
    return LUMBAR_SAGITTAL


class SpineDataModule(L.LightningDataModule):
    """Train / validation / test / predict loaders yielding :class:`LandmarkBatch`.

    Parameters
    ----------
    data_dir : str or list of str
        Dataset roots (``annotations.json`` + images, CONVENTIONS section 3); several are
        concatenated.
    schema : LandmarkSchema, dict, str or None
        A schema, its dict form, a registered name or a schema JSON file. None: the schema stored in the first ``annotations.json`` (``info.schema``), else
        ``LUMBAR_SAGITTAL``. Saved in the hyperparameters as a dict.
    task : {"landmarks", "detection", "crops"}
        Which dataset: :class:`LandmarkDataset`, :class:`DetectionDataset` or
        :class:`CropDataset`.
    input_size : (H, W)
        Whole-image model input size.
    crop_size : (H, W)
        Crop size (task ``"crops"``).
    batch_size, num_workers : int
    split : (float, float, float)
        Train / validation / test fractions of a patient-aware split
        (:func:`~spinelandmarks.data.splits.split_records`). A set given by ``val_dir`` or
        ``test_dir`` takes no share of ``data_dir``; the remaining fractions are renormalized.
    val_dir, test_dir : str or list of str, optional
        Separate validation / test datasets.
    seed : int
        Seed of the split, the shuffling and the augmentation.
    cache : {"none", "memory", "disk"}
        Image cache of the datasets (:class:`~spinelandmarks.data.image_cache.ImageCache`): each
        radiograph is decoded and normalized once, then kept (uint16) at the resolution the
        samples need; the training crops come grouped by radiograph
        (:class:`~spinelandmarks.data.samplers.GroupedEpochSampler`).
    cache_dir : str, optional
        Folder of the ``"disk"`` cache (default: ``ImageCache``'s).
    cache_bytes : int, optional
        Byte budget of a ``"memory"`` cache, per process (each worker has its own).
    pin_memory : bool
        Page-locked batches (only when CUDA is available).
    persistent_workers : bool
        Keep workers between epochs (only with ``num_workers > 0``).
    augment : bool
        Training augmentation (``AugmentConfig()``); validation and test are never augmented.
    crop_scale : float
        Crop side / body extent.
    crop_jitter : (float, float, float)
        ``(center_frac, scale_frac, angle_deg)`` of the training crops.
    masks : bool
        ``task="crops"``: batches also carry each level's body mask in the crop
        (``body_masks``, ``has_masks``) from the records' ``masks``.
    deformity_weight : float
        Training crops of deformed bodies (reference height loss of 15 % or more,
        :meth:`~spinelandmarks.data.datasets.CropDataset.deformity_weights`) are drawn this
        many times as often as the others; a whole radiograph is drawn with the mean weight
        of its bodies (:meth:`~spinelandmarks.data.datasets.LandmarkDataset.deformity_weights`).
        1 draws every sample once per epoch.
    skip_invalid : bool
        Leave out the records with annotation problems (listed in :attr:`skipped`) instead of
        refusing the data; problems that belong to no record still raise. Labelled points just
        outside their image are clipped onto its border either way
        (:func:`~spinelandmarks.data.lenient.clip_to_border`).

    Attributes
    ----------
    schema : LandmarkSchema
    train_records, val_records, test_records : list of ImageRecord
        Filled by :meth:`setup`.
    skipped : list of AnnotationProblem
        With ``skip_invalid``: the problems of the records left out (filled by :meth:`setup`).
    n_read : int
        Records read, before any was left out.
    """

    def __init__(self, data_dir: str | list[str],
                 schema: LandmarkSchema | dict[str, Any] | str | None = None,
                 task: Task = "landmarks", input_size: tuple[int, int] = INPUT_SIZE,
                 crop_size: tuple[int, int] = CROP_SIZE, batch_size: int = 8,
                 num_workers: int = 2, split: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 val_dir: str | list[str] | None = None, test_dir: str | list[str] | None = None,
                 seed: int = 0, cache: CacheMode = "none", pin_memory: bool = True,
                 persistent_workers: bool = True, augment: bool = True,
                 crop_scale: float = CROP_SCALE,
                 crop_jitter: tuple[float, float, float] = (0.1, 0.1, 8.0),
                 masks: bool = False, deformity_weight: float = 1.0,
                 skip_invalid: bool = False,
                 cache_dir: str | None = None, cache_bytes: int | None = None) -> None:
        super().__init__()
        if task not in ("landmarks", "detection", "crops"):
            raise ValueError(f"task must be 'landmarks', 'detection' or 'crops', got {task!r}")
        self.data_dirs = self._dirs(data_dir)
        self.val_dirs = self._dirs(val_dir) if val_dir is not None else []
        self.test_dirs = self._dirs(test_dir) if test_dir is not None else []
        self.schema = schema_for(schema, [d / "annotations.json" for d in self.data_dirs])
        self.save_hyperparameters(ignore=["schema"])
        self.hparams["schema"] = self.schema.to_dict()
        self.task: Task = task
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split = tuple(float(f) for f in split)
        self.seed = int(seed)
        self.cache: CacheMode = cache
        self.cache_dir = cache_dir
        self.cache_bytes = cache_bytes
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.augment = bool(augment)
        self.crop_scale = float(crop_scale)
        self.masks = bool(masks)
        if not deformity_weight > 0:
            raise ValueError(f"deformity_weight must be positive, got {deformity_weight}")
        self.deformity_weight = float(deformity_weight)
        self.skip_invalid = bool(skip_invalid)
        self.skipped: list[AnnotationProblem] = []
        self.n_read = 0
        self.crop_jitter = tuple(float(j) for j in crop_jitter)
        self.train_records: list[ImageRecord] = []
        self.val_records: list[ImageRecord] = []
        self.test_records: list[ImageRecord] = []
        self._roots: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
        self._datasets: dict[str, Dataset[dict[str, Any]]] = {}
        self._is_setup = False

    @staticmethod
    def _dirs(d: str | Sequence[str]) -> list[Path]:
        return [Path(d)] if isinstance(d, (str, Path)) else [Path(x) for x in d]

    def _read(self, dirs: Sequence[Path]) -> tuple[list[ImageRecord], list[Path]]:
        """Records of every dataset root, validated up front (image files exist and their
        headers match, labelled coordinates finite and inside, ids unique): every problem of
        every root is raised at once, before any training starts."""
        records: list[ImageRecord] = []
        roots: list[Path] = []
        problems: list[AnnotationProblem] = []
        for d in dirs:
            src = str(d / "annotations.json")
            try:
                recs, found = read_coco_problems(
                    d / "annotations.json", self.schema, root=d, validate=True,
                    prepare=functools.partial(clip_to_border, schema=self.schema, source=src))
            except AnnotationError as exc:
                problems += exc.problems
                continue
            self.n_read += len(recs)
            if found and self.skip_invalid:
                recs, left_out = leave_out_invalid(recs, found, src)
                self.skipped += left_out
            elif found:
                problems += found
                continue
            records += recs
            roots += [d] * len(recs)
        if problems:
            raise AnnotationError(problems, ", ".join(str(d / "annotations.json")
                                                      for d in dirs))
        return records, roots

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read the annotations and split them (once; later calls only build datasets)."""
        if not self._is_setup:
            records, roots = self._read(self.data_dirs)
            root_of = {id(r): p for r, p in zip(records, roots, strict=True)}
            fr = list(self.split)
            if self.val_dirs:
                fr[1] = 0.0
            if self.test_dirs:
                fr[2] = 0.0
            total = sum(fr)
            if total <= 0:
                raise ValueError(f"split {self.split} leaves no training share")
            fr = [f / total for f in fr]
            train, val, test = split_records(records, (fr[0], fr[1], fr[2]), self.seed)
            if self.val_dirs:
                val, val_roots = self._read(self.val_dirs)
            else:
                val_roots = [root_of[id(r)] for r in val]
            if self.test_dirs:
                test, test_roots = self._read(self.test_dirs)
            else:
                test_roots = [root_of[id(r)] for r in test]
            self.train_records, self.val_records, self.test_records = train, val, test
            self._roots = {"train": [root_of[id(r)] for r in train], "val": val_roots,
                           "test": test_roots}
            self._is_setup = True
        self._datasets = {}

    def image_paths(self, which: Literal["train", "val", "test"]) -> list[Path]:
        """The image files of a split's records, in record order."""
        if not self._is_setup:
            self.setup()
        recs = {"train": self.train_records, "val": self.val_records,
                "test": self.test_records}[which]
        return [root / r.file_name for r, root in zip(recs, self._roots[which], strict=True)]

    def dataset(self, which: Literal["train", "val", "test"]) -> Dataset[dict[str, Any]]:
        """The dataset of one split (built on first use)."""
        if not self._is_setup:
            self.setup()
        if which not in self._datasets:
            recs = {"train": self.train_records, "val": self.val_records,
                    "test": self.test_records}[which]
            train = which == "train"
            aug: AugmentConfig | bool = self.augment if train else False
            roots = self._roots[which]
            if self.task == "crops":
                self._datasets[which] = CropDataset(
                    recs, roots, self.schema, self.crop_size, self.crop_scale, self.crop_jitter,
                    train=train and self.augment, augment=aug, cache=self.cache,
                    cache_dir=self.cache_dir, seed=self.seed, masks=self.masks,
                    cache_bytes=self.cache_bytes)
            else:
                cls = DetectionDataset if self.task == "detection" else LandmarkDataset
                self._datasets[which] = cls(recs, roots, self.schema, self.input_size,
                                            train=train, augment=aug, cache=self.cache,
                                            cache_dir=self.cache_dir, seed=self.seed,
                                            cache_bytes=self.cache_bytes)
        return self._datasets[which]

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, which: Literal["train", "val", "test"]) -> DataLoader[LandmarkBatch]:
        ds = self.dataset(which)
        train = which == "train"
        weights = (ds.deformity_weights(self.deformity_weight)
                   if train and isinstance(ds, CropDataset | LandmarkDataset)
                   and self.deformity_weight != 1.0 else None)
        sampler = (GroupedEpochSampler(ds.groups, shuffle=train, seed=self.seed, weights=weights)
                   if isinstance(ds, CropDataset) else
                   EpochSampler(len(ds), shuffle=train, seed=self.seed,  # type: ignore[arg-type]
                                weights=weights))
        workers = self.num_workers
        return DataLoader(
            ds, batch_size=self.batch_size, sampler=sampler,  # type: ignore[arg-type]
            num_workers=workers, collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed), drop_last=False)

    def train_dataloader(self) -> DataLoader[LandmarkBatch]:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[LandmarkBatch]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[LandmarkBatch]:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[LandmarkBatch]:
        """The test set, in order and without augmentation."""
        return self._loader("test")
