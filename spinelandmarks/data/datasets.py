"""Torch datasets of whole radiographs, detector targets and per-vertebra crops.

Their augmentation is in :mod:`~spinelandmarks.data.augment`, the decoded-radiograph cache in
:mod:`~spinelandmarks.data.image_cache` and the epoch samplers in
:mod:`~spinelandmarks.data.samplers` (the names are also importable from here).

Every dataset returns a dict with the keys of :func:`spinelandmarks.data.batch.collate`:

``image``
    (1, H, W) float32 tensor in ``[0, 1]``.
``points``
    (P, 2) float32 model-input pixels (the conventions' continuous convention), NaN where the
    point is absent or was moved out of the image by augmentation.
``visibility``
    (P,) int64, 0 wherever ``points`` is NaN.
``matrix``
    (3, 3) float64 original-image pixels -> model-input pixels. It is *exact*, augmentation
    included: ``transform_points(record.points, matrix) == points`` for every labelled point
    that stayed in the image.
``pixel_spacing``
    (2,) float32 ``(row_mm, col_mm)`` of the original image, NaN when unknown.
``image_id``
    ``record.file_name``.

plus ``boxes`` / ``labels`` (:class:`DetectionDataset`) and ``level`` (:class:`CropDataset`).

Geometry
--------
Pixels are only ever resampled through matrices: the letterbox resize uses ``cv2.resize``
(``INTER_AREA`` when downsampling, ``INTER_LINEAR`` otherwise, both consistent with the
pixel-edge convention for an explicit ``dsize``) to the integer size that
:func:`~spinelandmarks.geometry.letterbox_matrix` reports, then integer padding. Geometric
augmentation draws a random similarity (rotation, isotropic scale, shift, horizontal flip)
about the centre of the model input, composes it with the letterbox matrix and warps the
resized image once with ``cv2.warpAffine``. Crops are warped from the full-resolution image at
an integer multiple ``k`` of the crop size, then box-averaged by ``k`` (``INTER_AREA`` with an
integer factor), which avoids aliasing and keeps the matrix exact. A horizontal flip never
renames points (CONVENTIONS section 2).

Randomness
----------
All randomness of a sample comes from ``numpy.random.SeedSequence([seed, epoch, index])``
(photometric augmentation included: the albumentations pipeline is re-seeded per sample), so a
sample depends only on the dataset seed, its ``epoch`` attribute and its index, never on the
worker that computes it. :class:`EpochSampler` passes ``(index, sample_seed)`` pairs
instead, drawn in the main process from ``(seed, epoch)``, which makes the augmentation change
every epoch also with persistent workers (which never see a changed ``epoch`` attribute).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .._types import StrPath
from ..anatomy.measurements import height_loss
from ..defaults import (
    CROP_SCALE,
    CROP_SIZE,
    CROP_SOURCE_OVERSAMPLE,
    DEFAULT_CACHE_BYTES,
    INPUT_SIZE,
)
from ..geometry import (
    crop_matrix,
    hflip_matrix,
    letterbox_matrix,
    opencv_affine,
    transform_points,
    vertebra_crop_params,
)
from ..schema import NON_VERTEBRAL_LEVEL, LandmarkSchema
from .annotations import ImageRecord
from .augment import (
    AugmentConfig,
    Key,
    photometric_pipeline,
    random_similarity,
    resolve_augment,
    sample_generators,
    translation,
)
from .image_cache import Cached, CacheMode, ImageCache, dequantize, quantize
from .intensity import robust_normalize
from .io import read_image
from .masks import warp_segmentation
from .samplers import EpochSampler, GroupedEpochSampler

__all__ = [
    "CROP_SOURCE_OVERSAMPLE",
    "DEFAULT_CACHE_BYTES",
    "AugmentConfig",
    "CacheMode",
    "CropDataset",
    "DetectionDataset",
    "EpochSampler",
    "GroupedEpochSampler",
    "ImageCache",
    "LandmarkDataset",
    "dequantize",
    "detection_boxes",
    "opencv_affine",
    "quantize",
    "reference_height_loss",
]

#: Height loss from which :meth:`CropDataset.deformity_weights` counts a body as deformed.
DEFORMITY_MIN_LOSS = 0.15
#: A femoral head's radius over the mean vertebral body height (adult: about 24 mm over
#: 26-30 mm), which sizes the ``FH`` detector box.
FEMORAL_HEAD_RADIUS = 0.85


# ---------------------------------------------------------------------------------------------
# sample helpers
# ---------------------------------------------------------------------------------------------
def _points_in(points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(P,) bool: finite points inside ``[0, W] x [0, H]``."""
    h, w = float(size[0]), float(size[1])
    x, y = points[:, 0], points[:, 1]
    return torch.isfinite(points).all(-1) & (x >= 0) & (x <= w) & (y >= 0) & (y <= h)


def _finish_points(points: torch.Tensor, visibility: np.ndarray, size: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN and visibility 0 for absent points and points outside the image."""
    vis = torch.as_tensor(np.asarray(visibility), dtype=torch.int64).clone()
    keep = _points_in(points, size) & (vis > 0)
    vis = torch.where(keep, vis, torch.zeros_like(vis))
    pts = torch.where(keep.unsqueeze(-1), points, torch.full_like(points, float("nan")))
    return pts.float(), vis


def _spacing(record: ImageRecord, file_spacing: tuple[float, float] | None) -> torch.Tensor:
    sp = record.pixel_spacing if record.pixel_spacing is not None else file_spacing
    if sp is None:
        return torch.full((2,), float("nan"), dtype=torch.float32)
    return torch.tensor([float(sp[0]), float(sp[1])], dtype=torch.float32)


def _resize(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``cv2.resize`` to (H, W): INTER_AREA when shrinking, INTER_LINEAR otherwise."""
    h, w = int(size[0]), int(size[1])
    if (h, w) == img.shape[:2]:
        return img
    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _roots(root: StrPath | Sequence[StrPath], n: int) -> list[Path]:
    if isinstance(root, (str, PathLike)):
        return [Path(root)] * n
    roots = [Path(r) for r in root]
    if len(roots) != n:
        raise ValueError(f"got {len(roots)} roots for {n} records; pass one root or one per record")
    return roots


# ---------------------------------------------------------------------------------------------
# whole images
# ---------------------------------------------------------------------------------------------
def reference_height_loss(records: Sequence[ImageRecord], schema: LandmarkSchema
                          ) -> np.ndarray:
    """Height loss of every body from the records' reference points
    (:func:`~spinelandmarks.anatomy.measurements.height_loss`: wedge, biconcave -- with endplate
    middles in the schema -- or crush).

    Returns
    -------
    numpy.ndarray
        (N, V) float64 for the V = ``schema.body_levels``; NaN where not measurable.
    """
    if not records or not schema.body_levels:
        return np.full((len(records), len(schema.body_levels)), np.nan)
    pts = np.stack([np.where((r.visibility > 0)[:, None], r.points, np.nan) for r in records])
    return height_loss(torch.from_numpy(pts), schema).numpy()


class LandmarkDataset(Dataset[dict[str, Any]]):
    """Whole radiographs letterboxed to the model input, with their landmarks.

    Parameters
    ----------
    records : sequence of ImageRecord
        Annotations; points in original-image pixels.
    root : str, PathLike or sequence of them
        Dataset root that ``file_name`` is relative to, or one root per record.
    schema : LandmarkSchema
        Schema of the records' points.
    input_size : (H, W)
        Model input size in pixels.
    train : bool
        Apply augmentation (see ``augment``).
    augment : AugmentConfig, bool or None
        Training augmentation; None or True: ``AugmentConfig()``; False: none. Ignored when
        ``train`` is False.
    cache : {"none", "memory", "disk"}
        Cache of the decoded image resized to the letterbox size (see :class:`ImageCache`).
    cache_dir : str or PathLike, optional
        Folder of the disk cache.
    seed : int
        Base seed of the augmentation.
    max_cache_items : int, optional
        Images kept by the memory cache (per worker); None: as many as ``cache_bytes`` holds.
    cache_bytes : int, optional
        Byte budget of the memory cache per worker (default :data:`DEFAULT_CACHE_BYTES`).

    Notes
    -----
    Samples are dicts as described in the module docstring; the ``epoch`` attribute enters
    the augmentation seed of plain integer keys.
    """

    def __init__(self, records: Sequence[ImageRecord], root: StrPath | Sequence[StrPath],
                 schema: LandmarkSchema, input_size: Sequence[int] = INPUT_SIZE,
                 train: bool = False, augment: AugmentConfig | bool | None = None,
                 cache: CacheMode = "none", cache_dir: StrPath | None = None, seed: int = 0,
                 max_cache_items: int | None = None, cache_bytes: int | None = None) -> None:
        self.records = list(records)
        self.roots = _roots(root, len(self.records))
        self.schema = schema
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.train = bool(train)
        self.augment = resolve_augment(self.train, augment)
        self.cache = ImageCache(cache, cache_dir, max_cache_items, cache_bytes)
        self.seed = int(seed)
        self.epoch = 0
        self._photo = photometric_pipeline(self.augment) if self.augment.photometric else None
        for r in self.records:
            if r.points.shape != (schema.num_points, 2):
                raise ValueError(f"{r.file_name}: points {r.points.shape} do not match the "
                                 f"{schema.num_points} points of schema {schema.name!r}")

    def __len__(self) -> int:
        return len(self.records)

    def deformity_weights(self, weight: float, min_loss: float = DEFORMITY_MIN_LOSS
                          ) -> np.ndarray:
        """Sampling weight of every radiograph: the mean of its bodies' crop weights
        (:meth:`CropDataset.deformity_weights`), so an image with one deformed body among
        five weighs ``1 + (weight - 1) / 5``.

        The detector scores a fractured body lower than a normal one when it sees few of
        them, and a level scored too low is declared missing: the fracture is lost with it.

        Returns
        -------
        numpy.ndarray
            (len(self),) float64 weights, for :class:`EpochSampler` (``weights=``); 1 for a
            record without measurable bodies.
        """
        if weight == 1.0:
            return np.ones(len(self.records))
        loss = reference_height_loss(self.records, self.schema)
        deformed = (np.nan_to_num(loss, nan=-1.0) >= min_loss).sum(1)
        measurable = np.isfinite(loss).sum(1)
        return 1.0 + (float(weight) - 1.0) * deformed / np.maximum(measurable, 1)

    def set_epoch(self, epoch: int) -> None:
        """Epoch entering the augmentation seed of plain integer keys."""
        self.epoch = int(epoch)

    # -- loading -----------------------------------------------------------------------------
    def _load_resized(self, i: int) -> Cached:
        """Image resized to its letterbox size (uint16, :func:`quantize`), original (H, W),
        file pixel spacing."""
        path = self.roots[i] / self.records[i].file_name

        def compute() -> Cached:
            rad = read_image(path)
            orig = (rad.height, rad.width)
            _, resized = letterbox_matrix(orig, self.input_size)
            px = _resize(robust_normalize(rad.pixels), resized)
            return quantize(px), orig, rad.pixel_spacing

        return self.cache.get(path, f"letterbox{self.input_size}-robust", compute)

    def _photometric(self, img: np.ndarray, rng: np.random.Generator, py: random.Random
                     ) -> np.ndarray:
        if self._photo is None:
            return img
        self._photo.set_random_state(rng, py)
        out = self._photo(image=img)["image"]
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def _render(self, i: int, rng: np.random.Generator, py: random.Random
                ) -> tuple[np.ndarray, torch.Tensor, tuple[float, float] | None]:
        """Model-input image (H, W) float32, matrix (3, 3) float64, file spacing."""
        stored, orig, file_spacing = self._load_resized(i)
        px = dequantize(stored)
        lb, (h_r, w_r) = letterbox_matrix(orig, self.input_size)
        lb_np = lb.numpy()
        top, left = int(lb_np[1, 2]), int(lb_np[0, 2])
        h, w = self.input_size
        if px.shape != (h_r, w_r):  # defensive: a cache written for another size
            px = _resize(px, (h_r, w_r))
        if self.augment.geometric:
            aug = random_similarity(rng, self.augment, self.input_size)
            warp = aug @ translation(left, top)  # resized image -> input
            img = cv2.warpAffine(px, opencv_affine(warp), (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            matrix = torch.from_numpy(aug @ lb_np)
        else:
            img = np.zeros((h, w), np.float32)
            img[top:top + h_r, left:left + w_r] = px
            matrix = lb
        img = self._photometric(np.ascontiguousarray(img, dtype=np.float32), rng, py)
        return img, matrix, file_spacing

    def _sample(self, key: Key) -> tuple[dict[str, Any], torch.Tensor]:
        """The sample and its transformed points before removal of the absent ones."""
        i, rng, py = sample_generators(key, self.seed, self.epoch)
        rec = self.records[i]
        img, matrix, file_spacing = self._render(i, rng, py)
        raw = transform_points(torch.as_tensor(rec.points, dtype=torch.float64), matrix)
        pts, vis = _finish_points(raw, rec.visibility, self.input_size)
        sample = {"image": torch.from_numpy(img).unsqueeze(0), "points": pts,
                  "visibility": vis, "matrix": matrix.double(),
                  "pixel_spacing": _spacing(rec, file_spacing), "image_id": rec.file_name}
        return sample, raw

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self._sample(key)[0]


# ---------------------------------------------------------------------------------------------
# detector targets
# ---------------------------------------------------------------------------------------------
def detection_boxes(points: torch.Tensor, visibility: torch.Tensor, schema: LandmarkSchema,
                    size: Sequence[int], margin: float = 0.15, plate_depth: float = 0.6,
                    min_visible_frac: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes of the labelled levels of one image.

    Parameters
    ----------
    points : Tensor
        (P, 2) points in image pixels; they may lie outside the image (boxes are clipped).
    visibility : Tensor
        (P,) labels; points with 0 or NaN coordinates are ignored.
    schema : LandmarkSchema
    size : (H, W)
        Image size for clipping.
    margin : float
        Each side is widened by ``margin`` times the box width (x) or height (y).
    plate_depth : float
        The femoral heads (``FH``) are the box around their centres widened on every side by
        :data:`FEMORAL_HEAD_RADIUS` times the mean body height of the image's vertebrae (a
        head's radius; dropped when no body height is known). A level with exactly two
        labelled points (S1, or a vertebra cut by the image edge) is
        the segment between them extended perpendicularly, on the side of the body (caudal
        for a superior pair, cranial for an inferior pair, both halves otherwise), by the
        height of the adjacent body (mean wall length; the next level, else the previous)
        when known, else ``plate_depth`` times the segment length. Caudal is the direction
        from the previous level's centre to the next level's, else +y.
    min_visible_frac : float
        A box whose clipped area is below this fraction of its full area is dropped.

    Returns
    -------
    boxes : Tensor
        (n, 4) float32 ``(x1, y1, x2, y2)`` in image pixels.
    labels : Tensor
        (n,) int64 1-based level indices. Levels with fewer than two labelled points are
        omitted.
    """
    pts = points.double()
    ok = (visibility > 0) & torch.isfinite(pts).all(-1)
    centres, heights = _level_centres_heights(pts, ok, schema)
    boxes: list[torch.Tensor] = []
    labels: list[int] = []
    for li, lv in enumerate(schema.levels):
        idx = schema.level_indices(lv.name)
        m = ok[idx]
        if int(m.sum()) < 2:
            continue
        p = pts[idx][m]
        corners: torch.Tensor | None = p
        if lv.name == NON_VERTEBRAL_LEVEL:
            corners = _femoral_head_box_corners(p, heights)
        elif p.shape[0] == 2:
            names = [n for n, k in zip(lv.points, m.tolist(), strict=True) if k]
            corners = _plate_box_corners(p, names, li, centres, heights, plate_depth)
        if corners is None:
            continue
        box = _clipped_box(corners, margin, (float(size[0]), float(size[1])), min_visible_frac)
        if box is not None:
            boxes.append(box)
            labels.append(li + 1)
    if not boxes:
        return torch.zeros((0, 4), dtype=torch.float32), torch.zeros(0, dtype=torch.int64)
    return torch.stack(boxes).float(), torch.tensor(labels, dtype=torch.int64)


def _level_centres_heights(pts: torch.Tensor, ok: torch.Tensor, schema: LandmarkSchema
                           ) -> tuple[list[torch.Tensor | None], list[float | None]]:
    """Per level: the centre of its labelled points and its body height (mean wall length)."""
    centres: list[torch.Tensor | None] = []
    heights: list[float | None] = []
    for lv in schema.levels:
        idx = schema.level_indices(lv.name)
        m = ok[idx]
        centres.append(pts[idx][m].mean(0) if m.any() else None)
        height = None
        if lv.has_body:
            walls = [(schema.index(lv.name, f"{side}_superior"),
                      schema.index(lv.name, f"{side}_inferior"))
                     for side in ("anterior", "posterior")]
            lens = [float(torch.linalg.norm(pts[a] - pts[b])) for a, b in walls
                    if bool(ok[a] & ok[b])]
            height = float(np.mean(lens)) if lens else None
        heights.append(height)
    return centres, heights


def _femoral_head_box_corners(p: torch.Tensor, heights: list[float | None]
                              ) -> torch.Tensor | None:
    """Corners of the box around both femoral heads (see :func:`detection_boxes`)."""
    known = [h for h in heights if h is not None]
    if not known:
        return None
    r = FEMORAL_HEAD_RADIUS * float(np.mean(known))
    lo, hi = p.amin(0) - r, p.amax(0) + r
    return torch.stack((lo, hi))


def _plate_box_corners(p: torch.Tensor, names: list[str], li: int,
                       centres: list[torch.Tensor | None], heights: list[float | None],
                       plate_depth: float) -> torch.Tensor | None:
    """Corners of the body behind a two-point level (see :func:`detection_boxes`)."""
    seg = p[1] - p[0]
    length = float(torch.linalg.norm(seg))
    if length <= 0:
        return None
    normal = torch.stack((-seg[1], seg[0])) / length
    n_lv = len(centres)
    prev_c = centres[li - 1] if li > 0 else None
    next_c = centres[li + 1] if li + 1 < n_lv else None
    here = p.mean(0)
    if next_c is not None:
        caudal = next_c - here
    elif prev_c is not None:
        caudal = here - prev_c
    else:
        caudal = torch.tensor([0.0, 1.0], dtype=p.dtype)
    if float(normal @ caudal) < 0:
        normal = -normal
    nb = [heights[j] for j in (li + 1, li - 1) if 0 <= j < n_lv]
    depth = next((hh for hh in nb if hh is not None), None) or plate_depth * length
    if all("superior" in n for n in names):
        return torch.stack((p[0], p[1], p[0] + depth * normal, p[1] + depth * normal))
    if all("inferior" in n for n in names):
        return torch.stack((p[0], p[1], p[0] - depth * normal, p[1] - depth * normal))
    half = 0.5 * depth * normal
    return torch.stack((p[0] + half, p[1] + half, p[0] - half, p[1] - half))


def _clipped_box(p: torch.Tensor, margin: float, size: tuple[float, float],
                 min_visible_frac: float) -> torch.Tensor | None:
    """The widened box around points, clipped to the image; None if mostly outside."""
    h_img, w_img = size
    lo, hi = p.amin(0), p.amax(0)
    pad = (hi - lo) * margin
    lo, hi = lo - pad, hi + pad
    area = float((hi - lo).prod())
    clo = torch.stack((lo[0].clamp(0, w_img), lo[1].clamp(0, h_img)))
    chi = torch.stack((hi[0].clamp(0, w_img), hi[1].clamp(0, h_img)))
    carea = float((chi - clo).clamp_min(0).prod())
    if area <= 0 or carea < min_visible_frac * area:
        return None
    return torch.cat((clo, chi))


class DetectionDataset(LandmarkDataset):
    """:class:`LandmarkDataset` plus one box per labelled level (detector targets).

    Adds ``"boxes"`` (n, 4) float32 ``(x1, y1, x2, y2)`` model-input pixels and ``"labels"``
    (n,) int64 1-based level indices; see :func:`detection_boxes`. Boxes are computed from
    the transformed points *before* points outside the image are dropped, so a vertebra cut by
    the image edge keeps its true (clipped) box.

    Parameters
    ----------
    margin, plate_depth : float
        Passed to :func:`detection_boxes`.
    **kwargs
        As :class:`LandmarkDataset`.
    """

    def __init__(self, records: Sequence[ImageRecord], root: StrPath | Sequence[StrPath],
                 schema: LandmarkSchema, input_size: Sequence[int] = INPUT_SIZE,
                 train: bool = False, augment: AugmentConfig | bool | None = None,
                 cache: CacheMode = "none", cache_dir: StrPath | None = None, seed: int = 0,
                 max_cache_items: int | None = None, margin: float = 0.15,
                 plate_depth: float = 0.6, cache_bytes: int | None = None) -> None:
        super().__init__(records, root, schema, input_size, train, augment, cache, cache_dir,
                         seed, max_cache_items, cache_bytes)
        self.margin = float(margin)
        self.plate_depth = float(plate_depth)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        sample, raw = self._sample(key)
        i = key[0] if isinstance(key, tuple) else key
        vis = torch.as_tensor(self.records[int(i)].visibility, dtype=torch.int64)
        boxes, labels = detection_boxes(raw, vis, self.schema, self.input_size, self.margin,
                                        self.plate_depth)
        sample["boxes"], sample["labels"] = boxes, labels
        return sample


# ---------------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------------
class CropDataset(Dataset[dict[str, Any]]):
    """Oriented per-vertebra crops from the ground-truth corners (refiner training).

    One sample per (image, refined level with at least two labelled points), in record order
    (:attr:`~spinelandmarks.schema.LandmarkSchema.refined_levels`: not the femoral heads).

    Parameters
    ----------
    records, root, schema
        As :class:`LandmarkDataset`.
    crop_size : (H, W)
        Crop size in pixels.
    scale : float
        Crop side as a multiple of the body extent (:func:`~spinelandmarks.geometry.vertebra_crop_params`).
    jitter : (float, float, float)
        ``(center_frac, scale_frac, angle_deg)``: in training the centre moves uniformly by
        up to ``center_frac`` of the crop side along x and y, the side is multiplied by
        ``1 + U(-scale_frac, scale_frac)`` and the angle turns by ``U(-angle_deg, angle_deg)``,
        mimicking step-1 errors.
    train : bool
        Random jitter, flip and photometric augmentation, new every epoch.
    augment : AugmentConfig, bool or None
        Photometric settings and ``hflip_p`` (flip of the crop about its vertical centre
        line; points keep their names). Ignored when ``train`` is False.
    eval_jitter : bool
        Outside training: False (default) gives the exact GT crop; True a fixed jitter per
        sample (seeded by ``seed`` and the sample index only, the same every epoch), to
        validate the refiner under step-1-like errors.
    cache, cache_dir, seed, max_cache_items, cache_bytes
        As :class:`LandmarkDataset`. The cache holds each radiograph at its crop source
        resolution (:meth:`source_size`), the resolution its crops need.
    masks : bool
        Also give the level's body mask in the crop (``body_mask`` (1, h, w) float32 and
        ``has_mask``; zeros and False for a level without one in the record).

    Notes
    -----
    ``points`` are (K, 2) with ``K = schema.max_points_per_level``: the level's points in crop
    pixels, padded with NaN / visibility 0. ``level`` is the 0-based level index, ``matrix``
    maps original-image pixels to crop pixels (the mask is warped with the same matrix).
    """

    def __init__(self, records: Sequence[ImageRecord], root: StrPath | Sequence[StrPath],
                 schema: LandmarkSchema, crop_size: Sequence[int] = CROP_SIZE,
                 scale: float = CROP_SCALE, jitter: Sequence[float] = (0.1, 0.1, 8.0),
                 train: bool = False, augment: AugmentConfig | bool | None = None,
                 eval_jitter: bool = False, cache: CacheMode = "none",
                 cache_dir: StrPath | None = None, seed: int = 0,
                 max_cache_items: int | None = None, masks: bool = False,
                 cache_bytes: int | None = None) -> None:
        self.records = list(records)
        self.roots = _roots(root, len(self.records))
        self.schema = schema
        self.masks = bool(masks)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale = float(scale)
        jf = tuple(float(j) for j in jitter)
        if len(jf) != 3:
            raise ValueError(f"jitter must be (center_frac, scale_frac, angle_deg), got {jitter}")
        self.jitter: tuple[float, float, float] = (jf[0], jf[1], jf[2])
        self.train = bool(train)
        self.eval_jitter = bool(eval_jitter)
        self.augment = resolve_augment(self.train, augment)
        self.cache = ImageCache(cache, cache_dir, max_cache_items, cache_bytes)
        self.seed = int(seed)
        self.epoch = 0
        self._photo = photometric_pipeline(self.augment) if self.augment.photometric else None
        self.samples: list[tuple[int, int]] = []
        for ri, rec in enumerate(self.records):
            ok = (rec.visibility > 0) & np.isfinite(rec.points).all(-1)
            for li, lv in enumerate(schema.levels):
                if (lv.name in schema.refined_levels
                        and int(ok[schema.level_indices(lv.name)].sum()) >= 2):
                    self.samples.append((ri, li))
        self._source_sizes = self._crop_source_sizes()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def groups(self) -> list[int]:
        """The record (radiograph) index of every sample, for :class:`GroupedEpochSampler`."""
        return [ri for ri, _ in self.samples]

    def _crop_source_sizes(self) -> list[tuple[int, int]]:
        """(H, W) each record is kept at: :data:`CROP_SOURCE_OVERSAMPLE` source pixels per
        crop pixel for its smallest crop (the jitter's smallest scale included), at most the
        original size."""
        density = np.zeros(len(self.records))  # crop px per image px of the finest crop
        for n, (ri, _) in enumerate(self.samples):
            m = self.crop_params(n)[0].numpy()
            density[ri] = max(density[ri], float(np.sqrt(abs(np.linalg.det(m[:2, :2])))))
        shrink = 1.0 - min(self.jitter[1], 0.9)
        sizes = []
        for rec, d in zip(self.records, density, strict=True):
            s = min(1.0, CROP_SOURCE_OVERSAMPLE * d / shrink) if d > 0 else 1.0
            sizes.append((max(1, round(rec.height * s)), max(1, round(rec.width * s))))
        return sizes

    def source_size(self, ri: int) -> tuple[int, int]:
        """(H, W) in pixels at which record ``ri`` is decoded, normalized and kept for its
        crops (see :data:`CROP_SOURCE_OVERSAMPLE`)."""
        return self._source_sizes[ri]

    def set_epoch(self, epoch: int) -> None:
        """Epoch entering the augmentation seed of plain integer keys."""
        self.epoch = int(epoch)

    def deformity_weights(self, weight: float, min_loss: float = DEFORMITY_MIN_LOSS
                          ) -> np.ndarray:
        """Sampling weight of every crop: ``weight`` for a deformed body, 1 otherwise.

        A body is deformed when the height loss of its reference points
        (:func:`reference_height_loss`) is at least ``min_loss``; the default sits just below
        Genant grade 1 (20 %) so that bodies on either side of the threshold are seen often.
        Fractured bodies are a few percent of a typical training set, and a refiner trained
        on them at their natural rate regresses towards the typical shape: it under-estimates
        their height loss, which is what fracture grading reads.

        Returns
        -------
        numpy.ndarray
            (len(self),) float64 weights, for
            :class:`EpochSampler` (``weights=``).
        """
        out = np.ones(len(self.samples))
        if weight == 1.0 or not self.samples:
            return out
        deformed = np.nan_to_num(reference_height_loss(self.records, self.schema),
                                 nan=-1.0) >= min_loss
        body = {lv: j for j, lv in enumerate(self.schema.body_levels)}
        for n, (ri, li) in enumerate(self.samples):
            j = body.get(self.schema.levels[li].name)
            if j is not None and deformed[ri, j]:
                out[n] = float(weight)
        return out

    def _load(self, ri: int) -> Cached:
        """Record ``ri`` normalized on the full image, resized to :meth:`source_size`
        (uint16, :func:`quantize`); original (H, W); file pixel spacing."""
        path = self.roots[ri] / self.records[ri].file_name
        size = self.source_size(ri)

        def compute() -> Cached:
            rad = read_image(path)
            px = _resize(robust_normalize(rad.pixels), size)
            return quantize(px), (rad.height, rad.width), rad.pixel_spacing

        return self.cache.get(path, f"crop-source{size}-robust", compute)

    def crop_params(self, index: int, rng: np.random.Generator | None = None
                    ) -> tuple[torch.Tensor, bool]:
        """Original -> crop matrix (3, 3) float64 of sample ``index`` and whether it is flipped.

        ``rng`` None: the exact ground-truth crop; otherwise jittered (and flipped with
        probability ``augment.hflip_p`` when ``augment.geometric``).
        """
        ri, li = self.samples[index]
        rec = self.records[ri]
        idx = self.schema.level_indices(self.schema.levels[li].name)
        pts = torch.as_tensor(rec.points[idx], dtype=torch.float64).clone()
        pts[~torch.as_tensor(rec.visibility[idx] > 0)] = float("nan")
        center, sizes, angle = vertebra_crop_params(pts.unsqueeze(0), self.scale)
        flip = False
        if rng is not None:
            cf, sf, af = self.jitter
            side = sizes[0].clone()
            center = center + torch.from_numpy(rng.uniform(-cf, cf, 2)) * side
            sizes = sizes * (1.0 + rng.uniform(-sf, sf))
            angle = angle + rng.uniform(-af, af)
            flip = bool(self.train and self.augment.geometric
                        and rng.random() < self.augment.hflip_p)
        m = crop_matrix(center, sizes, angle, self.crop_size)[0]
        if flip:
            m = hflip_matrix(self.crop_size[1]) @ m
        return m, flip

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, rng, py = sample_generators(key, self.seed, self.epoch)
        if not self.train and self.eval_jitter:
            _, rng, py = sample_generators(index, self.seed, 0)
        use_rng = rng if (self.train or self.eval_jitter) else None
        ri, li = self.samples[index]
        rec = self.records[ri]
        matrix, _ = self.crop_params(index, use_rng)
        px, (h_o, w_o), file_spacing = self._load(ri)

        # Warp at k times the crop size, then box-average by k (exact for integer k).
        hc, wc = self.crop_size
        mat = matrix.numpy()
        src = mat @ np.diag([w_o / px.shape[1], h_o / px.shape[0], 1.0])  # source px -> crop
        side_in = float(np.sqrt(abs(np.linalg.det(src[:2, :2]))))  # crop px per source px
        k = int(min(8, max(1, math.ceil(1.0 / side_in - 1e-6)))) if side_in > 0 else 1
        big = np.diag([float(k), float(k), 1.0]) @ src
        img = cv2.warpAffine(px, opencv_affine(big), (wc * k, hc * k), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if k > 1:
            img = cv2.resize(img, (wc, hc), interpolation=cv2.INTER_AREA)
        img = dequantize(img)
        if self.train:
            img = self._photometric(np.ascontiguousarray(img, dtype=np.float32), rng, py)

        kmax = self.schema.max_points_per_level
        idx = self.schema.level_indices(self.schema.levels[li].name)
        pts = torch.full((kmax, 2), float("nan"), dtype=torch.float64)
        vis = np.zeros(kmax, np.int64)
        pts[: len(idx)] = torch.as_tensor(rec.points[idx], dtype=torch.float64)
        vis[: len(idx)] = rec.visibility[idx]
        out_pts, out_vis = _finish_points(transform_points(pts, matrix), vis, self.crop_size)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(img, np.float32)).unsqueeze(0),
                  "points": out_pts, "visibility": out_vis, "matrix": matrix.double(),
                  "pixel_spacing": _spacing(rec, file_spacing), "image_id": rec.file_name,
                  "level": torch.tensor(li, dtype=torch.int64)}
        if self.masks:
            seg = rec.masks.get(self.schema.levels[li].name)
            body = (np.zeros(self.crop_size, bool) if seg is None else warp_segmentation(
                seg, mat, self.crop_size, (rec.height, rec.width)))
            sample["body_mask"] = torch.from_numpy(body.astype(np.float32)).unsqueeze(0)
            sample["has_mask"] = torch.tensor(seg is not None)
        return sample

    def _photometric(self, img: np.ndarray, rng: np.random.Generator, py: random.Random
                     ) -> np.ndarray:
        if self._photo is None:
            return img
        self._photo.set_random_state(rng, py)
        return np.clip(self._photo(image=img)["image"], 0.0, 1.0).astype(np.float32)

