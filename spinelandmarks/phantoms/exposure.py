"""The imaging chain: attenuation to a processed radiograph (focal-spot blur, quantum noise,
exposure windowing, scatter haze, gamma, heel effect, collimation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .canvas import _Canvas
from .config import Array, PhantomConfig

__all__ = ["Exposure", "expose"]


@dataclass
class Exposure:
    """The radiograph and what the chain drew (for the ground truth and the metadata)."""

    image: Array  # (H, W) float32 in [0, 1]
    coll_mask: Array  # (H, W) float32, 1 behind the collimator
    metal_blur: Array | None  # (H, W) blurred metal attenuation, None without implants
    noise_level: float
    blur_px: float
    haze: float
    gamma: float
    collimated: list[str] = field(default_factory=list)


def expose(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas, spacing: float,
           implants: bool) -> Exposure:
    """Turn the canvas's attenuation into a radiograph."""
    img, metal_blur, noise_level, blur_px = _detector_signal(rng, cfg, cv, spacing, implants)
    haze = float(rng.uniform(*cfg.scatter))
    img = _scatter(rng, img, haze)
    gamma = float(rng.uniform(*cfg.gamma))
    img = np.clip(img, 0.0, 1.0) ** gamma
    H = img.shape[0]
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    grad = float(rng.uniform(-0.08, 0.08))  # heel effect / vignetting gradient
    img *= (1.0 + grad * (ys / H - 0.5)).astype(np.float32)
    img, coll_mask, collimated = _collimate(rng, cfg, img, spacing)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return Exposure(img, coll_mask, metal_blur, noise_level, blur_px, haze, gamma, collimated)


def _detector_signal(rng: np.random.Generator, cfg: PhantomConfig, cv: _Canvas,
                     spacing: float, implants: bool
                     ) -> tuple[Array, Array | None, float, float]:
    """Blurred, noisy transmission windowed to the exposure (metal left out of the window)."""
    U = rng.uniform
    H, W = cv.h, cv.w
    blur_px = max(float(U(*cfg.blur_mm)) / spacing, 0.35)
    att = ndimage.gaussian_filter(cv.att + cv.metal, blur_px)
    metal_blur = ndimage.gaussian_filter(cv.metal, blur_px) if implants else None
    noise_level = float(U(*cfg.noise))
    mu = float(U(0.7, 1.1))
    if noise_level > 0:
        noise = rng.standard_normal((H, W)).astype(np.float32)
        att = att + noise_level * np.exp(0.5 * mu * np.minimum(att, 3.0)) * noise
    img = 1.0 - np.exp(-mu * att)
    base_img = img if metal_blur is None else 1.0 - np.exp(-mu * (att - metal_blur))
    step = max(H // 128, 1)
    sample = base_img[::step, ::step]
    lo = float(np.percentile(sample, float(U(0.5, 5.0))))
    hi = float(np.percentile(sample, float(U(99.3, 99.95))))
    img = (img - lo) / max(hi - lo, 1e-6)
    np.clip(img, 0.0, 1.0, out=img)
    return img, metal_blur, noise_level, blur_px


def _scatter(rng: np.random.Generator, img: Array, haze: float) -> Array:
    """Scatter haze: a low-frequency copy of the image mixed in."""
    if haze <= 0:
        return img
    H, W = img.shape
    f = max(H // 64, 1)
    small = ndimage.gaussian_filter(img[::f, ::f], 4.0)
    big = ndimage.zoom(small, (H / small.shape[0], W / small.shape[1]), order=1)
    return (1.0 - haze) * img + haze * (big[:H, :W] + float(rng.uniform(0.0, 0.15)))


def _collimate(rng: np.random.Generator, cfg: PhantomConfig, img: Array, spacing: float
               ) -> tuple[Array, Array, list[str]]:
    """Collimator blades on some borders (slightly tilted, soft edge), bright or dark."""
    U = rng.uniform
    H, W = img.shape
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    coll_mask = np.zeros((H, W), np.float32)
    collimated: list[str] = []
    if rng.random() < cfg.p_collimation:
        edge = max(1.5 / spacing * 0.5, 0.7)
        for border in ("left", "right", "top", "bottom"):
            if rng.random() < 0.45:
                continue
            frac = float(U(0.015, 0.09))
            tan = math.tan(math.radians(float(U(-1.5, 1.5))))
            if border in ("left", "right"):
                pos = frac * W + tan * (ys - H / 2)
                dist = pos - xs if border == "left" else xs - (W - pos)
            else:
                pos = frac * H + tan * (xs - W / 2)
                dist = pos - ys if border == "top" else ys - (H - pos)
            coll_mask = np.maximum(coll_mask, np.clip(dist / edge + 0.5, 0.0, 1.0))
            collimated.append(border)
        if collimated:
            value = float(U(0.82, 0.97)) if rng.random() < 0.7 else float(U(0.0, 0.05))
            img = img * (1.0 - coll_mask) + coll_mask * value
    return img, coll_mask, collimated
