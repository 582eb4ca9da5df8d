"""Level identification rules on hand-built failure cases (boxes and step-1 chains)."""

from __future__ import annotations

import math

import torch
from spines import spine_points

from spinelandmarks.levels import anchor_to_sacrum, reconcile_chain
from spinelandmarks.metrics import level_centres, level_identification
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

DT = torch.float64


def truth() -> torch.Tensor:
    return torch.tensor(spine_points(), dtype=DT)[None]  # bodies 40 x 30 px, 45 px apart


def boxes_of(pts: torch.Tensor) -> torch.Tensor:
    """Boxes around each level's body (S1: the plate extended 30 px caudally), 15 % margin."""
    table = S.level_point_table()
    out = torch.full((pts.shape[0], 6, 4), math.nan, dtype=DT)
    for k in range(6):
        p = pts[:, table[k][table[k] >= 0]]
        if k == 5:
            p = torch.cat([p, p + torch.tensor([0.0, 30.0], dtype=DT)], dim=1)
        lo, hi = p.amin(1), p.amax(1)
        pad = 0.15 * (hi - lo)
        out[:, k] = torch.cat([lo - pad, hi + pad], dim=-1)
    return out


def identified(pred: torch.Tensor) -> list[float]:
    return level_identification(pred, truth()).squeeze(0).tolist()


def test_consistent_chain_is_left_alone() -> None:
    gt = truth()
    out, moved = reconcile_chain(gt, boxes_of(gt), torch.ones(1, 6, dtype=torch.bool), S)
    assert not bool(moved.any()) and torch.equal(out, gt)


def test_chain_shifted_by_one_level_is_renamed_from_the_boxes() -> None:
    gt = truth()
    chain = gt.clone()  # step 1 drew L1 on T12 (45 px above), L2 on L1, ..., L5 on L4
    for k in range(4, 0, -1):
        chain[0, S.level_indices(f"L{k + 1}")] = gt[0, S.level_indices(f"L{k}")]
    chain[0, S.level_indices("L1")] = gt[0, S.level_indices("L1")] - torch.tensor([0.0, 45.0])
    assert identified(chain) == [0.0] * 5 + [1.0]
    out, moved = reconcile_chain(chain, boxes_of(gt), torch.ones(1, 6, dtype=torch.bool), S)
    assert moved[0].tolist() == [True] * 5 + [False]
    assert identified(out) == [1.0] * 6
    # L1..L4 borrowed the corners drawn on their bodies; L5 (no step-1 level on it) was moved
    assert torch.allclose(out[0, :16], gt[0, :16])


def test_l5_collapsed_onto_the_sacral_plate() -> None:
    gt = truth()
    chain = gt.clone()
    s1_mid = gt[0, S.level_indices("S1")].mean(0)
    chain[0, S.level_indices("L5")] = gt[0, S.level_indices("L5")] - \
        level_centres(gt)[0, 4] + s1_mid  # L5 drawn on the sacral plate
    out, moved = reconcile_chain(chain, boxes_of(gt), torch.ones(1, 6, dtype=torch.bool), S)
    assert moved[0].tolist() == [False] * 4 + [True, False]
    assert identified(out) == [1.0] * 6


def test_two_levels_on_one_body_and_missing_box() -> None:
    gt = truth()
    chain = gt.clone()
    chain[0, S.level_indices("L3")] = gt[0, S.level_indices("L2")] + 3.0  # L3 drawn on L2
    present = torch.ones(1, 6, dtype=torch.bool)
    present[0, 0] = False  # the detector did not find L1: nothing to check L1 against
    boxes = boxes_of(gt)
    boxes[0, 0] = math.nan
    out, moved = reconcile_chain(chain, boxes, present, S)
    assert moved[0].tolist() == [False, False, True, False, False, False]
    assert identified(out) == [1.0] * 6


def test_missing_l1_stays_missing_and_the_rest_keep_their_names() -> None:
    gt = truth()
    chain = gt.clone()
    chain[0, S.level_indices("L1")] = math.nan  # L1 outside the field of view
    boxes = boxes_of(gt)
    boxes[0, 0] = math.nan
    present = torch.ones(1, 6, dtype=torch.bool)
    present[0, 0] = False
    out, moved = reconcile_chain(chain, boxes, present, S)
    assert not bool(moved.any())
    assert bool(out[0, S.level_indices("L1")].isnan().all())
    assert torch.equal(out[0, 4:], gt[0, 4:])
    _, _, p, renamed = anchor_to_sacrum(boxes, torch.ones(1, 6, dtype=DT), present, S)
    assert not bool(renamed.any()) and p[0].tolist() == [False] + [True] * 5


def test_anchor_to_sacrum_renames_above_a_missed_body() -> None:
    gt = truth()
    # the detector missed L3 and named the bodies above it one level too low:
    # its "L3" box is on L2, "L2" on L1, "L1" on T12
    true_boxes = boxes_of(gt)
    t12 = true_boxes[:, 0] - torch.tensor([0.0, 45.0, 0.0, 45.0], dtype=DT)
    det = torch.stack([t12, true_boxes[:, 0], true_boxes[:, 1], true_boxes[:, 3],
                       true_boxes[:, 4], true_boxes[:, 5]], dim=1)
    scores = torch.tensor([[0.5, 0.6, 0.7, 0.8, 0.9, 0.95]], dtype=DT)
    boxes, sc, present, renamed = anchor_to_sacrum(det, scores, torch.ones(1, 6).bool(), S)
    assert renamed.tolist() == [True]
    assert present[0].tolist() == [True, True, False, True, True, True]
    assert torch.allclose(boxes[0, :2], true_boxes[0, :2])
    assert sc[0].tolist() == [0.6, 0.7, 0.0, 0.8, 0.9, 0.95]


def test_anchor_to_sacrum_keeps_a_continuous_column() -> None:
    b = boxes_of(truth())
    present = torch.ones(1, 6, dtype=torch.bool)
    present[0, 2] = False  # a level not found, but the names around it are right
    out, _, p, renamed = anchor_to_sacrum(b, torch.ones(1, 6, dtype=DT), present, S)
    assert not bool(renamed.any()) and torch.equal(p, present)
    assert torch.allclose(out[p], b[p])


def _mirror_levels(pts: torch.Tensor, levels: list[str]) -> torch.Tensor:
    """Exchange anterior and posterior points of the given levels (a mirrored drawing)."""
    out = pts.clone()
    for lv in levels:
        idx = S.level_indices(lv)
        perm = [idx[1], idx[0], idx[3], idx[2]] if len(idx) == 4 else [idx[1], idx[0]]
        out[:, idx] = pts[:, perm]
    return out


def test_consistent_facing_fixes_mirrored_levels() -> None:
    from spinelandmarks.levels import consistent_facing

    gt = truth()
    out, swapped = consistent_facing(_mirror_levels(gt, ["L2", "L4"]), S)
    assert swapped[0].tolist() == [False, True, False, True, False, False]
    assert torch.equal(out, gt)
    same, none = consistent_facing(gt, S)
    assert not bool(none.any()) and torch.equal(same, gt)


def test_consistent_facing_turns_a_whole_spine_facing_the_wrong_way() -> None:
    from spinelandmarks.levels import consistent_facing
    from spinelandmarks.metrics import lumbar_parameters

    gt = truth()
    mirrored = _mirror_levels(gt, list(S.level_names))  # every level: a kyphotic, back-tilted
    p = lumbar_parameters(mirrored)                      # spine no standing patient has
    assert p["sacral_slope"].item() < -5 and p["l1_s1_lordosis"].item() < -5
    out, swapped = consistent_facing(mirrored, S)
    assert bool(swapped.all()) and torch.equal(out, gt)

