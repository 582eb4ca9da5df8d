"""The compact summary of a pipeline's training images that its ``shift_score`` is measured
against (``docs/conventions.md``, "Shift score").

Two descriptors per radiograph (:meth:`~spinelandmarks.pipeline.SpineLandmarkPipeline.descriptors`):
the step-1 backbone's last feature map averaged over the image (``pooled``, C values) and
:func:`intensity_statistics` (K values). For each, :class:`ShiftModel` keeps the training
images' mean and Ledoit-Wolf shrunk covariance (as its inverse); an image's distance is the
Mahalanobis distance under it, divided by the median distance of the validation images
(:meth:`ShiftModel.ratios`). The shift score is the pooled features' ratio: about 1 for an
image like the validation images, whatever the backbone. ``threshold`` (fitted on the
validation images like the QC thresholds) marks an image ``shifted``. The intensity ratio is
kept for inspection but not scored: on the phantom benchmark it varied as much within a
source as between sources, and taking the larger of the two ratios lowered the score's
AUROC (``benchmarks/notes/shift.md``).

This module holds data and arithmetic only (no pipeline), so the pipeline can load it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._atomic import atomic_write

__all__ = ["INTENSITY_QUANTILES", "SHIFT_MARGIN", "SHIFT_QUANTILE", "ShiftModel",
           "intensity_statistics", "ledoit_wolf"]

#: Quantiles of the windowed image (:func:`~spinelandmarks.data.intensity.robust_normalize`)
#: in :func:`intensity_statistics`.
INTENSITY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The per-image threshold is ``SHIFT_MARGIN`` times the ``SHIFT_QUANTILE`` quantile of the
#: validation images' scores (the rule of the QC thresholds, :func:`~spinelandmarks.qc.calibrate_thresholds`).
SHIFT_QUANTILE, SHIFT_MARGIN = 0.99, 1.25
_FORMAT = 1


def intensity_statistics(images: Tensor) -> Tensor:
    """Scale-free intensity and shape statistics of windowed radiographs.

    Parameters
    ----------
    images : Tensor
        (B, 1, H, W) intensities in [0, 1], each windowed by
        :func:`~spinelandmarks.data.intensity.robust_normalize` (as the pipeline sees them).

    Returns
    -------
    Tensor
        (B, 8) float32: the :data:`INTENSITY_QUANTILES` of the pixels, their mean and standard
        deviation, and ``log(H / W)`` (the field of view's shape). Pixels are subsampled to
        at most about 256 per side.
    """
    b, _, h, w = images.shape
    step = max(1, min(h, w) // 256)
    x = images[:, 0, ::step, ::step].reshape(b, -1).float()
    q = torch.quantile(x, torch.tensor(INTENSITY_QUANTILES, device=x.device), dim=1).T
    aspect = torch.full((b, 1), math.log(h / w), device=x.device)
    return torch.cat([q, x.mean(1, keepdim=True), x.std(1, keepdim=True), aspect], dim=1)


def ledoit_wolf(x: Tensor) -> Tensor:
    """Ledoit-Wolf shrunk covariance of centred samples (Ledoit & Wolf 2004).

    Parameters
    ----------
    x : Tensor
        (N, D) samples, already centred.

    Returns
    -------
    Tensor
        (D, D) ``(1 - a) S + a (tr(S) / D) I`` with the sample covariance ``S`` and the
        shrinkage ``a`` in [0, 1] that minimizes the expected Frobenius error (the estimator
        of scikit-learn's ``ledoit_wolf``).
    """
    n, d = x.shape
    s = x.T @ x / n
    mu = torch.trace(s) / d
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    delta = ((s - mu * eye) ** 2).sum() / d
    beta = ((x ** 2).sum(1) ** 2).sum() / n ** 2 - (s ** 2).sum() / n
    shrink = 1.0 if delta <= 0 else float(torch.clamp(beta / d / delta, 0.0, 1.0))
    return (1.0 - shrink) * s + shrink * mu * eye


@dataclass(frozen=True)
class _Gaussian:
    """Mean and shrunk precision of one descriptor.

    The covariance is shrunk in the descriptor's own units, towards the mean variance: a
    channel (nearly) constant on the training images keeps a variance of about the shrinkage
    times the mean variance instead of dividing by zero.
    """

    mean: Tensor  # (D,)
    precision: Tensor  # (D, D)

    @classmethod
    def fit(cls, x: Tensor) -> _Gaussian:
        x = x.double()
        mean = x.mean(0)
        cov = ledoit_wolf(x - mean)
        floor = 1e-6 * float(torch.diagonal(cov).mean()) + 1e-12  # all-constant descriptor
        cov = cov + floor * torch.eye(cov.shape[0], dtype=cov.dtype)
        return cls(mean, torch.linalg.inv(cov))

    def distance(self, x: Tensor) -> Tensor:
        """(N, D) -> (N,) Mahalanobis distances."""
        z = x.double() - self.mean
        return torch.einsum("nd,de,ne->n", z, self.precision, z).clamp_min(0).sqrt()


@dataclass(frozen=True)
class ShiftModel:
    """What a pipeline's training images looked like, to score how unlike them an image is.

    Attributes
    ----------
    features, intensity : _Gaussian
        The pooled backbone features and :func:`intensity_statistics` of the training images.
    feature_scale, intensity_scale : float
        Median distance of the validation images for each descriptor (the unit of the score).
    threshold : float
        An image whose ``shift_score`` exceeds it is ``shifted``: :data:`SHIFT_MARGIN` times
        the :data:`SHIFT_QUANTILE` quantile of the validation images' scores.
    val_shifted_fraction : float
        Fraction of the validation images above ``threshold`` (the per-image false-alarm
        rate on images like the training images).
    num_train, num_val : int
        Images the model was fitted on.
    """

    features: _Gaussian
    intensity: _Gaussian
    feature_scale: float
    intensity_scale: float
    threshold: float
    val_shifted_fraction: float
    num_train: int
    num_val: int

    @classmethod
    def fit(cls, train_pooled: Tensor, train_intensity: Tensor, val_pooled: Tensor,
            val_intensity: Tensor) -> ShiftModel:
        """Fit on the descriptors of training (N, C), (N, K) and validation (M, C), (M, K)
        images.

        Raises
        ------
        ValueError
            Fewer than 2 training or 1 validation image.
        """
        if train_pooled.shape[0] < 2 or val_pooled.shape[0] < 1:
            raise ValueError(f"a shift model needs at least 2 training and 1 validation "
                             f"images, got {train_pooled.shape[0]} and {val_pooled.shape[0]}")
        feats, inten = _Gaussian.fit(train_pooled), _Gaussian.fit(train_intensity)

        def scale(d: Tensor) -> float:
            return max(float(d.median()), 1e-6)

        f_scale = scale(feats.distance(val_pooled))
        i_scale = scale(inten.distance(val_intensity))
        partial = cls(feats, inten, f_scale, i_scale, math.inf, 0.0, train_pooled.shape[0],
                      val_pooled.shape[0])
        val = partial.score(val_pooled, val_intensity)
        threshold = SHIFT_MARGIN * float(torch.quantile(val, SHIFT_QUANTILE))
        return cls(feats, inten, f_scale, i_scale, threshold,
                   float((val > threshold).double().mean()), train_pooled.shape[0],
                   val_pooled.shape[0])

    def ratios(self, pooled: Tensor, intensity: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) pooled features and (B, K) intensity statistics -> their (B,) float64
        Mahalanobis distances, each in units of the validation images' median."""
        return (self.features.distance(pooled.cpu()) / self.feature_scale,
                self.intensity.distance(intensity.cpu()) / self.intensity_scale)

    def score(self, pooled: Tensor, intensity: Tensor) -> Tensor:
        """(B,) float64 shift scores: the pooled features' ratio of :meth:`ratios`
        (``intensity`` is accepted for the interface and not scored)."""
        return self.ratios(pooled, intensity)[0]

    # -- persistence: a dict of tensors and numbers (loads with weights_only=True) ----------
    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers."""
        out: dict[str, Any] = {"format": _FORMAT}
        for name in ("features", "intensity"):
            g: _Gaussian = getattr(self, name)
            out.update({f"{name}_mean": g.mean.float(),
                        f"{name}_precision": g.precision.float()})
        out.update(feature_scale=self.feature_scale, intensity_scale=self.intensity_scale,
                   threshold=self.threshold, val_shifted_fraction=self.val_shifted_fraction,
                   num_train=self.num_train, num_val=self.num_val)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShiftModel:
        """Inverse of :meth:`to_dict`."""
        def gaussian(name: str) -> _Gaussian:
            return _Gaussian(d[f"{name}_mean"].double(), d[f"{name}_precision"].double())

        return cls(gaussian("features"), gaussian("intensity"), float(d["feature_scale"]),
                   float(d["intensity_scale"]), float(d["threshold"]),
                   float(d["val_shifted_fraction"]), int(d["num_train"]), int(d["num_val"]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (a ``torch.save`` file of tensors), atomically."""
        atomic_write(path, lambda tmp: torch.save(self.to_dict(), tmp))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ShiftModel:
        """Read a file written by :meth:`save` (``weights_only=True``)."""
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            return cls.from_dict(d)
        except Exception as exc:
            raise ValueError(f"{path}: cannot load the shift model ({exc}); delete it and "
                             "refit with spinelandmarks.adaptation.fit_shift_model") from exc
