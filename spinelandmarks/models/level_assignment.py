"""The detector's raw boxes -> at most one box per level, levels in cranio-caudal order.

:func:`assign_levels` is a dynamic program over the candidates ordered along the spine; its
result for one image is a :class:`LevelDetections`. Boxes are ``(x1, y1, x2, y2)`` in
model-input pixels; labels are 1-based level indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["LevelDetections", "assign_levels"]


@dataclass
class LevelDetections:
    """One box per level of the schema for one image (the output of :func:`assign_levels`).

    Attributes
    ----------
    boxes : Tensor
        (K, 4) float32 ``(x1, y1, x2, y2)`` in model-input pixels, row ``k`` for level ``k``
        (0-based, schema order); NaN rows for levels not found.
    scores : Tensor
        (K,) float32 detector score of the chosen box for its level, 0 for levels not found.
    present : Tensor
        (K,) bool, whether the level was found.
    missing : list of str
        Names of the levels not found, in schema order.
    level_names : tuple of str
        Names of the K levels, in schema order.
    """

    boxes: Tensor
    scores: Tensor
    present: Tensor
    missing: list[str]
    level_names: tuple[str, ...]

    @property
    def num_levels(self) -> int:
        return int(self.present.shape[0])

    @property
    def labels(self) -> Tensor:
        """(n,) int64 1-based labels of the present levels (torchvision convention)."""
        return torch.nonzero(self.present).flatten() + 1

    def to(self, device: torch.device | str) -> LevelDetections:
        """Copy the tensors to ``device``."""
        return LevelDetections(self.boxes.to(device), self.scores.to(device),
                               self.present.to(device), list(self.missing), self.level_names)


def _spine_order(centres: Tensor, weights: Tensor) -> Tensor:
    """Order of points along the principal axis of their weighted centres, cranial first.

    Parameters
    ----------
    centres : Tensor
        (N, 2) float64 box centres in pixels (x, y).
    weights : Tensor
        (N,) float64 positive weights (detection scores).

    Returns
    -------
    Tensor
        (N,) int64 permutation sorting the centres from cranial (smaller y) to caudal.
    """
    n = centres.shape[0]
    if n <= 1:
        return torch.arange(n)
    w = weights / weights.sum()
    mean = (w[:, None] * centres).sum(0)
    d = centres - mean
    cov = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
    _, vecs = torch.linalg.eigh(cov)
    axis = vecs[:, -1]  # eigenvalues ascending: the last vector is the principal axis
    # Cranial is up in a lateral radiograph: orient the axis towards +y (x decides a tie, which
    # only happens for a horizontal spine and has no anatomical meaning).
    if axis[1] < -1e-9 or (abs(float(axis[1])) <= 1e-9 and axis[0] < 0):
        axis = -axis
    proj = d @ axis
    # Stable sort with y as tie-breaker keeps the order deterministic for coincident projections.
    order = sorted(range(n), key=lambda i: (round(float(proj[i]), 6), float(centres[i, 1])))
    return torch.tensor(order, dtype=torch.long)


def assign_levels(boxes: Tensor, scores: Tensor, labels: Tensor, num_levels: int,
                  min_score: float = 0.05, *, level_names: Sequence[str] | None = None,
                  group_iou: float = 0.5) -> LevelDetections:
    """Anatomically consistent levels from raw per-class detections of one image.

    1. Detections scoring at least ``min_score`` are grouped class-agnostically: in decreasing
       score order, a box joins the first group whose leading (best) box it overlaps with
       IoU >= ``group_iou``, else it leads a new group (NMS that keeps the suppressed boxes).
       A group is one candidate vertebra with a score per level: the best score of its members
       with that label (0 if none).
    2. Candidates are ordered along the spine: the principal axis of their score-weighted
       centres, oriented so that the cranial end has the smaller y (cranial is up in a standing
       lateral radiograph). The facing direction (left / right) plays no role.
    3. A dynamic program (Needleman-Wunsch / longest-common-subsequence style, O(N K)) chooses
       a monotone matching of levels 0..K-1 to candidates, levels strictly increasing along the
       axis, each used at most once, candidates and levels may be skipped, maximizing the sum of
       the matched candidates' scores for their levels. A level takes the box of the group's
       best member with that label (its class-specific regression).

    Parameters
    ----------
    boxes : Tensor
        (N, 4) ``(x1, y1, x2, y2)`` pixels.
    scores : Tensor
        (N,) detection scores in [0, 1].
    labels : Tensor
        (N,) int 1-based level labels; labels outside 1..K are ignored.
    num_levels : int
        K, levels of the schema.
    min_score : float
        Detections scoring below are ignored.
    level_names : sequence of str, optional
        Names of the K levels (default ``"1"`` .. ``"K"``), used for ``missing``.
    group_iou : float
        IoU above which two boxes are the same vertebra.

    Returns
    -------
    LevelDetections
        On the device of ``boxes``; boxes and scores float32.
    """
    names = tuple(level_names) if level_names is not None else tuple(
        str(k + 1) for k in range(num_levels))
    if len(names) != num_levels:
        raise ValueError(f"{len(names)} level names for {num_levels} levels")
    device = boxes.device
    b = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
    s = scores.detach().to("cpu", torch.float64).reshape(-1)
    lab = labels.detach().to("cpu", torch.long).reshape(-1)
    if not b.shape[0] == s.shape[0] == lab.shape[0]:
        raise ValueError(f"boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)} and labels "
                         f"{tuple(labels.shape)} disagree")
    keep = (s >= min_score) & (lab >= 1) & (lab <= num_levels) & torch.isfinite(b).all(1) \
        & torch.isfinite(s)
    b, s, lab = b[keep], s[keep], lab[keep] - 1

    out_boxes = torch.full((num_levels, 4), float("nan"), dtype=torch.float64)
    out_scores = torch.zeros(num_levels, dtype=torch.float64)
    present = torch.zeros(num_levels, dtype=torch.bool)
    if b.shape[0] > 0:
        by_score = torch.argsort(s, descending=True, stable=True)
        b, s, lab = b[by_score], s[by_score], lab[by_score]
        leaders, level_score, level_member = _group_detections(b, s, lab, num_levels,
                                                               group_iou)
        lead_boxes = b[leaders]
        order = _spine_order((lead_boxes[:, :2] + lead_boxes[:, 2:]) / 2,
                             level_score.max(1).values)
        for cand, k in _monotone_match(level_score[order].tolist(), num_levels):
            member = int(level_member[int(order[cand]), k])
            out_boxes[k], out_scores[k], present[k] = b[member], s[member], True
    missing = [names[k] for k in range(num_levels) if not present[k]]
    return LevelDetections(out_boxes.to(device, torch.float32),
                           out_scores.to(device, torch.float32), present.to(device), missing,
                           names)


def _group_detections(b: Tensor, s: Tensor, lab: Tensor, num_levels: int, group_iou: float
                      ) -> tuple[list[int], Tensor, Tensor]:
    """Class-agnostic grouping of score-sorted boxes, keeping every member (step 1).

    Returns the leader (best box) of each group, the (G, K) best score per group and level,
    and the (G, K) index of that member (-1 if none).
    """
    # Python lists: the loops below read single elements, which tensors make ~50x slower
    iou = box_iou(b, b).tolist()
    labels, scores = lab.tolist(), s.tolist()
    leaders: list[int] = []
    group_of = [0] * len(labels)
    for i, row in enumerate(iou):
        for g, lead in enumerate(leaders):
            if row[lead] >= group_iou:
                group_of[i] = g
                break
        else:
            group_of[i] = len(leaders)
            leaders.append(i)
    level_score = [[0.0] * num_levels for _ in leaders]
    level_member = [[-1] * num_levels for _ in leaders]
    for i, (g, k) in enumerate(zip(group_of, labels, strict=True)):
        if level_member[g][k] < 0:  # sorted by score: the first member of a label is its best
            level_member[g][k] = i
            level_score[g][k] = scores[i]
    return (leaders, torch.tensor(level_score, dtype=torch.float64).reshape(-1, num_levels),
            torch.tensor(level_member, dtype=torch.long).reshape(-1, num_levels))


def _monotone_match(sc: list[list[float]], num_levels: int) -> list[tuple[int, int]]:
    """Step 3: (candidate, level) pairs of the best monotone matching of the levels to the
    candidates in spine order (``sc[i][k]``: candidate i's score for level k)."""
    n = len(sc)
    dp = [[0.0] * (num_levels + 1) for _ in range(n + 1)]  # best total: i candidates, k levels
    for i in range(1, n + 1):
        row, prev = dp[i], dp[i - 1]
        for k in range(1, num_levels + 1):
            best = max(prev[k], row[k - 1])
            v = sc[i - 1][k - 1]
            if v > 0:
                best = max(best, prev[k - 1] + v)
            row[k] = best
    pairs: list[tuple[int, int]] = []
    i, k = n, num_levels
    while i > 0 and k > 0:
        v = sc[i - 1][k - 1]
        if v > 0 and dp[i][k] == dp[i - 1][k - 1] + v:
            pairs.append((i - 1, k - 1))
            i, k = i - 1, k - 1
        elif dp[i][k] == dp[i - 1][k]:
            i -= 1
        else:
            k -= 1
    return pairs
