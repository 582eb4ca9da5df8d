"""Vertebra geometry from the points of a schema: body sizes and level centres (pixels)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schema import LUMBAR_SAGITTAL, LandmarkSchema
from ._points import _check_points, _masked
from .angles import Side

__all__ = ["level_centres", "vertebra_size"]


def _size_tables(schema: LandmarkSchema) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tables for :func:`vertebra_size`.

    Returns ``w_pairs`` (L, 2, 2) (two endplates, each (posterior, anterior)), ``h_pairs``
    (L, 2, 2) (anterior wall, posterior wall, each (superior, inferior)), both -1 where the
    segment does not exist, ``h_source`` (L,) the level whose walls give the height
    (-1 if none) and ``body`` (L,) bool.
    """
    nl = schema.num_levels
    w_pairs = torch.full((nl, 2, 2), -1, dtype=torch.long)
    h_pairs = torch.full((nl, 2, 2), -1, dtype=torch.long)
    body = torch.tensor([lv.has_body for lv in schema.levels])
    sides: tuple[Side, Side] = ("superior", "inferior")
    for i, lv in enumerate(schema.levels):
        for j, side in enumerate(sides):
            if schema.has_endplate(lv.name, side):
                e = schema.endplate(lv.name, side)
                w_pairs[i, j] = torch.tensor([e.posterior, e.anterior])
        if lv.has_body:
            for j, wall in enumerate(("anterior", "posterior")):
                h_pairs[i, j] = torch.tensor([schema.index(lv.name, f"{wall}_superior"),
                                              schema.index(lv.name, f"{wall}_inferior")])
    body_idx = [i for i in range(nl) if bool(body[i])]
    h_source = torch.full((nl,), -1, dtype=torch.long)
    for i in range(nl):
        if body[i]:
            h_source[i] = i
        else:
            before = [j for j in body_idx if j < i]
            after = [j for j in body_idx if j > i]
            if before:
                h_source[i] = before[-1]
            elif after:
                h_source[i] = after[0]
    return w_pairs, h_pairs, h_source, body


def _pair_lengths(points: Tensor, pairs: Tensor) -> Tensor:
    """Lengths (B, *pairs.shape[:-1]) of segments given by index pairs, NaN where index is -1."""
    pairs = pairs.to(points.device)
    valid = (pairs >= 0).all(dim=-1)
    safe = pairs.clamp_min(0)
    a = points[:, safe[..., 0]]
    b = points[:, safe[..., 1]]
    length = torch.linalg.vector_norm(a - b, dim=-1)
    return length.masked_fill(~valid, math.nan)


def vertebra_size(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                  visibility: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Width and height of every level, from ground-truth points (conventions section 5).

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Ground-truth pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Schema of the points.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    width, height : Tensor, shape (B, num_levels)
        Pixels. W = mean length of the superior and inferior endplates (mean over those
        present); H = mean length of the anterior (A_sup - A_inf) and posterior (P_sup - P_inf)
        walls (mean over those present). A level without four corners (S1) uses its endplate
        length as W and the height of the nearest preceding body level (L5) as H (the nearest
        following one if there is none before it). NaN where nothing needed is present.
    """
    _check_points(points, schema)
    points = _masked(points, visibility)
    w_pairs, h_pairs, h_source, _ = _size_tables(schema)
    width = torch.nanmean(_pair_lengths(points, w_pairs), dim=-1)  # (B, L)
    h_own = torch.nanmean(_pair_lengths(points, h_pairs), dim=-1)  # (B, L), NaN for non-body
    src = h_source.to(points.device)
    height = h_own[:, src.clamp_min(0)].masked_fill((src < 0).unsqueeze(0), math.nan)
    return width, height


def level_centres(points: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                  visibility: Tensor | None = None) -> Tensor:
    """Centre of every level: the mean of its points (NaN unless all of them are present).

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates, NaN where absent.
    schema : LandmarkSchema
        Schema of the points.
    visibility : Tensor, shape (B, P), optional
        0 marks an absent point.

    Returns
    -------
    Tensor, shape (B, num_levels, 2)
        Pixels. For a body level the mean of its four corners; for S1 the middle of its plate.
    """
    _check_points(points, schema)
    points = _masked(points, visibility)
    table = schema.level_point_table().to(points.device)  # (L, K), -1 padding
    valid = table >= 0
    pts = points[:, table.clamp_min(0)]  # (B, L, K, 2)
    total = torch.where(valid[None, :, :, None], pts, torch.zeros_like(pts)).sum(dim=2)
    return total / valid.sum(dim=1).to(points.dtype)[None, :, None]
