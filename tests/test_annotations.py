"""COCO / CSV readers and writers, and the annotation validator."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spinelandmarks.data.annotations import (
    AnnotationError,
    AnnotationProblem,
    ImageRecord,
    read_coco,
    read_csv,
    validate,
    write_coco,
    write_csv,
)
from spinelandmarks.data.io import write_dicom
from spinelandmarks.schema import LUMBAR_SAGITTAL as S


def assert_records_equal(a: list[ImageRecord], b: list[ImageRecord]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.file_name, ra.width, ra.height, ra.image_id) == (
            rb.file_name, rb.width, rb.height, rb.image_id)
        assert ra.pixel_spacing == rb.pixel_spacing
        assert ra.patient_id == rb.patient_id
        assert ra.meta == rb.meta
        assert ra.masks == rb.masks
        np.testing.assert_array_equal(ra.points, rb.points)  # exact, NaN == NaN
        np.testing.assert_array_equal(ra.visibility, rb.visibility)
        assert ra.visibility.dtype == rb.visibility.dtype == np.int8
        for x, y in ((ra.scores, rb.scores), (ra.level_scores, rb.level_scores)):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


def make_records() -> list[ImageRecord]:
    rng = np.random.default_rng(42)
    r1 = ImageRecord.empty(S, "images/a.png", 40, 30, image_id=7, pixel_spacing=(0.14, 0.15),
                           patient_id="P1", meta={"synthetic": {"seed": 3, "curvature": 0.25,
                                                               "tags": ["a", "b"]}})
    r1.points[:] = rng.uniform(0, 30, (S.num_points, 2))  # irrational-looking floats
    r1.visibility[:] = 2
    r1.visibility[S.index("L2", "posterior_inferior")] = 1
    absent = S.index("S1", "posterior_superior")
    r1.visibility[absent] = 0
    r1.points[absent] = np.nan
    # a prediction-like record: only L3 found, with scores
    r2 = ImageRecord.empty(S, "images/b.dcm", 20, 10, image_id=9, patient_id="P2")
    for i in S.level_indices("L3"):
        r2.points[i] = (1.0 / 3 + i, 2.0 / 7 + i / 3)
        r2.visibility[i] = 2
    r2.scores = np.full(S.num_points, np.nan)
    r2.scores[S.level_indices("L3")] = [0.9, 0.8, 0.7, 0.61]
    r2.level_scores = np.full(S.num_levels, np.nan)
    r2.level_scores[S.level_index("L3")] = 0.875
    r3 = ImageRecord.empty(S, "images/c.png", 5, 5, image_id=11)  # nothing labelled
    return [r1, r2, r3]


def test_coco_roundtrip_exact(tmp_path: Path) -> None:
    recs = make_records()
    p = tmp_path / "ann.json"
    write_coco(recs, S, p)
    back = read_coco(p, S)
    assert_records_equal(recs, back)
    # writing what was read gives the same file, and no temp files are left behind
    p2 = tmp_path / "again.json"
    write_coco(back, S, p2)
    assert p.read_text() == p2.read_text()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["again.json", "ann.json"]
    doc = json.loads(p.read_text())
    assert [c["name"] for c in doc["categories"]] == list(S.level_names)
    assert doc["categories"][0]["skeleton"] == [[1, 2], [2, 3], [3, 4], [4, 1]]
    assert doc["categories"][5]["keypoints"] == ["anterior_superior", "posterior_superior"]
    # 6 levels of r1 (S1 partly) + L3 of r2; r3 has none
    assert len(doc["annotations"]) == 7
    s1 = doc["annotations"][5]
    assert s1["num_keypoints"] == 1 and s1["keypoints"][3:] == [0, 0, 0]
    l3 = doc["annotations"][6]
    assert l3["score"] == 0.875 and l3["keypoint_scores"] == [0.9, 0.8, 0.7, 0.61]
    xs, ys = l3["keypoints"][0::3], l3["keypoints"][1::3]
    assert l3["bbox"] == [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    assert doc["images"][0]["pixel_spacing"] == [0.14, 0.15]
    assert doc["images"][0]["synthetic"]["seed"] == 3


def test_single_category_form_reads_identically(tmp_path: Path) -> None:
    recs = make_records()
    write_coco(recs, S, tmp_path / "per_level.json", categories="per_level")
    write_coco(recs, S, tmp_path / "single.json", categories="single")
    doc = json.loads((tmp_path / "single.json").read_text())
    assert len(doc["categories"]) == 1
    assert doc["categories"][0]["keypoints"][4] == "L2_anterior_superior"
    a = read_coco(tmp_path / "per_level.json", S)
    b = read_coco(tmp_path / "single.json", S)
    assert_records_equal(a, b)
    assert_records_equal(recs, b)


def test_handwritten_coco_maps_to_schema_order(tmp_path: Path) -> None:
    doc = {
        "images": [{"id": 1, "file_name": "x.png", "width": 100, "height": 80,
                    "patient_id": 123, "source": "site-A"}],
        # categories in a different order than the schema, with their own ids
        "categories": [{"id": 5, "name": "S1", "keypoints": ["posterior_superior",
                                                            "anterior_superior"]},
                       {"id": 2, "name": "L2", "keypoints": list(S.level("L2").points)}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "keypoints": [10, 20, 2, 30, 40, 1]},
            {"id": 2, "image_id": 1, "category_id": 2,
             "keypoints": [1.5, 2.5, 2, 0, 0, 0, 3, 4, 2, 5, 6, 2], "score": 0.5},
        ],
    }
    p = tmp_path / "h.json"
    p.write_text(json.dumps(doc))
    (r,) = read_coco(p, S)
    assert r.patient_id == "123" and r.meta == {"source": "site-A"}
    assert r.points[S.index("S1", "posterior_superior")].tolist() == [10, 20]
    assert r.points[S.index("S1", "anterior_superior")].tolist() == [30, 40]
    assert r.visibility[S.index("S1", "anterior_superior")] == 1
    assert r.points[4].tolist() == [1.5, 2.5]  # L2 anterior_superior is flat index 4
    assert np.isnan(r.points[5]).all() and r.visibility[5] == 0
    assert int((r.visibility > 0).sum()) == 5
    assert r.level_scores is not None and r.level_scores[1] == 0.5
    assert np.isnan(r.level_scores[0])
    assert r.scores is None


def test_csv_roundtrip(tmp_path: Path) -> None:
    recs = make_records()[:2]
    recs[0].visibility[recs[0].visibility == 1] = 2  # CSV has no visibility column
    recs[1].scores = recs[1].level_scores = None  # nor scores
    for r in recs:
        r.meta = {}
    p = tmp_path / "ann.csv"
    write_csv(recs, S, p)
    lines = p.read_text().splitlines()
    assert lines[0] == "file_name,level,point,x,y"
    assert len(lines) == 1 + 21 + 4
    assert lines[1].startswith("images/a.png,L1,anterior_superior,")
    back = read_csv(p, S)
    assert [r.width for r in back] == [0, 0]
    for r, b in zip(recs, back, strict=True):
        np.testing.assert_array_equal(r.points, b.points)
        np.testing.assert_array_equal(r.visibility, b.visibility)
        assert r.file_name == b.file_name
    # sizes come from the image headers when the root is given
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "images" / "a.png")
    write_dicom(tmp_path / "images" / "b.dcm", np.zeros((10, 20)))
    sized = read_csv(p, S, images_root=tmp_path)
    assert [(r.width, r.height) for r in sized] == [(40, 30), (20, 10)]


def test_csv_problems_all_reported(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("file_name,level,point,x,y\n"
                 "a.png,L1,anterior_superior,1,2\n"
                 "a.png,T12,anterior_superior,1,2\n"
                 "a.png,L1,middle,1,2\n"
                 "a.png,L1,anterior_superior,3,4\n"
                 "b.png,L2,anterior_superior,x,2\n")
    with pytest.raises(AnnotationError) as info:
        read_csv(p, S)
    kinds = [pr.kind for pr in info.value.problems]
    assert kinds == ["unknown_level", "unknown_point", "duplicate_point", "malformed"]
    assert [pr.line for pr in info.value.problems] == [3, 4, 5, 6]
    assert all("bad.csv" in str(pr) for pr in info.value.problems)


# ---------------------------------------------------------------------------------------------
# validator
# ---------------------------------------------------------------------------------------------
def _kp(points: list[tuple[Any, Any, int]]) -> list[Any]:
    return [v for p in points for v in p]


def test_validator_reports_every_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("ok.png", "wrongsize.png", "many.png"):
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "images" / name)
    full = _kp([(5, 5, 2), (15, 5, 2), (15, 10, 2), (5, 10, 2)])
    cats = [{"id": i + 1, "name": lv.name, "keypoints": list(lv.points)}
            for i, lv in enumerate(S.levels)]
    cats[1]["keypoints"] = [*S.level("L2").points, "anterior_middle"]  # unknown point name
    cats.append({"id": 9, "name": "T12", "keypoints": list(S.level("L1").points)})
    doc = {
        "images": [
            {"id": 1, "file_name": "images/missing.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "images/wrongsize.png", "width": 50, "height": 30},
            {"id": 3, "file_name": "images/many.png", "width": 40, "height": 30},
            {"id": 4, "file_name": "images/ok.png", "width": 40, "height": 30},
        ],
        "categories": cats,
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": full},
            {"id": 20, "image_id": 2, "category_id": 1, "keypoints": full},
            {"id": 30, "image_id": 3, "category_id": 9, "keypoints": full},  # unknown level
            {"id": 31, "image_id": 3, "category_id": 2,
             "keypoints": [*full, 7, 7, 2]},  # unknown point
            {"id": 32, "image_id": 3, "category_id": 1,
             "keypoints": _kp([(100, 5, 2), (15, 5, 2), (15, 10, 2), (5, 10, 2)])},  # outside
            {"id": 33, "image_id": 3, "category_id": 3,
             "keypoints": _kp([(None, None, 2), (15, 5, 2), (15, 10, 2), (5, 10, 2)])},  # NaN
            {"id": 34, "image_id": 3, "category_id": 4, "keypoints": full},
            {"id": 35, "image_id": 3, "category_id": 4, "keypoints": full},  # duplicate L4
            {"id": 40, "image_id": 4, "category_id": 1, "keypoints": full},
        ],
    }
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError) as info:
        read_coco(ann, S, validate=True)
    problems = info.value.problems
    by_kind: dict[str, AnnotationProblem] = {p.kind: p for p in problems}
    assert sorted(by_kind) == sorted(["missing_image", "size_mismatch", "unknown_level",
                                      "unknown_point", "out_of_bounds", "nan_labelled",
                                      "duplicate_level"])
    assert len(problems) == 7
    expected = {  # kind -> (image id, annotation id or None, file name)
        "missing_image": (1, None, "images/missing.png"),
        "size_mismatch": (2, None, "images/wrongsize.png"),
        "unknown_level": (3, 30, "images/many.png"),
        "unknown_point": (3, 31, "images/many.png"),
        "out_of_bounds": (3, 32, "images/many.png"),
        "nan_labelled": (3, 33, "images/many.png"),
        "duplicate_level": (3, 35, "images/many.png"),
    }
    for kind, (iid, aid, fname) in expected.items():
        p = by_kind[kind]
        assert (p.image_id, p.annotation_id, p.file_name) == (iid, aid, fname), kind
        text = str(p)
        assert str(ann) in text and fname in text and f"image id {iid}" in text
        if aid is not None:
            assert f"annotation id {aid}" in text
        # the exception message lists every problem, the file named once in its first line
        assert p.describe(str(ann)) in str(info.value)
        assert str(info.value).count(str(ann) + " [") == 0
    assert "T12" in by_kind["unknown_level"].message
    assert "anterior_middle" in by_kind["unknown_point"].message
    assert "duplicate vertebra L4" in by_kind["duplicate_level"].message
    assert "also annotation id 34" in by_kind["duplicate_level"].message
    assert "50 x 30" in by_kind["size_mismatch"].message and "40 x 30" in by_kind[
        "size_mismatch"].message

    # without validate, only the problems found while reading are raised
    with pytest.raises(AnnotationError) as info2:
        read_coco(ann, S)
    assert sorted(p.kind for p in info2.value.problems) == [
        "duplicate_level", "unknown_level", "unknown_point"]


def test_validate_records_directly(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "images" / "a.png")
    good = ImageRecord.empty(S, "images/a.png", 40, 30, image_id=1)
    good.points[0] = (40.0, 30.0)  # the far image corner is still inside
    good.visibility[0] = 2
    assert validate([good], S, tmp_path) == []
    bad = ImageRecord.empty(S, "images/a.png", 40, 30, image_id=1)
    bad.visibility[3] = 1  # labelled, NaN coordinates
    bad.points[4] = (-0.5, 3.0)
    bad.visibility[4] = 2
    problems = validate([good, bad], S, tmp_path, source="mem.json")
    assert sorted(p.kind for p in problems) == ["duplicate_image", "duplicate_image",
                                                "nan_labelled", "out_of_bounds"]
    assert all(str(p).startswith("mem.json") for p in problems)
    oob = next(p for p in problems if p.kind == "out_of_bounds")
    assert (oob.level, oob.point) == ("L2", "anterior_superior")
    assert validate([good], S, None) == []  # no file checks without a root


def test_malformed_json(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"broken\.json"):
        read_coco(p, S)


def test_nan_scores_roundtrip(tmp_path: Path) -> None:
    r = make_records()[1]
    assert r.scores is not None and r.level_scores is not None
    r.scores[S.index("L3", "anterior_inferior")] = math.nan
    p = tmp_path / "pred.json"
    write_coco([r], S, p)
    doc = json.loads(p.read_text())
    assert doc["annotations"][0]["keypoint_scores"][3] is None
    assert_records_equal([r], read_coco(p, S))


class _Reread:
    """A re-iterable view (like the prediction journal's), counting the passes that read it."""

    def __init__(self, records: list[ImageRecord]) -> None:
        self.records, self.passes = records, 0

    def __iter__(self) -> Iterator[ImageRecord]:  # lazy: a pass counts once it reads
        self.passes += 1
        yield from self.records


@pytest.mark.parametrize("ids", ["unique", "repeated", "none"])
def test_write_coco_streams_json_text(tmp_path: Path, ids: str) -> None:
    """The streamed file is the text of ``json.dumps(document, indent=1)``, in one pass over
    the records (two when an image id repeats: the images are then numbered 1..N)."""
    recs = [] if ids == "none" else make_records()
    if ids == "repeated":
        for r in recs:
            r.image_id = 7
    view = _Reread(recs)
    write_coco(view, S, tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=1) + "\n"
    assert view.passes == (2 if ids == "repeated" else 1)
    want = [r.image_id for r in recs] if ids == "unique" else list(range(1, len(recs) + 1))
    assert [im["id"] for im in doc["images"]] == want
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
    if ids == "unique":
        assert_records_equal(read_coco(tmp_path / "a.json", S), recs)
