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
