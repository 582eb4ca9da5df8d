"""Torch datasets of whole radiographs, detector targets and per-vertebra crops.

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

import hashlib
import json
import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .._atomic import atomic_write, atomic_write_text
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
from .intensity import robust_normalize
from .io import read_image
from .masks import warp_segmentation

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

CacheMode = Literal["none", "memory", "disk"]
#: A dataset key: a plain index, or ``(index, sample_seed)`` from :class:`EpochSampler`.
Key = int | tuple[int, int]
#: Height loss from which :meth:`CropDataset.deformity_weights` counts a body as deformed.
DEFORMITY_MIN_LOSS = 0.15
#: A femoral head's radius over the mean vertebral body height (adult: about 24 mm over
#: 26-30 mm), which sizes the ``FH`` detector box.
FEMORAL_HEAD_RADIUS = 0.85


# ---------------------------------------------------------------------------------------------
# augmentation settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation.

    The defaults are wide enough to cover both phantom styles of the cross-style benchmark
    (field of view and magnification through ``scale``, contrast, gamma, noise, blur and edge
    enhancement of processed images); see ``benchmarks/accuracy.py --mode cross``.

    Attributes
    ----------
    geometric : bool
        Random similarity (whole images) and flip (whole images and crops).
    rotate_deg : float
        Rotation uniform in ``+-rotate_deg`` degrees about the input centre.
    scale : (float, float)
        Isotropic scale range (log-uniform).
    translate_frac : float
        Shift uniform in ``+-translate_frac`` of the input width / height.
    hflip_p : float
        Probability of a horizontal flip (points keep their names).
    photometric : bool
        Intensity augmentation (albumentations).
    brightness, contrast : float
        Limits of ``RandomBrightnessContrast`` (applied with probability ``brightness_contrast_p``).
    gamma : (float, float)
        Gamma range of ``RandomGamma`` (probability ``gamma_p``).
    clahe_p : float
        Probability of CLAHE (clip limit 1-3, 8x8 tiles), see :class:`CLAHEFloat`.
    sharpen_p : float
        Probability of an unsharp-mask edge enhancement (the look of processed DR images).
    noise_std : (float, float)
        Gaussian noise standard deviation range, intensity units (probability ``noise_p``).
    blur_sigma : (float, float)
        Gaussian blur sigma range, pixels (probability ``blur_p``).
    """

    geometric: bool = True
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.75, 1.3)
    translate_frac: float = 0.08
    hflip_p: float = 0.5
    photometric: bool = True
    brightness: float = 0.15
    contrast: float = 0.3
    brightness_contrast_p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.4)
    gamma_p: float = 0.5
    clahe_p: float = 0.2
    sharpen_p: float = 0.2
    noise_std: tuple[float, float] = (0.003, 0.03)
    noise_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    blur_p: float = 0.25

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(geometric=False, photometric=False)


class CLAHEFloat(A.CLAHE):
    """CLAHE on a float image that keeps its full (e.g. 16-bit) precision.

    OpenCV's CLAHE needs 8 bits (its 16-bit version uses 65536 histogram bins, far too many for
    the tiles of a model input, which changes what the clip limit means). The contrast mapping
    is computed on an 8-bit copy ``q`` and added as a correction: ``out = x + clahe(q) - q``,
    so the detail below 1/255 of the input survives.
    """

    def apply(self, img: np.ndarray, clip_limit: float, **params: Any) -> np.ndarray:
        q = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        eq = super().apply(q, clip_limit, **params)
        out = img + (eq.astype(np.float32) - q.astype(np.float32)) / np.float32(255.0)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _photometric_pipeline(cfg: AugmentConfig) -> A.Compose:
    """Image-only albumentations pipeline for float32 (H, W) images in [0, 1]."""
    sig = (float(cfg.blur_sigma[0]), float(cfg.blur_sigma[1]))
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast,
                                   p=cfg.brightness_contrast_p),
        A.RandomGamma(gamma_limit=(100 * cfg.gamma[0], 100 * cfg.gamma[1]), p=cfg.gamma_p),
        CLAHEFloat(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=cfg.clahe_p),
        A.UnsharpMask(blur_limit=(3, 9), alpha=(0.2, 0.6), threshold=0, p=cfg.sharpen_p),
        A.GaussianBlur(blur_limit=0, sigma_limit=sig, p=cfg.blur_p),
        A.GaussNoise(std_range=cfg.noise_std, p=cfg.noise_p),
    ])


def _resolve_augment(train: bool, augment: AugmentConfig | bool | None) -> AugmentConfig:
    if not train or augment is False:
        return AugmentConfig.off()
    if augment is None or augment is True:
        return AugmentConfig()
    return augment


# ---------------------------------------------------------------------------------------------
# matrices
# ---------------------------------------------------------------------------------------------
def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _similarity(rng: np.random.Generator, cfg: AugmentConfig, size: Sequence[int]
                ) -> np.ndarray:
    """Random similarity (+ optional flip) about the centre of an image of ``size`` (H, W)."""
    h, w = float(size[0]), float(size[1])
    theta = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    lo, hi = math.log(cfg.scale[0]), math.log(cfg.scale[1])
    s = math.exp(rng.uniform(lo, hi))
    tx, ty = rng.uniform(-cfg.translate_frac, cfg.translate_frac, 2) * (w, h)
    flip = -1.0 if rng.random() < cfg.hflip_p else 1.0
    c, si = math.cos(theta) * s, math.sin(theta) * s
    core = np.array([[c * flip, -si, 0.0], [si * flip, c, 0.0], [0.0, 0.0, 1.0]])
    return _translate(w / 2 + tx, h / 2 + ty) @ core @ _translate(-w / 2, -h / 2)


def _seed_state(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def _rngs(key: Key, seed: int, epoch: int) -> tuple[int, np.random.Generator, random.Random]:
    """Index and the numpy / python generators of one sample."""
    if isinstance(key, tuple):
        index, sample_seed = int(key[0]), int(key[1])
        ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, sample_seed, index])
    else:
        index = int(key)
        ss = _seed_state(seed, epoch, index)
    state = ss.generate_state(2, np.uint64)
    return index, np.random.default_rng(int(state[0])), random.Random(int(state[1]))


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
# cache
# ---------------------------------------------------------------------------------------------
Cached = tuple[np.ndarray, tuple[int, int], tuple[float, float] | None]


def quantize(px: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` as uint16 (``round(x * 65535)``: within ``0.5 / 65535``)."""
    return np.clip(np.rint(px * np.float32(65535.0)), 0, 65535).astype(np.uint16)


def dequantize(px: np.ndarray) -> np.ndarray:
    """uint16 from :func:`quantize` back to float32 in ``[0, 1]``."""
    return np.asarray(px, dtype=np.float32) * np.float32(1.0 / 65535.0)


class ImageCache:
    """Cache of decoded, normalized (and possibly resized) images, stored as uint16.

    The datasets always quantize their normalized images to uint16 (:func:`quantize`), with
    or without a cache, so a cached sample equals an uncached one exactly.

    Parameters
    ----------
    mode : {"none", "memory", "disk"}
        ``"memory"``: an LRU of at most ``max_bytes`` of pixels (and ``max_items`` images)
        *per process*: every DataLoader worker has its own. ``"disk"``: one ``.npy`` file
        per image in ``cache_dir``, read memory-mapped (a crop reads only the pages it
        covers; the operating system's page cache is shared by the workers), keyed by the
        absolute path, size and mtime of the source file and by the variant (e.g. the
        resized size), so a changed file is re-read.
    cache_dir : str or PathLike, optional
        Default ``$SPINELANDMARKS_CACHE`` or ``~/.cache/spinelandmarks``; ``spinelandmarks
        train`` uses ``RUN/cache``.
    max_items : int, optional
        Most images in the memory LRU (None: no limit but the bytes).
    max_bytes : int
        Most bytes of pixels in the memory LRU (default :data:`DEFAULT_CACHE_BYTES`); an
        image larger than that is not kept.

    Attributes
    ----------
    hits, misses : int
        Look-ups served from the cache / computed, in this process.
    """

    def __init__(self, mode: CacheMode = "none", cache_dir: StrPath | None = None,
                 max_items: int | None = None, max_bytes: int | None = None) -> None:
        if mode not in ("none", "memory", "disk"):
            raise ValueError(f"cache must be 'none', 'memory' or 'disk', got {mode!r}")
        self.mode: CacheMode = mode
        default = os.environ.get("SPINELANDMARKS_CACHE",
                                 str(Path.home() / ".cache" / "spinelandmarks"))
        self.cache_dir = Path(cache_dir if cache_dir is not None else default)
        self.max_items = None if max_items is None else int(max_items)
        self.max_bytes = DEFAULT_CACHE_BYTES if max_bytes is None else int(max_bytes)
        self._mem: OrderedDict[str, Cached] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mem"] = OrderedDict()  # workers start empty
        state["nbytes"] = 0
        return state

    def get(self, path: Path, variant: str, compute: Callable[[], Cached]) -> Cached:
        """``(pixels, original (H, W), file pixel spacing)``, computed by ``compute()`` on a miss.

        ``compute`` returns the same triple; ``pixels`` is a uint16 array (:func:`quantize`),
        read-only when it comes from the disk cache.
        """
        if self.mode == "none":
            return compute()
        key = f"{path.resolve()}|{variant}"
        if self.mode == "memory":
            return self._get_memory(key, compute)
        return self._get_disk(path, key, compute)

    def _get_memory(self, key: str, compute: Callable[[], Cached]) -> Cached:
        hit = self._mem.get(key)
        if hit is not None:
            self._mem.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        val = compute()
        size = int(val[0].nbytes)
        if size > self.max_bytes:
            return val
        self._mem[key] = val
        self.nbytes += size
        while self.nbytes > self.max_bytes or (
                self.max_items is not None and len(self._mem) > self.max_items):
            _, old = self._mem.popitem(last=False)
            self.nbytes -= int(old[0].nbytes)
        return val

    def _get_disk(self, path: Path, key: str, compute: Callable[[], Cached]) -> Cached:
        st = path.stat()
        digest = hashlib.sha1(f"{key}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        file = self.cache_dir / f"{digest}.npy"
        meta = file.with_suffix(".json")
        if file.is_file() and meta.is_file():
            try:
                info = json.loads(meta.read_text())
                px = np.load(file, mmap_mode="r")
                sp = info["spacing"]
                self.hits += 1
                return (px, (int(info["orig"][0]), int(info["orig"][1])),
                        None if sp is None else (float(sp[0]), float(sp[1])))
            except (OSError, ValueError, KeyError):
                pass  # corrupt or concurrent write: recompute
        self.misses += 1
        px, orig, spacing = compute()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # metadata first, pixels last: a complete .npy means a complete entry
        atomic_write_text(meta, json.dumps({"orig": list(orig), "spacing": spacing,
                                            "source": str(path)}))
        atomic_write(file, lambda tmp: _save_npy(tmp, px))
        return px, orig, spacing


def _save_npy(path: str, px: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, np.asarray(px, np.uint16))


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
        self.augment = _resolve_augment(self.train, augment)
        self.cache = ImageCache(cache, cache_dir, max_cache_items, cache_bytes)
        self.seed = int(seed)
        self.epoch = 0
        self._photo = _photometric_pipeline(self.augment) if self.augment.photometric else None
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
            aug = _similarity(rng, self.augment, self.input_size)
            warp = aug @ _translate(left, top)  # resized image -> input
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
        i, rng, py = _rngs(key, self.seed, self.epoch)
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
        self.augment = _resolve_augment(self.train, augment)
        self.cache = ImageCache(cache, cache_dir, max_cache_items, cache_bytes)
        self.seed = int(seed)
        self.epoch = 0
        self._photo = _photometric_pipeline(self.augment) if self.augment.photometric else None
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
        index, rng, py = _rngs(key, self.seed, self.epoch)
        if not self.train and self.eval_jitter:
            _, rng, py = _rngs(index, self.seed, 0)
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


# ---------------------------------------------------------------------------------------------
# sampler
# ---------------------------------------------------------------------------------------------
class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` pairs, shuffled or not, new seeds every epoch.

    The order and the seeds come from ``numpy.random.default_rng([seed, epoch])`` in the
    main process, so the augmentation of every sample is reproducible from ``seed`` and the
    epoch alone, whatever the number of workers and with persistent workers. ``epoch``
    advances by one after every iteration; Lightning's ``set_epoch`` overrides it.

    Parameters
    ----------
    num_samples : int
        Dataset length.
    shuffle : bool
        Random order per epoch.
    seed : int
        Base seed.
    weights : array-like, optional
        (num_samples,) non-negative sampling weights: an epoch is then ``num_samples``
        draws with replacement, each index with probability proportional to its weight
        (with ``shuffle`` only). None: every index once per epoch.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0,
                 weights: Sequence[float] | np.ndarray | None = None) -> None:
        self.num_samples = int(num_samples)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.p: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (self.num_samples,) or not np.isfinite(w).all() or (w < 0).any() \
                    or (self.num_samples and w.sum() <= 0):
                raise ValueError(f"weights must be {self.num_samples} finite non-negative "
                                 f"numbers with a positive sum, got shape {w.shape}")
            self.p = w / w.sum() if self.num_samples else w

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch])
        self.epoch += 1
        order, seeds = self._draw(rng)
        for i, s in zip(order, seeds, strict=True):
            yield int(i), int(s)

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's sample indices and their seeds, (num_samples,) int64 each."""
        if self.shuffle and self.p is not None:
            order = rng.choice(self.num_samples, self.num_samples, p=self.p)
        elif self.shuffle:
            order = rng.permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        seeds = rng.integers(0, 2**62, self.num_samples)
        if self.p is None:
            seeds = seeds[order]  # the seed belongs to the sample
        # Weighted, the seed belongs to the draw: a sample drawn twice is augmented twice.
        return order, seeds


class GroupedEpochSampler(EpochSampler):
    """:class:`EpochSampler` whose draws come grouped: all the crops of one radiograph in a
    row, the radiographs in random order.

    An epoch draws exactly the ``(index, sample_seed)`` pairs of :class:`EpochSampler` with
    the same ``seed`` and epoch (so the same samples with the same augmentation), then
    orders them by a random permutation of the groups; within a group the draws keep their
    random order. A radiograph is then decoded about once per epoch instead of once per crop
    (its crops follow each other, so the dataset's cache holds it while they are made), and
    every batch still mixes several radiographs. Without ``shuffle`` the draws keep the index
    order.

    Parameters
    ----------
    groups : sequence of int
        (num_samples,) the group (radiograph) of every sample, e.g.
        :attr:`CropDataset.groups`.
    shuffle, seed, weights
        As :class:`EpochSampler`.
    """

    def __init__(self, groups: Sequence[int] | np.ndarray, shuffle: bool = True,
                 seed: int = 0, weights: Sequence[float] | np.ndarray | None = None) -> None:
        self.groups = np.asarray(groups, dtype=np.int64).reshape(-1)
        super().__init__(len(self.groups), shuffle, seed, weights)
        _, self._group_index = np.unique(self.groups, return_inverse=True)

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        order, seeds = super()._draw(rng)
        if not self.shuffle or self.num_samples == 0:
            return order, seeds
        rank = rng.permutation(int(self._group_index.max()) + 1)[self._group_index[order]]
        grouped = np.argsort(rank, kind="stable")
        return order[grouped], seeds[grouped]
