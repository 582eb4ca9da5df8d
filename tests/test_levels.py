"""Level identification rules on hand-built failure cases (boxes and step-1 chains)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from spines import spine_points

from spinelandmarks.anatomy.vertebrae import level_centres
from spinelandmarks.levels import (
    anchor_to_sacrum,
    column_expectation,
    fit_presence,
    off_column,
    reconcile_chain,
    repair_column,
)
from spinelandmarks.metrics import level_identification
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
    from spinelandmarks.anatomy.angles import lumbar_parameters
    from spinelandmarks.levels import consistent_facing

    gt = truth()
    mirrored = _mirror_levels(gt, list(S.level_names))  # every level: a kyphotic, back-tilted
    p = lumbar_parameters(mirrored)                      # spine no standing patient has
    assert p["sacral_slope"].item() < -5 and p["l1_s1_lordosis"].item() < -5
    out, swapped = consistent_facing(mirrored, S)
    assert bool(swapped.all()) and torch.equal(out, gt)



# -- rule 4: column repair after step 2 --------------------------------------------------------
def _column() -> torch.Tensor:
    """(1, 22, 2) spine of 30-px bodies 45 px apart with a 15-px L5-S1 disc, and the true
    bodies a refiner can find: T12 above L1, L1..L5 (the S1 plate stays where it is)."""
    pts = torch.as_tensor(spine_points(tilts=(0.0,) * 5, s1_tilt=0.0))
    s1 = S.level_indices("S1")
    pts[s1, 1] = 80.0 + 45.0 * 4 + 15.0 + 15.0  # the plate 15 px below L5's inferior endplate
    pts[s1, 0] += 15.0  # and 5 px further along the column's drift of 5 px per level
    return pts[None]


def _oracle_refine(truth: torch.Tensor):
    """A refiner that finds the true body nearest to the crop's centre (T12 included)."""
    bodies = [truth[0, S.level_indices(f"L{i}")] for i in range(1, 6)]
    bodies.insert(0, bodies[0] - torch.tensor([5.0, 45.0], dtype=truth.dtype))  # T12

    def refine(rows, points, scores, level):
        out = points.clone()
        for lv in [level]:
            idx = S.level_indices(S.level_names[lv])
            for r in range(out.shape[0]):
                c = out[r, idx].mean(0)
                dist = [float(torch.linalg.vector_norm(b.mean(0) - c)) for b in bodies]
                out[r, idx] = bodies[int(np.argmin(dist))]
        masks = {"mask_probs": torch.zeros(out.shape[0], S.num_levels, 4, 4),
                 "mask_matrices": torch.zeros(out.shape[0], S.num_levels, 3, 3)}
        masks["mask_probs"][:, level] = 7.0  # the contract: (R, L, ...), zeros elsewhere
        masks["mask_matrices"][:, level] = torch.eye(3)
        return out, scores, masks
    return refine


@pytest.fixture(scope="module")
def column_pipe():
    from spinelandmarks.inference import SpineLandmarkPipeline
    from spinelandmarks.models import CropRefiner, LandmarkModel
    torch.manual_seed(0)
    return SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(64, 48)),
                                 CropRefiner(backbone="resnet_lite", input_size=(32, 32)))


def _repair(points: torch.Tensor, truth: torch.Tensor):
    scores = torch.ones(points.shape[:2])
    body = {"mask_probs": torch.zeros(1, S.num_levels, 4, 4),
            "mask_matrices": torch.zeros(1, S.num_levels, 3, 3)}
    out, _, body, repaired = repair_column(points, scores, body, S, _oracle_refine(truth))
    names = [S.level_names[i] for i in repaired[0].nonzero()[:, 0].tolist()]
    # the repaired levels carry the masks of their new crops, the others keep theirs
    assert (body["mask_probs"][0, repaired[0]] == 7.0).all()
    assert (body["mask_probs"][0, ~repaired[0]] == 0.0).all()
    assert (body["mask_matrices"][0, repaired[0]] == torch.eye(3)).all()
    return out, names


def test_column_expectation_from_s1_and_from_above() -> None:
    truth = _column()
    centres = level_centres(truth, S)[0]
    for level, anchor, spans in ((4, 5, 1), (3, 4, 1), (2, 0, 2), (4, 3, 1), (0, 2, 2)):
        expected, height = column_expectation(truth, S, level, anchor, spans)
        # within a third of a body height (the tolerance is a half): the column drifts 5 px
        # per level sideways, which one body's own axis (L1 two levels away) does not see
        torch.testing.assert_close(expected[0], centres[level], atol=10.5, rtol=0.0)
        assert float(height[0]) == pytest.approx(30.0)


def test_column_repair_keeps_a_good_spine() -> None:
    truth = _column()
    out, repaired = _repair(truth.clone(), truth)
    assert repaired == []
    torch.testing.assert_close(out, truth)


@pytest.mark.parametrize("case", ["L1 half on T12", "L5 on the sacral plate",
                                  "L3 on L4", "L1 missing, L2 half on L1"])
def test_column_repair_moves_a_misplaced_level(case: str) -> None:
    truth = _column()
    pts = truth.clone()
    if case == "L1 half on T12":
        pts[0, S.level_indices("L1"), 1] -= 27.0
        moved = ["L1"]
    elif case == "L5 on the sacral plate":
        pts[0, S.level_indices("L5"), 1] += 30.0
        moved = ["L5"]
    elif case == "L3 on L4":
        pts[0, S.level_indices("L3")] = truth[0, S.level_indices("L4")]
        moved = ["L3"]
    else:
        pts[0, S.level_indices("L1")] = float("nan")
        pts[0, S.level_indices("L2"), 1] -= 25.0
        moved = ["L2"]
    out, repaired = _repair(pts, truth)
    assert repaired == moved
    ok = torch.isfinite(truth) & torch.isfinite(pts)
    torch.testing.assert_close(out[ok], truth[ok])
    assert torch.isnan(out[~torch.isfinite(pts)]).all()  # a missing level stays missing


def test_column_repair_leaves_a_whole_shifted_chain() -> None:
    """Every lumbar level one body too high: four consistent levels outvote the sacral link,
    so rule 4 does not move them (the QC spacing flag reports L5-S1)."""
    truth = _column()
    pts = truth.clone()
    body = [i for lv in ("L1", "L2", "L3", "L4", "L5") for i in S.level_indices(lv)]
    pts[0, body] -= torch.tensor([5.0, 45.0], dtype=pts.dtype)
    out, repaired = _repair(pts, truth)
    assert repaired == []
    torch.testing.assert_close(out, pts)


def test_off_column_judges_from_both_sides() -> None:
    truth = _column()
    order = list(range(6))  # L1..S1
    assert not any(bool(off_column(truth, S, order, j)[0]) for j in range(5))
    pts = truth.clone()
    pts[0, S.level_indices("L3"), 1] += 25.0  # L3 most of the way onto L4
    judged = [bool(off_column(pts, S, order, j)[0]) for j in range(5)]
    assert judged == [False, False, True, False, False]
    # L4 is off from L3's side only (L3 is the misplaced one): kept
    expected, _ = column_expectation(pts, S, 3, 2)
    assert float(torch.linalg.vector_norm(level_centres(pts, S)[0, 3] - expected[0])) > 15.0


def _growing_whole_spine() -> torch.Tensor:
    """(1, P, 2) WHOLE_SPINE_SAGITTAL on a vertical line: body heights from 14 px (C7) to
    40 px (L5), discs 0.4 of a body, the S1 plate a disc below L5, hips below."""
    from spinelandmarks.schema import WHOLE_SPINE_BODIES
    from spinelandmarks.schema import WHOLE_SPINE_SAGITTAL as W

    pts = torch.full((1, W.num_points, 2), math.nan, dtype=torch.float64)
    top, prev = 40.0, None
    for i, lv in enumerate(WHOLE_SPINE_BODIES):
        h = 14.0 + 26.0 * i / (len(WHOLE_SPINE_BODIES) - 1)
        top = top if prev is None else top + prev + 0.4 * 0.5 * (prev + h)
        pts[0, W.level_indices(lv)] = torch.tensor(  # AS, PS, PI, AI; facing right
            [[520.0, top], [480.0, top], [480.0, top + h], [520.0, top + h]], dtype=torch.float64)
        prev = h
    plate = top + prev + 0.4 * prev
    pts[0, W.level_indices("S1")] = torch.tensor([[520.0, plate], [480.0, plate]], dtype=torch.float64)
    pts[0, W.level_indices("FH")] = torch.tensor([[540.0, plate + 80.0], [550.0, plate + 80.0]],
                                                dtype=torch.float64)
    return pts


def test_a_whole_spine_whose_bodies_grow_lies_on_its_column() -> None:
    from spinelandmarks.schema import WHOLE_SPINE_SAGITTAL as W

    # The column's expectation uses the spacing of nearby bodies: L4 lies 54.9 px above L5,
    # while the chain's median spacing is 37.8 px (median body 26.2 px): judged by the whole
    # chain, L4 would be 17.1 px from its expectation, beyond half a median body (13.1 px).
    truth = _growing_whole_spine()
    order = [W.level_index(lv) for lv in W.refined_levels]
    assert not any(bool(off_column(truth, W, order, j)[0]) for j in range(len(order) - 1))
    l4, l5 = W.level_index("L4"), W.level_index("L5")
    expected, height = column_expectation(truth, W, l4, l5)
    centre = level_centres(truth, W)[0, l4]
    assert float(torch.linalg.vector_norm(centre - expected[0])) < 5.0
    assert 34.0 < float(height[0]) < 40.0  # the heights near L4-L5, not the median 26.2


def test_fit_presence_keeps_the_detector_where_the_field_of_view_varies() -> None:
    # image 1 shows L1 (weak box), image 2 does not: the detector's default thresholds are right
    scores = torch.tensor([[0.25, 0.9, 0.9], [0.0, 0.9, 0.9]])
    labelled = torch.tensor([[True, True, True], [False, True, True]])
    assert fit_presence(scores, scores > 0, labelled, (0.3, 0.1)) == (True, 0.3, 0.1, 1.0)
    # a weak false box above the first labelled level: the stricter pair of the grid wins
    scores = torch.tensor([[0.15, 0.9, 0.9], [0.0, 0.9, 0.9]])
    labelled = torch.tensor([[False, True, True], [False, True, True]])
    assert fit_presence(scores, scores > 0, labelled, (0.3, 0.1)) == (True, 0.5, 0.2, 1.0)
    # nothing fits every image: the best share, the current thresholds on a tie
    scores = torch.tensor([[0.0, 0.9, 0.9], [0.9, 0.9, 0.9]])
    labelled = torch.tensor([[False, True, True], [False, True, True]])
    assert fit_presence(scores, scores > 0, labelled, (0.3, 0.1)) == (True, 0.3, 0.1, 0.5)


# -- recrop: step-2 crops across the column, and levels that moved refined again ----------------
def _crop_angles(step_two, points: torch.Tensor, monkeypatch
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop angle of each refined level (plain view) and the levels step 2 turned."""
    import spinelandmarks.inference.refinement as refinement
    seen: list[torch.Tensor] = []
    real = refinement.crop_matrix

    def recording(centers, sizes, angles, out_size):
        seen.append(angles.clone())
        return real(centers, sizes, angles, out_size)
    monkeypatch.setattr(refinement, "crop_matrix", recording)
    images = torch.zeros(1, 1, 400, 500)
    turned = step_two.refine(images, points, torch.ones(points.shape[:2])).turned
    views = len(refinement.TTA_VIEWS) if step_two.tta else 1
    return seen[0].reshape(6, views)[:, 0], turned[0]


@pytest.mark.parametrize("recrop", [True, False])
def test_collapsed_corners_get_a_crop_across_the_column(column_pipe, monkeypatch,
                                                        recrop: bool) -> None:
    # Straight column drifting 5 px right per 45 px down: endplates across it at
    # -atan(5 / 45) = -6.34 deg. L3's step-1 corners collapsed onto a near-vertical line
    # (their own direction atan(20 / 4) = 78.7 deg) would give a crop turned on its side.
    pts = _column().clone()
    l3 = S.level_indices("L3")
    centre = pts[0, l3].mean(0)
    pts[0, l3] = centre + torch.tensor([[0.0, -15.0], [2.0, -5.0], [2.0, 15.0], [0.0, 5.0]],
                                       dtype=pts.dtype)
    step_two = dataclasses.replace(column_pipe.step_two(), recrop=recrop)
    angles, turned = _crop_angles(step_two, pts, monkeypatch)
    across = -math.degrees(math.atan2(5.0, 45.0))
    if recrop:
        assert turned.tolist() == [name == "L3" for name in S.level_names]
        assert abs(float(angles[2]) - across) < 1e-4
    else:
        assert not turned.any()
        assert abs(float(angles[2]) - math.degrees(math.atan2(20.0, 4.0))) < 1e-4
    # the other bodies keep their own (horizontal) endplates
    torch.testing.assert_close(angles[[0, 1, 3, 4]].double(), torch.zeros(4, dtype=torch.float64),
                               atol=1e-4, rtol=0)


def test_moved_levels_are_those_step_2_moved_off_their_crop(column_pipe) -> None:
    from spinelandmarks.inference import RECROP_ANGLE_DEG, RECROP_SHIFT
    before = _column().clone()
    after = before.clone()
    # body extent 40 px (the larger side): L2 moves 0.3 of it, L3 0.2; L4 turns 12 deg.
    after[0, S.level_indices("L2"), 0] += (RECROP_SHIFT + 0.05) * 40.0
    after[0, S.level_indices("L3"), 0] += (RECROP_SHIFT - 0.05) * 40.0
    l4 = S.level_indices("L4")
    c = after[0, l4].mean(0)
    t = math.radians(RECROP_ANGLE_DEG + 2.0)
    rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]],
                       dtype=after.dtype)
    after[0, l4] = (after[0, l4] - c) @ rot.T + c
    moved = column_pipe.step_two().moved(before, after)[0]
    assert [S.level_names[i] for i in moved.nonzero()[:, 0].tolist()] == ["L2", "L4"]


def test_refine_again_replaces_only_the_levels_named(column_pipe, monkeypatch) -> None:
    pts = _column().clone()

    from spinelandmarks.inference.refinement import Refinement, StepTwo

    def shifted(self, images, points, scores, levels=None):
        masks = {"mask_probs": torch.full((points.shape[0], S.num_levels, 4, 4), 7.0)}
        return Refinement(points + 10.0, scores * 0.5, masks,
                          torch.zeros(points.shape[0], S.num_levels, dtype=torch.bool))
    monkeypatch.setattr(StepTwo, "refine", shifted)
    two = torch.cat([pts, pts])
    levels = torch.zeros(2, S.num_levels, dtype=torch.bool)
    levels[1, S.level_names.index("L2")] = True
    step = Refinement(two, torch.ones(2, S.num_points),
                      {"mask_probs": torch.zeros(2, S.num_levels, 4, 4)},
                      torch.zeros(2, S.num_levels, dtype=torch.bool))
    again = column_pipe.step_two().refine_again(torch.zeros(2, 1, 8, 8), step, levels)
    out, scores, body = again.points, again.scores, again.body
    l2 = S.level_indices("L2")
    others = [i for i in range(S.num_points) if i not in l2]
    torch.testing.assert_close(out[1, l2], pts[0, l2] + 10.0)
    torch.testing.assert_close(out[1, others], pts[0, others])
    torch.testing.assert_close(out[0], pts[0])
    assert scores[1, l2].eq(0.5).all() and scores[1, others].eq(1.0).all() and scores[0].eq(1).all()
    assert body["mask_probs"][1, S.level_names.index("L2")].eq(7.0).all()
    assert body["mask_probs"].sum() == 7.0 * 16
