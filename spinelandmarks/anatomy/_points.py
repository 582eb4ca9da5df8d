"""Checks and masks shared by the anatomy functions and the metrics (private)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schema import LandmarkSchema


def _check_points(points: Tensor, schema: LandmarkSchema | None, name: str = "points") -> None:
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, P, 2), got {tuple(points.shape)}")
    if schema is not None and points.shape[1] != schema.num_points:
        raise ValueError(f"{name} has {points.shape[1]} points but schema {schema.name!r} "
                         f"has {schema.num_points}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {points.dtype}")


def _masked(points: Tensor, visibility: Tensor | None) -> Tensor:
    """``points`` with the points whose visibility is 0 set to NaN (a copy when masked)."""
    if visibility is None:
        return points
    if visibility.shape != points.shape[:-1]:
        raise ValueError(f"visibility must have shape {tuple(points.shape[:-1])}, "
                         f"got {tuple(visibility.shape)}")
    absent = (visibility.to(points.device) <= 0).unsqueeze(-1)
    return points.masked_fill(absent, math.nan)


def _present(points: Tensor) -> Tensor:
    """(B, P) bool: both coordinates finite."""
    return torch.isfinite(points).all(dim=-1)


def _nan(like: Tensor) -> Tensor:
    return torch.full((), math.nan, dtype=like.dtype, device=like.device)
