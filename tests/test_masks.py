"""Body masks: COCO polygons and RLE through the annotation files, and their rasterization."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spinelandmarks.data.annotations import AnnotationError, ImageRecord, read_coco, write_coco
from spinelandmarks.data.masks import check_segmentation, mask_from_segmentation, rle_from_mask
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

SQUARE = [[2.0, 2.0, 8.0, 2.0, 8.0, 6.0, 2.0, 6.0]]  # x 2..8, y 2..6 in pixel coordinates


def test_polygon_rasterizes_pixels_whose_centre_is_inside() -> None:
    m = mask_from_segmentation(SQUARE, 10, 12)
    expected = np.zeros((10, 12), bool)
    expected[2:6, 2:8] = True  # centres 2.5 .. 5.5 (rows) and 2.5 .. 7.5 (columns)
    np.testing.assert_array_equal(m, expected)


def test_rle_round_trip_compressed_and_uncompressed() -> None:
    m = mask_from_segmentation(SQUARE, 10, 12)
    rle = rle_from_mask(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [10, 12]
    np.testing.assert_array_equal(mask_from_segmentation(rle, 10, 12), m)
    # uncompressed: column-major runs, starting with background
    runs = {"size": [10, 12], "counts": [22, 4, 6, 4, 6, 4, 6, 4, 6, 4, 6, 4, 44]}
    np.testing.assert_array_equal(mask_from_segmentation(runs, 10, 12), m)
    with pytest.raises(ValueError, match="size"):
        mask_from_segmentation(rle, 12, 10)


def test_masks_round_trip_through_the_annotation_file(tmp_path: Path) -> None:
    rec = ImageRecord.empty(S, "images/a.png", 12, 10)
    rec.points[:4] = [[2, 2], [8, 2], [8, 6], [2, 6]]
    rec.visibility[:4] = 2
    rle = rle_from_mask(mask_from_segmentation(SQUARE, 10, 12))
    rec = dataclasses.replace(rec, masks={"L1": SQUARE, "L2": rle})  # L2: a mask, no points
    write_coco([rec], S, tmp_path / "ann.json")
    doc = json.loads((tmp_path / "ann.json").read_text())
    assert [a["segmentation"] for a in doc["annotations"]] == [SQUARE, rle]
    back = read_coco(tmp_path / "ann.json", S)[0]
    assert back.masks == {"L1": SQUARE, "L2": rle}
    np.testing.assert_array_equal(mask_from_segmentation(back.masks["L2"], 10, 12),
                                  mask_from_segmentation(SQUARE, 10, 12))


def test_a_malformed_segmentation_is_reported_with_its_record(tmp_path: Path) -> None:
    rec = ImageRecord.empty(S, "images/a.png", 12, 10, masks={"L1": SQUARE})
    write_coco([rec], S, tmp_path / "ann.json")
    doc = json.loads((tmp_path / "ann.json").read_text())
    doc["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0]]
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=r"segmentation of L1: each polygon"):
        read_coco(tmp_path / "ann.json", S)
    with pytest.raises(ValueError, match="RLE size"):
        check_segmentation({"size": [10], "counts": "x"})


def test_dice_iou_and_hd95_by_hand() -> None:
    from spinelandmarks.evaluation.masks import dice, hausdorff95, iou

    a = np.zeros((20, 20), bool)
    a[5:9, 5:9] = True  # 4 x 4
    b = np.roll(a, 1, axis=1)  # shifted one column: 12 pixels in common
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0 and hausdorff95(a, a) == 0.0
    assert dice(a, b) == pytest.approx(2 * 12 / 32) and iou(a, b) == pytest.approx(12 / 20)
    p, q = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    p[10, 4], q[10, 7] = True, True  # single pixels 3 columns apart
    assert hausdorff95(p, q) == pytest.approx(3.0)
    assert hausdorff95(p, q, spacing=(0.5, 0.25)) == pytest.approx(0.75)  # columns: 0.25 mm
    assert np.isnan(dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)))
    assert np.isnan(hausdorff95(p, np.zeros_like(p)))


def test_hd95_agrees_with_brute_force_surface_distances() -> None:
    from scipy import ndimage

    from spinelandmarks.evaluation.masks import hausdorff95

    rng = np.random.default_rng(0)
    a = ndimage.binary_opening(rng.random((40, 50)) > 0.45, iterations=2)
    b = ndimage.binary_opening(rng.random((40, 50)) > 0.45, iterations=2)

    def surface(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~ndimage.binary_erosion(m, border_value=0)) * [0.3, 0.2]

    sa, sb = surface(a), surface(b)
    d = np.linalg.norm(sa[:, None] - sb[None], axis=-1)
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert hausdorff95(a, b, spacing=(0.3, 0.2)) == pytest.approx(expected)


def test_evaluate_masks_per_level_and_missed() -> None:
    from spinelandmarks.evaluation.masks import evaluate_masks

    gt = ImageRecord.empty(S, "a.png", 12, 10, pixel_spacing=(0.5, 0.5),
                           masks={"L1": SQUARE, "L2": SQUARE})
    shifted = [[x + 1.0 if i % 2 == 0 else x for i, x in enumerate(SQUARE[0])]]
    pred = ImageRecord.empty(S, "a.png", 12, 10, masks={"L1": shifted})  # L2 not predicted
    m = evaluate_masks([pred], [gt], S)
    # L1: 6 x 4 square shifted by one column: 20 pixels in common of 24 + 24
    assert m["per_level"]["L1"]["dice"]["mean"] == pytest.approx(40 / 48)
    assert m["per_level"]["L1"]["hd95"]["mean"] == pytest.approx(0.5)  # one column, 0.5 mm
    assert m["per_level"]["L2"]["dice"]["mean"] == 0.0 and m["missed"] == 1
    assert m["per_image"]["mean"] == pytest.approx(20 / 48) and m["hd95_unit"] == "mm"


def test_evaluate_and_report_include_masks(tmp_path: Path) -> None:
    from spinelandmarks.evaluation import evaluate
    from spinelandmarks.evaluation.report import write_report
    from spinelandmarks.phantoms import PhantomConfig, generate_phantom

    gt = [dataclasses.replace(generate_phantom(i, PhantomConfig(long_side=192))[1],
                              file_name=f"{i}.png") for i in range(2)]
    m = evaluate(gt, gt, S)
    assert m["masks"]["per_image"]["mean"] == 1.0
    assert m["masks"]["per_level"]["L3"]["hd95"]["mean"] == 0.0
    text = write_report(m, tmp_path, pred_records=gt, gt_records=gt, schema=S).read_text()
    assert "## Vertebral body masks" in text


def test_warp_segmentation_polygon_and_rle_agree() -> None:
    from spinelandmarks.data.masks import warp_segmentation
    from spinelandmarks.geometry import crop_matrix

    poly = [[20.0, 30.0, 70.0, 25.0, 75.0, 60.0, 25.0, 66.0]]
    rle = rle_from_mask(mask_from_segmentation(poly, 100, 120))
    import torch
    m = crop_matrix(torch.tensor([[48.0, 45.0]]), torch.tensor([[80.0, 80.0]]),
                    torch.tensor([12.0]), (64, 64))[0].numpy()  # rotated, 0.8 crop px per px
    a = warp_segmentation(poly, m, (64, 64), (100, 120))
    b = warp_segmentation(rle, m, (64, 64), (100, 120))
    assert a.sum() > 500
    # the polygon is exact; the RLE is resampled from pixels: they differ only on the edge
    assert dice(a, b) > 0.95
    # the same pixel convention on both paths: doubling the size, a half-pixel slip of the
    # resampled RLE would move its centroid by 0.5 px
    up = np.diag([2.0, 2.0, 1.0])
    c = warp_segmentation(poly, up, (200, 240), (100, 120))
    d = warp_segmentation(rle, up, (200, 240), (100, 120))
    np.testing.assert_allclose(np.argwhere(c).mean(0), np.argwhere(d).mean(0), atol=0.15)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    from spinelandmarks.evaluation.masks import dice as _dice
    return _dice(a, b)
