"""Training augmentation of the datasets: settings, photometric pipeline, random geometry and
the per-sample random generators.

All randomness of a sample comes from ``numpy.random.SeedSequence([seed, epoch, index])``, or
``(seed, sample_seed, index)`` for the ``(index, sample_seed)`` keys of
:class:`~spinelandmarks.data.samplers.EpochSampler` (:func:`sample_generators`): a sample
depends only on the dataset seed, the epoch and its index, never on the worker computing it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np

__all__ = ["AugmentConfig", "CLAHEFloat", "Key", "photometric_pipeline", "random_similarity",
           "resolve_augment", "sample_generators", "translation"]

#: A dataset key: a plain index, or ``(index, sample_seed)`` from
#: :class:`~spinelandmarks.data.samplers.EpochSampler`.
Key = int | tuple[int, int]


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


def photometric_pipeline(cfg: AugmentConfig) -> A.Compose:
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


def resolve_augment(train: bool, augment: AugmentConfig | bool | None) -> AugmentConfig:
    """The augmentation a dataset applies: none unless training; ``None`` / ``True``: the
    defaults; ``False``: none."""
    if not train or augment is False:
        return AugmentConfig.off()
    if augment is None or augment is True:
        return AugmentConfig()
    return augment


def translation(tx: float, ty: float) -> np.ndarray:
    """(3, 3) float64 homogeneous matrix of a shift by ``(tx, ty)`` pixels."""
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def random_similarity(rng: np.random.Generator, cfg: AugmentConfig, size: Sequence[int]
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
    return translation(w / 2 + tx, h / 2 + ty) @ core @ translation(-w / 2, -h / 2)


def _seed_state(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def sample_generators(key: Key, seed: int, epoch: int) -> tuple[int, np.random.Generator, random.Random]:
    """Index and the numpy / python generators of one sample."""
    if isinstance(key, tuple):
        index, sample_seed = int(key[0]), int(key[1])
        ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, sample_seed, index])
    else:
        index = int(key)
        ss = _seed_state(seed, epoch, index)
    state = ss.generate_state(2, np.uint64)
    return index, np.random.default_rng(int(state[0])), random.Random(int(state[1]))
