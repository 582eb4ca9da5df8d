"""Level identification: which vertebra is L1, L2, ...? Step 1 and the detector must agree.

Two networks name the levels: the detector (a box per level, ordered along the spine by
:func:`~spinelandmarks.models.detector.assign_levels`) and the step-1 landmark model (every
corner of every level at once). On data unlike their training data each can slip by a level:
the landmark chain drawn one vertebra too high (L1 on T12) or collapsed (L5 on the sacral
plate), the detector missing a body and naming every body above it one level too low. The
rules here reconcile them, vectorized over a batch:

1. :func:`anchor_to_sacrum` -- the sacrum is the anchor: counting upwards from S1, the number
   of bodies between two detected levels follows from their distance (body spacing is
   continuous along the lumbar spine), so a gap of two spacings between levels named
   consecutively means a body was missed, and the levels above it are renamed one further up.
2. :func:`reconcile_chain` -- every step-1 level must lie in the detector's box of the same
   level. A level that does not is moved to its box: it takes the step-1 points of the
   step-1 level that does lie in the box (the corners the landmark model drew on that
   vertebra, under another name), or, when none does, its own points translated to the box
   centre. Step 2 then refines the corners from there.

3. :func:`consistent_facing` -- all vertebrae of a spine face the same way, and a standing
   spine is lordotic with a sacral plate sloping down anteriorly: levels drawn mirrored are
   turned, and so is a whole spine drawn facing the implausible way.

4. :func:`column_expectation` -- after step 2, each level must continue the column: its centre
   one typical body spacing from its neighbour's, along that body's axis (the sacral plate's
   normal for S1). The pipeline walks up from the sacrum; a level further than half a body
   height from where the column below it continues, and from where the level above it says
   it should be (a level consistent with one neighbour is kept: that neighbour may be the
   wrong one), is re-cropped where the column below continues and refined again, and the
   new corners are kept when they land there (``column_repair``). On data
   unlike its training data the step-1 chain often puts one level half-way onto the next
   vertebra (L1 between T12 and L1, L5 on the sacral plate), and a refiner given that crop
   converges to either body; the refiner itself is accurate once its crop holds one body.

Which network to trust when they disagree was decided by measurement on the validation sets of
the cross-style benchmark (``docs/training.md``, "Level identification"): where the detector
and the step-1 chain disagreed, the chain was right more often, so the pipeline keeps the
chain and reports the disagreement as a QC flag. Rules 1 and 2 are therefore not applied by
the pipeline since 0.2 (its ``level_rule="detector"`` option was removed); they stay here,
tested, for those who study level identification. Rules 3 (``facing_check``) and 4
(:func:`repair_column`, ``column_repair``) are on by default.
Which levels are present at all is decided from the detector's scores by
:func:`confirm_levels` (hysteresis along the spine, gaps filled). What cannot be reconciled is
reported by the QC flags (:mod:`spinelandmarks.qc`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .anatomy.angles import schema_parameters
from .anatomy.vertebrae import level_centres, vertebra_size
from .schema import LandmarkSchema

__all__ = ["COLUMN_TOLERANCE", "COLUMN_WINDOW", "PRESENCE_GRID", "RefineLevel",
           "anchor_to_sacrum", "column_expectation", "confirm_levels", "consistent_facing",
           "fit_presence", "off_column", "reconcile_chain", "repair_column"]

#: A level further than this many typical body heights from where the column below it
#: continues is re-cropped (:func:`column_expectation`).
COLUMN_TOLERANCE = 0.5

#: Body size grows down the spine (a lumbar body is about half as tall again as a mid-thoracic
#: one), so the typical spacing and height behind an expectation are medians over the levels
#: within this many levels of the pair judged, not over the whole chain. On the short schemas
#: (L1-S1, T12-S1) the window holds every level.
COLUMN_WINDOW = 4


def _box_centres(boxes: Tensor) -> Tensor:
    return 0.5 * (boxes[..., :2] + boxes[..., 2:])


def anchor_to_sacrum(boxes: Tensor, scores: Tensor, present: Tensor, schema: LandmarkSchema,
                     max_gap: float = 1.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rename detected levels by counting bodies upwards from the most caudal level.

    Parameters
    ----------
    boxes : Tensor, shape (B, L, 4)
        ``(x1, y1, x2, y2)`` per level of ``schema`` (NaN where absent).
    scores : Tensor, shape (B, L)
        Detector score per level; renamed with the boxes.
    present : Tensor, shape (B, L)
        bool, the level was found.
    schema : LandmarkSchema
        Levels in cranio-caudal order; pairs of levels with a body (all but the sacral plate)
        set the image's typical centre-to-centre spacing (their median).
    max_gap : float
        Centre distance, in typical spacings, above which two levels named consecutively are
        taken to have ``round(distance / spacing) - 1`` missed bodies between them.

    Returns
    -------
    boxes, scores, present : Tensor
        Renamed: a level with ``n`` missed bodies below it (between it and the caudal end) is
        renamed ``n`` levels further up; one renamed above the first level drops out (it was a
        thoracic vertebra). Unchanged where the spacing is continuous.
    renamed : Tensor, shape (B,)
        bool, images whose levels were renamed.

    Examples
    --------
    Boxes named L1..L5 and S1, with the body between the boxes named L3 and L4 missed (a
    double gap): counting up from S1, the box named L3 is L2, L2 is L1 and L1 is T12.

    >>> from spinelandmarks.schema import LUMBAR_SAGITTAL as S
    >>> y = torch.tensor([0.0, 40.0, 80.0, 160.0, 200.0, 240.0])
    >>> boxes = torch.stack([torch.zeros(6), y, torch.full((6,), 30.0), y + 30], -1)[None]
    >>> ones = torch.ones(1, 6)
    >>> _, _, present, renamed = anchor_to_sacrum(boxes, ones, ones.bool(), S)
    >>> present.int().tolist(), renamed.tolist()
    ([[1, 1, 0, 1, 1, 1]], [True])
    """
    b, nl = present.shape
    present = present.bool()
    body = torch.tensor([lv.has_body for lv in schema.levels], device=boxes.device)
    c = _box_centres(boxes)
    step = torch.linalg.vector_norm(c[:, 1:] - c[:, :-1], dim=-1)  # (B, L-1), NaN if absent
    pairs = (body[:-1] & body[1:])[None] & present[:, :-1] & present[:, 1:]
    typical = torch.where(pairs, step, torch.full_like(step, float("nan")))
    typical = typical.nanmedian(dim=1, keepdim=True).values  # (B, 1)
    ratio = step / typical
    extra = torch.where(pairs & (ratio > max_gap), torch.round(ratio) - 1,
                        torch.zeros_like(ratio)).long()  # missed bodies in each gap
    # missed bodies below each level (between it and the caudal end)
    shift = torch.cat([extra.flip(1).cumsum(1).flip(1), extra.new_zeros(b, 1)], dim=1)
    target = torch.arange(nl, device=boxes.device)[None] - shift  # new index of each level
    keep = present & (target >= 0)
    target = torch.where(keep, target, torch.full_like(target, nl))  # nl: a discard column
    new_boxes = boxes.new_full((b, nl + 1, 4), float("nan"))
    new_boxes.scatter_(1, target[..., None].expand(-1, -1, 4), boxes)
    new_scores = scores.new_zeros(b, nl + 1)
    new_scores.scatter_(1, target, scores)
    new_present = present.new_zeros(b, nl + 1)
    new_present.scatter_(1, target, keep)
    return (new_boxes[:, :nl], new_scores[:, :nl], new_present[:, :nl],
            (shift > 0).any(dim=1))


def reconcile_chain(points: Tensor, boxes: Tensor, present: Tensor, schema: LandmarkSchema,
                    tolerance: float = 0.5) -> tuple[Tensor, Tensor]:
    """Move every step-1 level that is not in the detector's box of its name into it.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Step-1 points in image pixels.
    boxes : Tensor, shape (B, L, 4)
        Detector boxes in the same pixels (NaN where the detector has none).
    present : Tensor, shape (B, L)
        bool, levels with a box to check against.
    schema : LandmarkSchema
    tolerance : float
        A level agrees with a box when its centre is within ``tolerance`` box heights of the
        box centre.

    Returns
    -------
    points : Tensor, shape (B, P, 2)
        Reconciled step-1 points.
    moved : Tensor, shape (B, L)
        bool, the levels that were moved.
    """
    table = schema.level_point_table().to(points.device)  # (L, K), -1 padding
    valid = table >= 0
    c = level_centres(points, schema)  # (B, L, 2)
    d = _box_centres(boxes.to(points.dtype))  # (B, L, 2)
    h = (boxes[..., 3] - boxes[..., 1]).to(points.dtype)  # (B, L)
    # inside[b, j, k]: step-1 level j lies in box k
    dist = torch.linalg.vector_norm(c[:, :, None] - d[:, None], dim=-1)
    inside = dist <= tolerance * h[:, None, :]
    agree = torch.diagonal(inside, dim1=1, dim2=2)  # (B, L)
    body = torch.tensor([lv.has_body for lv in schema.levels], device=points.device)
    usable = torch.isfinite(boxes).all(-1) & (h > 0) & (boxes[..., 2] > boxes[..., 0])
    moved = present.bool() & ~agree & usable
    same_shape = torch.tensor([[int(valid[j].sum()) == int(valid[k].sum())
                                for k in range(schema.num_levels)]
                               for j in range(schema.num_levels)], device=points.device)
    candidate = inside & same_shape[None]  # a level with the same point layout in the box
    dist_c = torch.where(candidate, dist, torch.full_like(dist, float("inf")))
    best = dist_c.argmin(dim=1)  # (B, L): step-1 level closest to box k
    has = torch.isfinite(dist_c.gather(1, best[:, None]).squeeze(1))
    # a plate (S1) is not a body: its box centre is not its centre, so it is only ever moved
    # onto step-1 points that lie in its box
    moved = moved & (has | body[None])
    per_level = points[:, table.clamp_min(0)]  # (B, L, K, 2)
    borrowed = per_level.gather(1, best[:, :, None, None].expand_as(per_level))
    shifted = per_level + (d - c)[:, :, None, :]
    new = torch.where(has[..., None, None], borrowed, shifted)
    new = torch.where(moved[..., None, None], new, per_level)
    out = points.clone()
    out[:, table[valid]] = new[:, valid]
    return out, moved


def _swap_table(schema: LandmarkSchema) -> Tensor:
    """(P,) index of each point with anterior and posterior exchanged within its level."""
    perm = list(range(schema.num_points))
    for lv in schema.levels:
        for name in lv.points:
            for a, b in (("anterior", "posterior"), ("posterior", "anterior")):
                if name.startswith(a):
                    other = b + name[len(a):]
                    if other in lv.points:
                        perm[schema.index(lv.name, name)] = schema.index(lv.name, other)
    return torch.tensor(perm, dtype=torch.long)


def consistent_facing(points: Tensor, schema: LandmarkSchema, implausible_deg: float = -5.0
                      ) -> tuple[Tensor, Tensor]:
    """Give every level of a spine the same facing, and the spine the plausible one.

    All vertebrae of a spine face the same way, so a level whose anterior points lie on the
    other side of its posterior points than in most levels has them exchanged (a network that
    is unsure of the facing on unfamiliar images draws some levels mirrored). If the spine as a
    whole then has both a sacral slope and an L1-S1 lordosis below ``implausible_deg`` (a
    standing spine has a sacral plate sloping down anteriorly and a lordotic lumbar spine), its
    facing is the wrong one and every level is exchanged; a schema without those endplates
    (cervical levels) keeps the majority's facing.

    Parameters
    ----------
    points : Tensor, shape (B, P, 2)
        Pixel coordinates (NaN for levels not found).
    schema : LandmarkSchema
        Point names ``anterior_*`` / ``posterior_*`` are exchanged within each level.
    implausible_deg : float
        Threshold of the whole-spine check, degrees.

    Returns
    -------
    points : Tensor, shape (B, P, 2)
    swapped : Tensor, shape (B, L)
        bool, levels whose anterior and posterior points were exchanged.
    """
    perm = _swap_table(schema).to(points.device)
    table = schema.level_point_table().to(points.device)
    valid = table >= 0
    swapped_pts = points[:, perm]
    # facing of each level: sign of (anterior x - posterior x), summed over its points
    dx = (points[..., 0] - swapped_pts[..., 0]) * (perm != torch.arange(
        schema.num_points, device=points.device)).to(points.dtype)
    is_anterior = torch.tensor([n.split("_")[0] == "anterior" for lv in schema.levels
                                for n in lv.points], device=points.device)
    dx = torch.where(is_anterior[None], dx, torch.zeros_like(dx)).nan_to_num(0.0)
    per_level = dx[:, table.clamp_min(0)].masked_fill(~valid[None], 0.0).sum(-1)  # (B, L)
    level_face = torch.sign(per_level)
    majority = torch.sign(level_face.sum(dim=1, keepdim=True))
    flip = (level_face != 0) & (majority != 0) & (level_face != majority)
    out = _apply_swap(points, swapped_pts, flip, schema)
    params = schema_parameters(out.double(), schema)
    if {"sacral_slope", "l1_s1_lordosis"} <= params.keys():  # else: the majority alone
        wrong_way = (params["sacral_slope"] < implausible_deg) & \
            (params["l1_s1_lordosis"] < implausible_deg)
        flip = flip ^ (wrong_way[:, None] & (level_face != 0))
    return _apply_swap(points, swapped_pts, flip, schema), flip


def _apply_swap(points: Tensor, swapped: Tensor, flip: Tensor, schema: LandmarkSchema
                ) -> Tensor:
    point_flip = flip[:, schema.point_level.to(points.device)]  # (B, P)
    return torch.where(point_flip[..., None], swapped, points)



_SIDES: tuple[Literal["superior"], Literal["inferior"]] = ("superior", "inferior")


def _axis(points: Tensor, schema: LandmarkSchema, level: int, towards: Tensor) -> Tensor:
    """(B, 2) unit cranial axis of one level: inferior to superior endplate middle for a body,
    the plate's normal turned towards ``towards`` (B, 2) for a plate-only level (S1, or a
    level with its inferior plate only); the direction to ``towards`` for a level without an
    endplate."""
    name = schema.levels[level].name
    sides = [side for side in _SIDES if schema.has_endplate(name, side)]
    if not sides:  # no plate to orient by (one point per level)
        centre = points[:, schema.level_indices(name)].mean(dim=1)
        axis = towards - centre
        return axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
    sup = schema.endplate(name, sides[0])
    top = 0.5 * (points[:, sup.anterior] + points[:, sup.posterior])
    if schema.levels[level].has_body:
        inf = schema.endplate(name, "inferior")
        axis = top - 0.5 * (points[:, inf.anterior] + points[:, inf.posterior])
    else:
        plate = points[:, sup.posterior] - points[:, sup.anterior]
        axis = torch.stack((-plate[:, 1], plate[:, 0]), -1)
        flip = ((towards - top) * axis).sum(-1, keepdim=True) < 0
        axis = torch.where(flip, -axis, axis)
    return axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True)


def column_expectation(points: Tensor, schema: LandmarkSchema, level: int, anchor: int,
                       spans: int = 1) -> tuple[Tensor, Tensor]:
    """Where the column continues from level ``anchor``: the expected centre of ``level``.

    The expected centre is the typical centre-to-centre spacing of the image's bodies (their
    median over the consecutive body pairs within :data:`COLUMN_WINDOW` levels of ``level``
    and ``anchor``) from the centre of ``anchor`` along its axis, towards
    ``level`` (cranially when ``anchor`` lies caudally, else caudally); when either is a
    plate-only level (S1, whose centre is its plate middle) the spacing less half the
    typical body height. Medians keep one or two misplaced levels from moving the
    expectation.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) pixels, NaN where absent.
    schema : LandmarkSchema
    level, anchor : int
        Level indices (e.g. L4 from L5, L5 from S1, L4 from L3).
    spans : int
        Spacings between them (2 for L3 from L5).

    Returns
    -------
    expected : Tensor
        (B, 2) pixels; NaN when ``anchor`` or the typical sizes are unknown.
    height : Tensor
        (B,) typical body height in pixels (the median wall length of the image's bodies within
        :data:`COLUMN_WINDOW` levels).

    Examples
    --------
    A straight vertical column of 20-pixel bodies 30 pixels apart, with L1 misplaced:

    >>> from spinelandmarks.schema import LUMBAR_SAGITTAL as S
    >>> rows = []
    >>> for i in range(5):
    ...     y = 30.0 * i
    ...     rows += [[20.0, y], [0.0, y], [0.0, y + 20.0], [20.0, y + 20.0]]
    >>> rows += [[20.0, 160.0], [0.0, 160.0]]          # the sacral plate
    >>> pts = torch.tensor([rows])
    >>> pts[0, :4, 1] -= 14.0                          # L1 drawn 14 px too high
    >>> expected, height = column_expectation(pts, S, 0, 1)
    >>> expected.tolist(), height.tolist()
    ([[10.0, 10.0]], [20.0])
    """
    _, heights = vertebra_size(points, schema)
    centres = level_centres(points, schema)
    body = torch.tensor([lv.has_body for lv in schema.levels], device=points.device)
    pair = body[:-1] & body[1:]
    gaps = torch.linalg.vector_norm(centres[:, 1:] - centres[:, :-1], dim=-1)
    gaps = gaps.masked_fill(~pair, math.nan)
    heights = heights.masked_fill(~body, math.nan)
    lo, hi = max(min(level, anchor) - COLUMN_WINDOW, 0), max(level, anchor) + COLUMN_WINDOW
    spacing = _nanmedian(gaps[:, lo:hi])  # pairs lo..hi-1 link levels lo..hi
    height = _nanmedian(heights[:, lo:hi + 1])
    towards = centres[:, body].nanmean(dim=1)
    axis = _axis(points, schema, anchor, towards)
    if level > anchor:  # schema order is cranio-caudal: walk caudally
        axis = -axis
    # Where the column behind the anchor is known, continue its line instead: two centres
    # are steadier than the axis of one body's four predicted corners.
    behind = anchor + (1 if level < anchor else -1)
    if 0 <= behind < schema.num_levels and bool(body[behind] | body[anchor]):
        line = centres[:, anchor] - centres[:, behind]
        line = line / torch.linalg.vector_norm(line, dim=-1, keepdim=True)
        axis = torch.where(torch.isfinite(line).all(-1, keepdim=True), line, axis)
    step = spans * spacing
    if not bool(body[anchor] & body[level]):
        step = step - 0.5 * height
    return centres[:, anchor] + axis * step[:, None], height


def _nanmedian(values: Tensor) -> Tensor:
    """(B, N) -> (B,) median over the finite values; NaN where none (or N == 0)."""
    if values.shape[1] == 0:
        return values.new_full(values.shape[:1], math.nan)
    return values.nanmedian(dim=-1).values


def off_column(points: Tensor, schema: LandmarkSchema, order: list[int], j: int
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Whether level ``order[j]`` lies off the column, judged from both sides.

    Off means further than :data:`COLUMN_TOLERANCE` typical body heights from where the
    column continues from the level below (``order[j + 1]``) *and* from where the level above
    (``order[j - 1]``; for the top level, ``order[j + 2]`` two spacings away) says it should
    be: a level consistent with one neighbour is kept, as that neighbour may be the misplaced
    one. A NaN expectation is no evidence either way; a level or neighbour not found is never
    off.

    Parameters
    ----------
    points : Tensor
        (B, P, 2) pixels, NaN where absent.
    schema : LandmarkSchema
    order : list of int
        Level indices of the column, cranio-caudal (the refined levels).
    j : int
        Position in ``order`` of the level judged; ``order[j + 1]`` must exist.

    Returns
    -------
    off : Tensor
        (B,) bool.
    expected : Tensor
        (B, 2) expectation from below (pixels).
    tolerance : Tensor
        (B,) pixels.
    """
    level = order[j]
    expected, height = column_expectation(points, schema, level, order[j + 1])
    tolerance = COLUMN_TOLERANCE * height
    centre = level_centres(points, schema)[:, level]
    off = torch.linalg.vector_norm(centre - expected, dim=-1) > tolerance
    if j > 0:
        second, _ = column_expectation(points, schema, level, order[j - 1])
    elif j + 2 < len(order):
        second, _ = column_expectation(points, schema, level, order[j + 2], spans=2)
    else:
        return off, expected, tolerance
    off &= ~(torch.linalg.vector_norm(centre - second, dim=-1) <= tolerance)
    return off, expected, tolerance


#: ``refine(rows, points, scores, level)`` for :func:`repair_column`: refine level ``level``
#: of the batch rows ``rows`` (a (R,) index tensor) from ``points``/``scores`` (R, P, ...) and
#: return the refined points (R, P, 2), scores (R, P) and body masks (key -> (R, L, ...)).
RefineLevel = Callable[[Tensor, Tensor, Tensor, int],
                       tuple[Tensor, Tensor, dict[str, Tensor]]]


def repair_column(points: Tensor, scores: Tensor, body: dict[str, Tensor],
                  schema: LandmarkSchema, refine: RefineLevel
                  ) -> tuple[Tensor, Tensor, dict[str, Tensor], Tensor]:
    """Rule 4: walking up from the caudal-most refined level, a level off the column
    (:func:`off_column`) is moved to where the column below continues and refined there
    (twice); the result replaces it when it lands within :data:`COLUMN_TOLERANCE` body
    heights of the expectation and not within 0.75 body heights of another level (a body
    taken).

    Parameters
    ----------
    points : Tensor
        (B, P, 2) step-2 points, pixels.
    scores : Tensor
        (B, P) their confidences.
    body : dict of str to Tensor
        Body masks per level, (B, L, ...) each (may be empty).
    schema : LandmarkSchema
    refine : RefineLevel
        Step 2 on one level of some rows (the pipeline's refiner).

    Returns
    -------
    points, scores, body
        Copies with the repaired levels replaced.
    repaired : Tensor
        (B, L) bool.
    """
    points, scores = points.clone(), scores.clone()
    body = {k: v.clone() for k, v in body.items()}
    repaired = torch.zeros(points.shape[0], schema.num_levels, dtype=torch.bool,
                           device=points.device)
    order = [i for i, lv in enumerate(schema.level_names) if lv in schema.refined_levels]
    for j in range(len(order) - 2, -1, -1):
        level = order[j]
        off, expected, tol = off_column(points, schema, order, j)
        rows = off.nonzero()[:, 0]
        if rows.numel() == 0:
            continue
        idx = schema.level_indices(schema.level_names[level])
        new_pts = points[rows].clone()
        shift = expected[rows] - level_centres(new_pts, schema)[:, level]
        new_pts[:, idx] += shift[:, None].to(new_pts.dtype)
        new_scores = scores[rows]
        for _ in range(2):
            new_pts, new_scores, new_body = refine(rows, new_pts, new_scores, level)
        centres = level_centres(new_pts, schema)  # (R, L, 2)
        gap = torch.linalg.vector_norm(centres - centres[:, level, None], dim=-1)
        gap[:, level] = float("inf")
        ok = ((torch.linalg.vector_norm(centres[:, level] - expected[rows], dim=-1)
               < tol[rows]) & ~(gap < 1.5 * tol[rows, None]).any(-1))
        hit = rows[ok]
        points[hit], scores[hit] = new_pts[ok], new_scores[ok]
        for key, value in new_body.items():
            body[key][hit, level] = value[ok, level].to(body[key].dtype)
        repaired[hit, level] = True
    return points, scores, body, repaired


def confirm_levels(scores: Tensor, found: Tensor, min_score: float = 0.3,
                   min_adjacent_score: float = 0.1, fill_gaps: bool = True) -> Tensor:
    """Decide which levels are present from per-level scores, using that the spine is contiguous.

    Hysteresis along the cranio-caudal chain of levels (as in Canny edge linking): a level
    scoring at least ``min_score`` is present; a level scoring at least ``min_adjacent_score``
    is present when it is joined to such a level through other present levels. With
    ``fill_gaps``, every level between two present levels is present too, whatever its score:
    a vertebra cannot be absent between two others, so a gap is a detector miss.

    Parameters
    ----------
    scores : Tensor
        (B, L) detector scores per level in [0, 1] (0 where no box was assigned), levels in
        schema (cranio-caudal) order.
    found : Tensor
        (B, L) bool, a box was assigned to the level (:attr:`LevelDetections.present`).
    min_score : float
        Score that makes a level present on its own.
    min_adjacent_score : float
        Lower score accepted next to a present level (``>= min_score`` disables the extension).
    fill_gaps : bool
        Mark levels between the first and last present level present.

    Returns
    -------
    Tensor
        (B, L) bool, on the device of ``scores``.

    Examples
    --------
    >>> s = torch.tensor([[0.15, 0.9, 0.0, 0.8, 0.05, 0.9]])
    >>> confirm_levels(s, s > 0).int().tolist()
    [[1, 1, 1, 1, 1, 1]]
    >>> confirm_levels(s, s > 0, fill_gaps=False).int().tolist()
    [[1, 1, 0, 1, 0, 1]]
    """
    if scores.shape != found.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and found {tuple(found.shape)} must be "
                         "the same (B, L) shape")
    found = found.bool()
    present = found & (scores >= min_score)
    weak = found & (scores >= min(min_adjacent_score, min_score))
    # Grow the present set by one level per pass through weak levels: L - 1 passes reach every
    # level (L is the number of levels, ~6); each is a vectorized dilation over the whole batch,
    # with no early exit, which would synchronize with the host on every pass.
    for _ in range(scores.shape[1] - 1):
        grown = torch.nn.functional.max_pool1d(present.float().unsqueeze(1), 3, 1, 1)
        present = (grown.squeeze(1) > 0) & weak
    if fill_gaps:
        after_first = present.int().cummax(1).values.bool()
        before_last = present.flip(1).int().cummax(1).values.flip(1).bool()
        present = after_first & before_last
    return present


#: Detector thresholds ``(min_score, min_adjacent_score)`` of :func:`confirm_levels` that
#: :func:`fit_presence` tries besides the pipeline's own.
PRESENCE_GRID: tuple[tuple[float, float], ...] = ((0.5, 0.2), (0.3, 0.1), (0.2, 0.05),
                                                   (0.1, 0.02))


def fit_presence(scores: Tensor, found: Tensor, labelled: Tensor, current: tuple[float, float]
                 ) -> tuple[bool, float, float, float]:
    """Choose how levels are declared present, on annotated images.

    Candidates: the detector with ``current`` thresholds (kept on a tie), with each pair of
    :data:`PRESENCE_GRID`, and no presence decision at all (every level of the schema is
    predicted). The winner reports exactly the labelled levels on the most images. The last
    candidate wins where every film shows every level (full-length films) but the detector is
    unsure at one end of the chain; the detector wins where the field of view varies.

    Parameters
    ----------
    scores, found : Tensor, shape (B, L)
        Detector scores (0 where no box) and whether a box was assigned, as for
        :func:`confirm_levels`.
    labelled : Tensor, shape (B, L)
        bool, the level is annotated in the ground truth.
    current : (float, float)
        The pipeline's ``(min_level_score, min_adjacent_score)``.

    Returns
    -------
    from_detector : bool
    min_score, min_adjacent_score : float
        The chosen thresholds (``current`` when ``from_detector`` is False).
    share : float
        Fraction of the images with exactly their labelled levels present under the choice.

    Examples
    --------
    The detector misses the first level on one of two images where every level is labelled:

    >>> s = torch.tensor([[0.0, 0.9, 0.9], [0.8, 0.9, 0.9]])
    >>> fit_presence(s, s > 0, torch.ones(2, 3, dtype=torch.bool), (0.3, 0.1))
    (False, 0.3, 0.1, 1.0)
    """
    labelled = labelled.bool()
    candidates = [(True, *current), *((True, *t) for t in PRESENCE_GRID if t != current),
                  (False, *current)]
    best = (-1.0, candidates[0])
    for cand in candidates:
        present = (confirm_levels(scores, found, cand[1], cand[2]) if cand[0]
                   else torch.ones_like(labelled))
        share = float((present == labelled).all(dim=1).double().mean())
        if share > best[0]:
            best = (share, cand)
    share, (from_detector, min_score, min_adjacent) = best
    return from_detector, min_score, min_adjacent, share
