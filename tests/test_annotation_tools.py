"""Correction loop files (CVAT, Label Studio) and the BUU-LSPINE reader."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinelandmarks.cli import main
from spinelandmarks.data.annotation_tools import (
    export_coco,
    export_label_studio,
    read_cvat,
    read_label_studio,
)
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.schema import LUMBAR_SAGITTAL as S


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tools") / "data"
    assert main(["synth", str(root), "--num-images", "3", "--seed", "2", "--size", "256"]) == 0
    return root


def test_cvat_round_trip_and_labels(data: Path, tmp_path: Path) -> None:
    recs = read_coco(data / "annotations.json", S)
    zpath = export_coco(recs, S, tmp_path / "cvat")
    with zipfile.ZipFile(zpath) as z:
        assert z.namelist() == ["annotations/person_keypoints_default.json"]
        doc = json.loads(z.read("annotations/person_keypoints_default.json"))
    # every section and field CVAT's COCO importer (datumaro) expects
    assert doc["licenses"] == [{"name": "", "id": 0, "url": ""}]
    assert {"contributor", "date_created", "description", "url", "version", "year"} <= set(
        doc["info"])
    assert all({"id", "width", "height", "file_name", "license"} <= set(im)
               for im in doc["images"])
    assert all({"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd",
                "keypoints", "num_keypoints"} <= set(a) for a in doc["annotations"])
    assert all({"id", "name", "supercategory", "keypoints", "skeleton"} <= set(c)
               for c in doc["categories"])
    labels = json.loads((tmp_path / "cvat" / "cvat_labels.json").read_text())
    assert [lb["name"] for lb in labels] == list(S.level_names)
    assert [s["name"] for s in labels[0]["sublabels"]] == list(S.levels[0].points)
    assert labels[5]["svg"].count('data-type="element node"') == 2  # S1: its plate only
    back = read_cvat(zpath, S)
    assert [r.file_name for r in back] == [Path(r.file_name).name for r in recs]
    for a, b in zip(recs, back, strict=True):
        np.testing.assert_array_equal(np.isnan(a.points), np.isnan(b.points))
        np.testing.assert_allclose(a.points, b.points, atol=1e-9)


def test_label_studio_round_trip_with_a_correction(data: Path, tmp_path: Path) -> None:
    recs = read_coco(data / "annotations.json", S)
    tasks_path = export_label_studio(recs, S, tmp_path / "ls", image_url="/files/")
    config = (tmp_path / "ls" / "label_studio_config.xml").read_text()
    assert config.count("<Label value=") == S.num_points and 'value="$image"' in config
    tasks = json.loads(tasks_path.read_text())
    assert tasks[0]["data"]["image"] == "/files/" + Path(recs[0].file_name).name
    # a reader moves L3's anterior-superior corner 3 px right in the first task and submits
    result = json.loads(json.dumps(tasks[0]["predictions"][0]["result"]))
    i = S.index("L3", "anterior_superior")
    moved = next(r for r in result if r["value"]["keypointlabels"] == ["L3 anterior_superior"])
    moved["value"]["x"] += 100 * 3.0 / recs[0].width
    tasks[0]["annotations"] = [{"was_cancelled": True, "result": []},
                               {"was_cancelled": False, "result": result}]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    back = read_label_studio(export, S)
    expected = recs[0].points.copy()
    expected[i, 0] += 3.0
    np.testing.assert_allclose(back[0].points, expected, atol=1e-9)
    for a, b in zip(recs[1:], back[1:], strict=True):
        np.testing.assert_allclose(a.points, b.points, atol=1e-9)
        assert (b.width, b.height) == (a.width, a.height)


def test_import_verbs_write_a_validated_dataset(data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    recs = read_coco(data / "annotations.json", S)
    for fmt, name in (("cvat", "annotations.xml"), ("coco", "coco_keypoints.zip"),
                      ("label-studio", "label_studio_tasks.json")):
        assert main(["export", str(data / "annotations.json"), "--format", fmt, "--out",
                     str(tmp_path / fmt)]) == 0
        ds = tmp_path / f"ds_{fmt}"
        assert main(["import", str(tmp_path / fmt / name), "--format", fmt, "--images",
                     str(data / "images"), "--out", str(ds)]) == 0
        back = read_coco(ds / "annotations.json", S, validate=True)
        for a, b in zip(recs, back, strict=True):
            assert b.file_name == a.file_name  # images/<name>, linked
            np.testing.assert_allclose(a.points, b.points, atol=1e-9)
    capsys.readouterr()
    assert main(["import", str(tmp_path / "cvat" / "annotations.xml"), "--format", "cvat",
                 "--images", str(tmp_path), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert err.startswith(  # headed with the file that holds the records
        f"error: 3 annotation problem(s) in {tmp_path / 'cvat' / 'annotations.xml'}:")
    assert not (tmp_path / "bad").exists()


ROWS = [  # x1 (anterior), y1, x2 (posterior), y2, label: L1 sup/inf ... L5 sup/inf, S1 sup
    (120, 40 + 30 * k + (0 if k % 2 == 0 else 15), 80, 38 + 30 * k + (0 if k % 2 == 0 else 15),
     1 if k == 7 else 0) for k in range(11)]


def _buu(folder: Path, name: str, rows: list[tuple[float, ...]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((400, 200), np.uint8)).save(folder / f"{name}.jpg")
    lines = ["x1,y1,x2,y2,label"] + [",".join(str(v) for v in r) for r in rows]
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")


def test_buu_lspine_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "BUU" / "LA"
    _buu(src, "0001-F-037Y1", ROWS)
    assert main(["import", str(tmp_path / "BUU"), "--format", "buu-lspine", "--out",
                 str(tmp_path / "ds")]) == 0
    (rec,) = read_coco(tmp_path / "ds" / "annotations.json", S, validate=True)
    assert rec.file_name == "images/LA/0001-F-037Y1.jpg" and (rec.width, rec.height) == (200, 400)
    assert tuple(rec.points[S.index("L1", "anterior_superior")]) == (120, 40)
    assert tuple(rec.points[S.index("L1", "posterior_superior")]) == (80, 38)
    assert tuple(rec.points[S.index("L1", "anterior_inferior")]) == (120, 85)
    assert tuple(rec.points[S.index("L5", "posterior_inferior")]) == (80, 38 + 270 + 15)
    assert tuple(rec.points[S.index("S1", "anterior_superior")]) == (120, 340)
    assert rec.meta["buu_lspine_labels"]["L4_inferior"] == 1
    assert sum(rec.meta["buu_lspine_labels"].values()) == 1
    _buu(src, "0002-M-050Y1", ROWS[:10])
    capsys.readouterr()
    assert main(["import", str(tmp_path / "BUU"), "--format", "buu-lspine", "--out",
                 str(tmp_path / "ds2")]) == 2
    err = capsys.readouterr().err
    assert "0002-M-050Y1.csv" in err and "expected 11 rows" in err and "Traceback" not in err
    assert not (tmp_path / "ds2").exists()
