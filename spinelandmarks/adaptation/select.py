"""Which images of a new source to annotate: uncertain ones, spread over the archive.

:func:`select_images` predicts every candidate, scores how unsure the pipeline is of it
(:func:`uncertainty`: the QC flags and the statistics behind them, in units of the
pipeline's QC thresholds) and picks ``n`` by greedy uncertainty-weighted k-center on the
step-1 backbone's pooled features (:func:`diverse_order`): each pick maximizes
``(1 + uncertainty) x distance to the images already picked``, so that ``n`` images are not
``n`` copies of the same failure. ``spinelandmarks select`` is its command line.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..inference import SpineLandmarkPipeline, SpineResult
from ..qc import qc_statistics
from .features import pooled_features

__all__ = ["RATIO_CAP", "Selection", "diverse_order", "select_images", "uncertainty"]

_log = logging.getLogger(__name__)

#: A statistic counts at most this many times its QC threshold in :func:`uncertainty` (one
#: wild value must not outweigh the flags of another image).
RATIO_CAP = 5.0


@dataclass(frozen=True)
class Selection:
    """One image chosen for annotation.

    Attributes
    ----------
    path : Path
        The image.
    score : float
        Its :func:`uncertainty` (0: nothing doubtful; each raised QC flag or missing level
        adds 1, the largest statistic adds its ratio to its threshold).
    reason : str
        Why, in words.
    rank : int
        1 for the most informative image.
    distance : float
        Distance of its pooled features to the nearest image chosen before, in units of the
        candidates' median nearest-neighbour distance (inf for the first).
    result : SpineResult or None
        The pipeline's prediction (the pre-annotation to correct).
    """

    path: Path
    score: float
    reason: str
    rank: int = 0
    distance: float = math.inf
    result: SpineResult | None = field(default=None, compare=False, repr=False)


def uncertainty(result: SpineResult, pipeline: SpineLandmarkPipeline) -> tuple[float, str]:
    """How unsure the pipeline is of one prediction, and why in words.

    ``(number of QC flag entries raised + missing levels) + the largest of`` the heatmap
    spread, the step-1 to step-2 jump, the distance to the detector's box (each per level,
    over the body height, divided by its QC threshold) and the step-1 / step-2 disagreement
    of any clinical angle over ``steps_disagree_deg``; each ratio at most :data:`RATIO_CAP`.

    Parameters
    ----------
    result : SpineResult
    pipeline : SpineLandmarkPipeline
        Its QC thresholds are the units.

    Returns
    -------
    score : float
    reason : str
    """
    th = pipeline.options.qc_thresholds
    schema = pipeline.schema

    def t(x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float64))[None]

    det = bool(np.isfinite(result.level_boxes).any())
    stats = qc_statistics(t(result.points), t(result.points_step1), t(result.point_scores),
                          schema, t(result.level_boxes) if det else None,
                          t(result.level_scores) if det else None)
    ratios = {"heatmap spread": _max(stats["spread_frac"]) / th.max_spread_frac,
              "step 1-2 jump": _max(stats["refinement_jump_frac"]) / th.refinement_jump_frac,
              "detector distance": _max(stats["detector_distance_frac"])
              / th.detector_distance_frac}
    angles = [abs(v - result.parameters_step1.get(k, math.nan))
              for k, v in result.parameters.items()]
    ratios["step 1-2 angle"] = _max(np.array(angles)) / th.steps_disagree_deg
    name, worst = max(((k, min(v, RATIO_CAP)) for k, v in ratios.items()),
                      key=lambda kv: kv[1])
    flags = sum(len(v) for v in result.qc.values())
    missing = len(result.missing_levels)
    raised = "; ".join(f"{k}: {' '.join(v)}" for k, v in result.qc.items())
    parts = [f"{flags} QC flag(s)" + (f" ({raised})" if flags else "")]
    if missing:
        parts.append(f"missing {' '.join(result.missing_levels)}")
    parts.append(f"{name} {worst:.2f} x its threshold")
    return float(flags + missing + worst), ", ".join(parts)


def _max(x: Tensor | np.ndarray) -> float:
    """Largest finite value, 0 when none."""
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def diverse_order(features: Tensor, scores: Sequence[float], n: int, *, seed: int = 0
                  ) -> list[tuple[int, float]]:
    """Greedy uncertainty-weighted k-center: ``n`` indices, most informative first.

    The first pick is the most uncertain; each next one maximizes
    ``(1 + score) x d``, with ``d`` the Euclidean distance of its standardized features to
    the nearest image picked before, in units of the median nearest-neighbour distance of
    the candidates. An image (near-)identical to one already picked has ``d`` about 0 and
    comes after every image that differs.

    Parameters
    ----------
    features : Tensor
        (N, C) pooled features.
    scores : sequence of float
        (N,) uncertainties, >= 0.
    n : int
        How many to pick (at most N).
    seed : int
        Order among exact ties.

    Returns
    -------
    list of (int, float)
        ``(index, d)`` per pick, ``d`` = inf for the first.
    """
    x = features.double()
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8) if x.shape[0] > 1 else x
    dist = torch.cdist(x, x)
    num = x.shape[0]
    nearest = dist + torch.diag(torch.full((num,), math.inf, dtype=dist.dtype))
    unit = float(nearest.min(1).values.median()) if num > 1 else 1.0
    unit = unit if math.isfinite(unit) and unit > 0 else 1.0
    weight = 1.0 + torch.tensor(list(scores), dtype=torch.float64).clamp_min(0)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(num))  # tie-breaking
    gap = torch.full((num,), math.inf, dtype=torch.float64)
    picked: list[tuple[int, float]] = []
    for _ in range(min(n, num)):
        value = torch.where(torch.isinf(gap), weight * 1e12, weight * gap / unit)
        value[[i for i, _ in picked]] = -1.0
        best = int(order[int(torch.argmax(value[order]))])
        picked.append((best, float(gap[best] / unit)))
        gap = torch.minimum(gap, dist[best])
    return picked


def select_images(pipeline: SpineLandmarkPipeline, paths: Sequence[str | os.PathLike[str]],
                  n: int, *, seed: int = 0, batch_size: int = 8) -> list[Selection]:
    """Rank images of a new source by how much annotating them would teach the pipeline.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
    paths : sequence of path
        Candidate radiographs.
    n : int
        How many to choose (fewer when fewer images can be read).
    seed : int
        Order among exact ties.
    batch_size : int

    Returns
    -------
    list of Selection
        Most informative first. An image that cannot be read is reported (log) and skipped.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    files = [Path(p) for p in paths]
    results = pipeline.predict(files, batch_size=batch_size)
    good = [(f, r) for f, r in zip(files, results, strict=True) if r.error is None]
    for f, r in zip(files, results, strict=True):
        if r.error is not None:
            _log.warning("%s: skipped (%s)", f, r.error)
    if not good:
        raise ValueError("select: none of the images could be read")
    feats = pooled_features(pipeline, [f for f, _ in good], batch_size)
    scored = [uncertainty(r, pipeline) for _, r in good]
    picks = diverse_order(feats, [s for s, _ in scored], n, seed=seed)
    return [Selection(good[i][0], scored[i][0], scored[i][1] + (
        "" if math.isinf(d) else f", {d:.2f} from the images chosen before"), rank=k + 1,
        distance=d, result=good[i][1]) for k, (i, d) in enumerate(picks)]
