"""Differentiable spatial to numerical transform (DSNT) and its losses.

Nibali et al., "Numerical coordinate regression with convolutional neural networks" (2018).
A network emits one logit map per point; a softmax over the whole map turns it into a
probability map and DSNT takes its expectation on a fixed coordinate grid, giving sub-pixel
coordinates that are differentiable end to end.

Coordinates are *normalized* (see ``CONVENTIONS.md``): the image edges are -1 and +1 and the
centre of pixel ``i`` of a map of width ``W`` sits at ``(2 i + 1) / W - 1``; outputs are
ordered (x, y). Every function here computes in float32, also under ``torch.autocast``: a
softmax and an expectation over ~10^4 cells lose too much in bf16/fp16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DSNTHead",
    "dsnt",
    "euclidean_loss",
    "flat_softmax",
    "gaussian_heatmaps",
    "heatmap_spread",
    "heatmap_variance",
    "js_reg_loss",
    "local_dsnt",
    "masked_mean",
    "normalized_linspace",
]

_EPS = 1e-24  # as in dsntnn's divergences; keeps log() finite on exact zeros


def _fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype != torch.float64 else x


def normalized_linspace(length: int, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> Tensor:
    """Pixel-centre positions of a map of ``length`` cells in normalized units.

    Returns
    -------
    Tensor
        (length,) with values ``(2 i + 1) / length - 1``.
    """
    return (torch.arange(length, dtype=dtype, device=device) * 2 + 1) / length - 1


def flat_softmax(logits: Tensor, beta: float = 1.0) -> Tensor:
    """Softmax over the two spatial dimensions of each map.

    Parameters
    ----------
    logits : Tensor
        (B, L, H, W) unnormalized scores, any float dtype.
    beta : float
        Inverse temperature; the logits are multiplied by it before the softmax.

    Returns
    -------
    Tensor
        (B, L, H, W) float32 probabilities that sum to 1 over (H, W) for every (B, L).
    """
    *lead, h, w = logits.shape
    with torch.autocast(device_type=logits.device.type, enabled=False):
        flat = _fp32(logits).reshape(*lead, h * w)
        if beta != 1.0:
            flat = flat * beta
        return F.softmax(flat, dim=-1).reshape(*lead, h, w)


def _marginals(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    return heatmaps.sum(-2), heatmaps.sum(-1)  # over rows -> (.., W); over columns -> (.., H)


def dsnt(heatmaps: Tensor) -> Tensor:
    """Expected (x, y) position of each probability map.

    Parameters
    ----------
    heatmaps : Tensor
        (B, L, H, W) probability maps (non-negative, summing to 1 over (H, W)).

    Returns
    -------
    Tensor
        (B, L, 2) float32 normalized coordinates (x, y) in [-1, 1].
    """
    with torch.autocast(device_type=heatmaps.device.type, enabled=False):
        hm = _fp32(heatmaps)
        mx, my = _marginals(hm)
        xs = normalized_linspace(hm.shape[-1], hm.dtype, hm.device)
        ys = normalized_linspace(hm.shape[-2], hm.dtype, hm.device)
        return torch.stack(((mx * xs).sum(-1), (my * ys).sum(-1)), dim=-1)


def local_dsnt(heatmaps: Tensor, radius: float) -> Tensor:
    """Expected (x, y) position of each map's mass near its peak (a local soft-argmax).

    The map is cut to the cells within ``radius`` cells of its largest cell, renormalized,
    and :func:`dsnt` is taken of what is left. Where a map is spread along a curve (the
    middle of a concave endplate) or has a second mode, its plain expectation lies off the
    curve or between the modes; this one stays on the peak's side. Not differentiable in the
    peak's position: an inference-time decoding.

    Parameters
    ----------
    heatmaps : Tensor
        (B, L, H, W) probability maps (non-negative, each summing to 1 over (H, W)).
    radius : float
        Radius of the kept disc in heatmap cells (> 0); a disc covering the whole map gives
        :func:`dsnt`.

    Returns
    -------
    Tensor
        (B, L, 2) float32 normalized coordinates (x, y) in [-1, 1].
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0 heatmap cells, got {radius}")
    with torch.autocast(device_type=heatmaps.device.type, enabled=False):
        hm = _fp32(heatmaps)
        h, w = hm.shape[-2:]
        peak = hm.flatten(-2).argmax(-1)  # (B, L)
        peak_y = torch.div(peak, w, rounding_mode="floor").to(hm.dtype)[..., None, None]
        peak_x = (peak % w).to(hm.dtype)[..., None, None]
        ys = torch.arange(h, dtype=hm.dtype, device=hm.device)[:, None]
        xs = torch.arange(w, dtype=hm.dtype, device=hm.device)[None, :]
        near = (ys - peak_y) ** 2 + (xs - peak_x) ** 2 <= radius ** 2
        kept = hm * near
        # the peak cell itself is always kept, so the sum is the peak's mass or more
        kept = kept / kept.sum((-2, -1), keepdim=True).clamp_min(_EPS)
        return dsnt(kept)


def heatmap_variance(heatmaps: Tensor) -> Tensor:
    """Variance of each probability map along x and y.

    Returns
    -------
    Tensor
        (B, L, 2) float32 variances in normalized units squared.
    """
    with torch.autocast(device_type=heatmaps.device.type, enabled=False):
        hm = _fp32(heatmaps)
        mx, my = _marginals(hm)
        xs = normalized_linspace(hm.shape[-1], hm.dtype, hm.device)
        ys = normalized_linspace(hm.shape[-2], hm.dtype, hm.device)
        mean_x = (mx * xs).sum(-1, keepdim=True)
        mean_y = (my * ys).sum(-1, keepdim=True)
        var_x = (mx * (xs - mean_x) ** 2).sum(-1)
        var_y = (my * (ys - mean_y) ** 2).sum(-1)
        return torch.stack((var_x, var_y), dim=-1)


def heatmap_spread(heatmaps: Tensor) -> Tensor:
    """Radial standard deviation of each map in heatmap pixels, a per-point uncertainty.

    ``sqrt(var_x * (W/2)^2 + var_y * (H/2)^2)``: small for a sharp, confident peak, large for
    a diffuse or multi-modal map. Map it to a score with e.g. ``1 / (1 + spread)``.

    Returns
    -------
    Tensor
        (B, L) float32 spread in pixels of the heatmap grid.
    """
    var = heatmap_variance(heatmaps)
    h, w = heatmaps.shape[-2:]
    scale = var.new_tensor([(w / 2) ** 2, (h / 2) ** 2])
    return (var * scale).sum(-1).clamp_min(0).sqrt()


def gaussian_heatmaps(means: Tensor, size: tuple[int, int], sigma_px: float) -> Tensor:
    """Isotropic Gaussians on the pixel-centre grid, normalized to sum to 1.

    Parameters
    ----------
    means : Tensor
        (B, L, 2) normalized (x, y) centres.
    size : tuple of int
        (H, W) of the maps.
    sigma_px : float
        Standard deviation in pixels of the map.

    Returns
    -------
    Tensor
        (B, L, H, W) float32 probability maps.
    """
    h, w = size
    m = _fp32(means)
    xs = normalized_linspace(w, m.dtype, m.device)
    ys = normalized_linspace(h, m.dtype, m.device)
    # A pixel spans 2/W normalized units, so sigma_px pixels are 2 * sigma_px / W units.
    sx, sy = 2 * sigma_px / w, 2 * sigma_px / h
    gx = torch.exp(-0.5 * ((xs - m[..., 0:1]) / sx) ** 2)  # (B, L, W)
    gy = torch.exp(-0.5 * ((ys - m[..., 1:2]) / sy) ** 2)  # (B, L, H)
    g = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return g / (g.sum(dim=(-2, -1), keepdim=True) + _EPS)


def js_reg_loss(heatmaps: Tensor, means: Tensor, sigma_px: float) -> Tensor:
    """Jensen-Shannon divergence between each map and a Gaussian at the target.

    The regularizer of DSNT: it shapes the heatmap into a compact blob around the target so
    that the expectation cannot be matched by a spread-out or bimodal map.

    Parameters
    ----------
    heatmaps : Tensor
        (B, L, H, W) probability maps.
    means : Tensor
        (B, L, 2) normalized target (x, y).
    sigma_px : float
        Target Gaussian standard deviation in heatmap pixels.

    Returns
    -------
    Tensor
        (B, L) float32 divergences (natural log).
    """
    with torch.autocast(device_type=heatmaps.device.type, enabled=False):
        p = _fp32(heatmaps)
        q = gaussian_heatmaps(means.to(p.dtype), (p.shape[-2], p.shape[-1]), sigma_px)
        # JS = (KL(p||m) + KL(q||m)) / 2 with m = (p + q) / 2; log m computed once (dsntnn
        # computes it twice).
        log_m = (0.5 * (p + q) + _EPS).log()
        terms = p * ((p + _EPS).log() - log_m) + q * ((q + _EPS).log() - log_m)
        return 0.5 * terms.sum(dim=(-2, -1))


def euclidean_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Euclidean distance per point, with a finite (zero) gradient at zero distance.

    ``torch.norm`` has a NaN gradient when prediction and target coincide, which happens
    with padded or exactly-fitted points; this version does not.

    Parameters
    ----------
    pred, target : Tensor
        (..., 2) coordinates.

    Returns
    -------
    Tensor
        (...) distances, in the units of the inputs.
    """
    sq = ((_fp32(pred) - _fp32(target)) ** 2).sum(-1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.where(nonzero, sq, torch.ones_like(sq)).sqrt(),
                       torch.zeros_like(sq))


def masked_mean(losses: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``losses`` over the entries where ``mask`` is true (0 if none are).

    Entries outside the mask may be NaN or inf (absent points): they are replaced, not
    multiplied, so they cannot poison the mean or its gradient.

    Parameters
    ----------
    losses : Tensor
        (B, L) per-point losses.
    mask : Tensor, optional
        (B, L) bool or {0, 1}; None means all entries.

    Returns
    -------
    Tensor
        Scalar.
    """
    if mask is None:
        return losses.mean()
    m = mask.to(torch.bool)
    kept = torch.where(m, losses, torch.zeros_like(losses))
    return kept.sum() / m.sum().clamp_min(1).to(kept.dtype)


class DSNTHead(nn.Module):
    """1x1 convolution to one logit map per point, flat softmax, DSNT.

    Parameters
    ----------
    in_channels : int
        Channels of the input feature map.
    num_points : int
        Points to predict (one heatmap each).
    beta : float
        Inverse softmax temperature.

    Shapes
    ------
    ``forward(features)``: (B, C, H, W) -> coordinates (B, P, 2) float32 normalized (x, y)
    and heatmaps (B, P, H, W) float32.
    """

    def __init__(self, in_channels: int, num_points: int, beta: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_points, kernel_size=1)
        self.beta = beta

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps = flat_softmax(self.conv(features), beta=self.beta)
        return dsnt(heatmaps), heatmaps
