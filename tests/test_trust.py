"""Trust across reruns and the correction loop (issue 28): identity by content, no silent
partial answers, refusals with a way forward. Each probe of the issue is a failure case here,
asserting its message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.cli import main
from spinelandmarks.content_digest import pipeline_digest, short


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust") / "data"
    assert main(["synth", str(root), "--num-images", "3", "--seed", "5", "--size", "128"]) == 0
    return root


def _tiny_pipeline(path: Path, seed: int = 0) -> Path:
    from spinelandmarks.inference import SpineLandmarkPipeline
    from spinelandmarks.models import LandmarkModel

    torch.manual_seed(seed)
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(64, 48)))
    return pipe.save(path)


# -- 1. identity by content ------------------------------------------------------------------
def test_predict_refuses_a_pipeline_saved_anew_at_the_same_path(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipe_dir = _tiny_pipeline(tmp_path / "pipeline", seed=0)
    out = tmp_path / "pred"
    cmd = ["predict", str(pipe_dir), str(data / "images"), "--out", str(out),
           "--accelerator", "cpu", "--no-overlays"]
    assert main(cmd) == 0
    old = pipeline_digest(pipe_dir)
    assert json.loads((out / "predict.json").read_text())["pipeline_sha256"] == old
    _tiny_pipeline(pipe_dir, seed=1)  # saved anew at the same path: other weights
    new = pipeline_digest(pipe_dir)
    assert new != old
    capsys.readouterr()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert f"holds predictions of pipeline {short(old)}" in err
    assert f"is now pipeline {short(new)}" in err and "--overwrite" in err
    assert main([*cmd, "--overwrite"]) == 0
    assert json.loads((out / "predict.json").read_text())["pipeline_sha256"] == new
    keys = [json.loads(line)["key"] for line in (out / "predictions.jsonl").open()]
    assert len(keys) == 3 and all(k.endswith(f"|pipeline={short(new)}") for k in keys)
    # the same content at another path is the same pipeline: resumed, nothing predicted
    moved = tmp_path / "moved"
    os.rename(pipe_dir, moved)
    assert main(["predict", str(moved), *cmd[2:]]) == 0


def test_train_identity_follows_the_content_of_its_sources(data: Path, tmp_path: Path) -> None:
    from spinelandmarks.training import RunMismatchError, TrainConfig, _check_run, run_identity

    source = _tiny_pipeline(tmp_path / "source" / "pipeline")
    cfg = TrainConfig(init_from=str(tmp_path / "source"))  # a run directory works too
    run = tmp_path / "run"
    run.mkdir()
    before = run_identity(data, cfg)
    (run / "config.json").write_text(json.dumps({"identity": before}))
    _check_run(run, run_identity(data, cfg), overwrite=False)  # unchanged: resumed
    _tiny_pipeline(source, seed=3)  # the source saved anew in place
    with pytest.raises(RunMismatchError, match=r"init_from_sha256: \w{12} in the run, \w{12} "
                                               r"now \(the --init-from pipeline changed"):
        _check_run(run, run_identity(data, cfg), overwrite=False)
    first = sorted((data / "images").iterdir())[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    with pytest.raises(RunMismatchError, match=r"images changed in place"):
        _check_run(run, run_identity(data, TrainConfig()), overwrite=False)


# -- 2. no silent partial answers ------------------------------------------------------------
def test_evaluate_reports_coverage_and_exits_1_when_partial(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks.data.annotations import read_coco, write_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    recs = read_coco(data / "annotations.json", S)
    recs[2].file_name = "other_folder/unknown.png"  # a prediction of another folder
    pred = tmp_path / "predictions.json"
    write_coco(recs, S, pred)
    gt = str(data / "annotations.json")
    capsys.readouterr()
    assert main(["evaluate", str(pred), gt, "--out", str(tmp_path / "rep")]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("coverage: 2 of 3 ground-truth images have a prediction; "
                              "1 prediction(s) match no ground-truth image\n")
    missing = read_coco(data / "annotations.json", S)[2].file_name
    assert out.err == (f"error: {pred}: 1 of 3 ground-truth images have no prediction (e.g. "
                       f"{missing}); the figures cover the 2 matched images only: predict the "
                       "others, or --allow-partial to accept a partial evaluation\n")
    cov = json.loads((tmp_path / "rep" / "metrics.json").read_text())["coverage"]
    assert cov == {"ground_truth_images": 3, "matched": 2, "without_prediction": 1,
                   "predictions": 3, "predictions_unmatched": 1, "complete": False,
                   "missing": [missing]}
    assert "1 prediction(s) without ground truth" in (tmp_path / "rep" / "report.md").read_text()
    assert main(["evaluate", str(pred), gt, "--out", str(tmp_path / "rep2"),
                 "--allow-partial"]) == 0
    write_coco(read_coco(data / "annotations.json", S), S, pred)
    capsys.readouterr()
    assert main(["evaluate", str(pred), gt, "--out", str(tmp_path / "rep3")]) == 0
    assert capsys.readouterr().out.startswith("coverage: 3 of 3 ground-truth images have a "
                                              "prediction\n")


TINY = ["--image-size", "64x64", "--crop-size", "32x32", "--backbone", "resnet_lite",
        "--detector-backbone", "resnet_lite", "--small-detector", "--batch-size", "2",
        "--workers", "0", "--accelerator", "cpu"]


@pytest.mark.slow
def test_rerun_of_a_finished_train_with_more_epochs_says_nothing_was_trained(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    base = ["train", str(data), "--out", str(run), "--stages", "landmark", *TINY]
    assert main([*base, "--max-epochs", "1", "--val", str(data)]) == 0
    assert "QC thresholds are fitted on 3 validation image(s), fewer than 10" in caplog.text
    assert "QC calibration: predicting 3 validation image(s)" in caplog.text
    base.extend(["--val", str(data)])
    weights = (run / "landmark" / "best.pt").read_bytes()
    capsys.readouterr()
    assert main([*base, "--max-epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run}: landmark finished with 1 epoch(s), 3 epoch(s) asked. Nothing "
                   "was trained: a finished stage is not extended. To train longer, --overwrite "
                   "(start this run over with the new length), or train into a new --out with "
                   f"--init-from {run} (continue from its weights)\n")
    assert (run / "landmark" / "best.pt").read_bytes() == weights
    assert main([*base, "--landmark-epochs", "1", "--max-epochs", "3"]) == 0  # same length


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--max-epochs", "0", "argument --max-epochs: must be at least 1, got 0"),
    ("--landmark-epochs", "-1", "argument --landmark-epochs: must be at least 1, got -1"),
    ("--detector-epochs", "0", "argument --detector-epochs: must be at least 1, got 0"),
    ("--lr", "0", "argument --lr: must be greater than 0, got 0"),
    ("--lr", "nan", "argument --lr: expected a finite number, got 'nan'"),
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--workers", "-1", "argument --workers: must be at least 0, got -1"),
    ("--image-size", "7x7", "argument --image-size: 7x7: each side must be at least 64 pixels"),
    ("--crop-size", "7x7", "argument --crop-size: 7x7: each side must be at least 32 pixels"),
    ("--backbone", "resnet_tiny", "argument --backbone: invalid choice: 'resnet_tiny'"),
    ("--detector-backbone", "vgg", "argument --detector-backbone: invalid choice: 'vgg'"),
    ("--schema", "my_schema.json", "argument --schema: my_schema.json: no such schema file"),
    ("--deformity-weight", "0", "argument --deformity-weight: must be greater than 0, got 0"),
])
def test_every_invalid_train_option_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str,
        message: str) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--out", str(run), option, value])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines  # one line and a hint, not the usage block
    assert lines[0].startswith(f"error: spinelandmarks train: {message}")
    assert lines[1] == ("hint: `spinelandmarks train --help` lists the options, their defaults "
                        "and choices")
    assert not run.exists()


def test_predict_and_synth_options_are_checked_too(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
            (["predict", "r", "x.png", "--out", "o", "--batch-size", "0"],
             "argument --batch-size: must be at least 1"),
            (["predict", "r", "x.png", "--out", "o", "--workers", "-1"],
             "argument --workers: must be at least 0"),
            (["synth", str(tmp_path / "s"), "--num-images", "0"],
             "argument --num-images: must be at least 1"),
            (["synth", str(tmp_path / "s"), "--fov-mm", "500,450"],
             "argument --fov-mm: --fov-mm needs 0 < LOW <= HIGH")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_bare_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: spinelandmarks" in capsys.readouterr().err


def test_init_from_that_is_no_pipeline_is_refused_before_training(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--init-from", str(tmp_path), *TINY]) == 2
    assert f"--init-from {tmp_path}: not a saved pipeline" in capsys.readouterr().err
    assert not run.exists()


def test_empty_data_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks.data.annotations import write_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    empty = tmp_path / "empty"
    empty.mkdir()
    write_coco([], S, empty / "annotations.json")
    run = tmp_path / "run"
    assert main(["train", str(empty), "--out", str(run), *TINY]) == 2
    assert capsys.readouterr().err == (
        f"error: {empty / 'annotations.json'}: the data set has no image to train on; check "
        "the path, or add annotated images\n")
    assert not run.exists()


def test_help_shows_defaults_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks._cli_values import BACKBONE_NAMES, DETECTOR_BACKBONE_NAMES
    from spinelandmarks.models.backbones import BACKBONES
    from spinelandmarks.models.detector import DETECTOR_BACKBONES

    assert set(BACKBONE_NAMES) == set(BACKBONES)
    assert set(DETECTOR_BACKBONE_NAMES) == set(BACKBONES) | set(DETECTOR_BACKBONES)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 30)", "(default: 0.001)", "(default: 512x384, or the --init-from pipeline's)", "(default: 0)",
                  "(default: 128x128, or the --init-from pipeline's)", "resnet_lite (default: resnet18, or the --init-from pipeline's)",
                  "--landmark-epochs LANDMARK_EPOCHS epochs of the landmark model",
                  "--max-epochs MAX_EPOCHS epochs of each stage without a count of its own"):
        assert shown in text, shown


# -- 3. a way forward for imperfect annotations ----------------------------------------------
def _ls_tasks(data: Path, tmp_path: Path) -> tuple[list, list]:
    from spinelandmarks.data.annotation_tools import export_label_studio
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    recs = read_coco(data / "annotations.json", S)
    path = export_label_studio(recs, S, tmp_path / "ls_export")
    return json.loads(path.read_text()), recs


def _corner(task: dict, label: str = "L3 anterior_superior") -> dict:
    return next(r for r in task["predictions"][0]["result"]
                if r["value"]["keypointlabels"] == [label])


def test_import_skip_invalid_leaves_out_the_bad_records_and_lists_them(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    tasks, _ = _ls_tasks(data, tmp_path)
    tasks[1]["data"]["file_name"] = "gone.png"  # an image that is not there
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    cmd = ["import", str(export), "--format", "label-studio", "--images",
           str(data / "images"), "--out", str(tmp_path / "ds")]
    capsys.readouterr()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {export}: [image id 2, file 'gone.png']: image file ")
    assert "gone.png' does not exist" in err
    assert not (tmp_path / "ds").exists()  # nothing written
    assert main([*cmd, "--skip-invalid"]) == 0
    assert (f"left out 1 of 3 image(s) with annotation problems (listed in "
            f"{tmp_path / 'ds' / 'skipped_records.csv'}) (--skip-invalid)") in caplog.text
    assert f"wrote 2 images to {tmp_path / 'ds' / 'annotations.json'}" in capsys.readouterr().out
    doc = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["images/00000.png", "images/00002.png"]
    rows = (tmp_path / "ds" / "skipped_records.csv").read_text().splitlines()
    assert rows[0] == "source,image_id,file_name,kind,message"
    assert len(rows) == 2 and rows[1].startswith(f"{export},2,gone.png,missing_image,")


def test_a_click_just_outside_the_border_is_clipped_with_a_warning(
        data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from spinelandmarks.data.annotation_tools import read_label_studio, write_dataset
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    tasks, recs = _ls_tasks(data, tmp_path)
    _corner(tasks[0])["value"]["x"] = 100.8  # a click on the border
    _corner(tasks[0], "L4 anterior_superior")["value"]["x"] = 103.0  # a real mistake
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    with pytest.raises(ValueError) as exc:
        write_dataset(read_label_studio(export, S), S, data / "images", tmp_path / "ds",
                      source=str(export))
    assert str(exc.value) == (
        f"{export}: [image id 1, file '00000.png']: L4 anterior_superior at "
        f"({1.03 * recs[0].width:.6g}, {_corner(tasks[0], 'L4 anterior_superior')['value']['y'] * recs[0].height / 100:.6g}) "
        f"lies outside the {recs[0].width} x {recs[0].height} image")
    _corner(tasks[0], "L4 anterior_superior")["value"]["x"] = 50.0
    export.write_text(json.dumps(tasks))
    written = write_dataset(read_label_studio(export, S), S, data / "images", tmp_path / "ds",
                            source=str(export))
    assert written[0].points[S.index("L3", "anterior_superior"), 0] == recs[0].width
    assert ("1 point(s) just outside the image clipped onto its border: '00000.png' L3 "
            f"anterior_superior ({1.008 * recs[0].width:.6g}," in caplog.text)


def test_training_data_clip_border_points_and_skip_invalid_records(
        data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from spinelandmarks.data.annotations import AnnotationError
    from spinelandmarks.data.datamodule import SpineDataModule

    ds = tmp_path / "ds"
    shutil.copytree(data, ds)
    doc = json.loads((ds / "annotations.json").read_text())
    width = doc["images"][0]["width"]
    doc["annotations"][0]["keypoints"][0] = width + 2.0  # 2 px outside: clipped
    doc["images"][2]["file_name"] = "images/missing.png"  # a record that cannot be used
    (ds / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=r"^.*annotations\.json: \[image id 3, file "
                                              r"'images/missing\.png'\]: image file"):
        SpineDataModule(str(ds), split=(1.0, 0.0, 0.0)).setup()
    dm = SpineDataModule(str(ds), split=(1.0, 0.0, 0.0), skip_invalid=True)
    dm.setup()
    assert [r.file_name for r in dm.train_records] == ["images/00000.png", "images/00001.png"]
    assert [(p.image_id, p.kind) for p in dm.skipped] == [(3, "missing_image")]
    assert dm.train_records[0].points[0, 0] == width
    assert "point(s) just outside the image clipped onto its border" in caplog.text


@pytest.mark.slow
def test_train_skip_invalid_writes_the_list_next_to_the_run(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(data, ds)
    doc = json.loads((ds / "annotations.json").read_text())
    doc["annotations"][0]["keypoints"][0] = 10_000.0  # far outside: a real mistake
    (ds / "annotations.json").write_text(json.dumps(doc))
    run = tmp_path / "run"
    cmd = ["train", str(ds), "--out", str(run), "--stages", "landmark", "--max-epochs", "1",
           *TINY]
    capsys.readouterr()
    assert main(cmd) == 2
    assert "lies outside the" in capsys.readouterr().err and not run.exists()
    assert main([*cmd, "--skip-invalid"]) == 0
    assert (f"left out 1 of 3 image(s) with annotation problems (listed in "
            f"{run / 'skipped_records.csv'}) (--skip-invalid)") in caplog.text
    rows = (run / "skipped_records.csv").read_text().splitlines()
    assert len(rows) == 2 and ",1,images/00000.png,out_of_bounds," in rows[1]


def test_duplicate_labels_are_refused_with_both_positions(data: Path, tmp_path: Path) -> None:
    from spinelandmarks.data.annotation_tools import read_label_studio
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    tasks, recs = _ls_tasks(data, tmp_path)
    first = _corner(tasks[0])
    second = json.loads(json.dumps(first))
    second["value"]["x"], second["value"]["y"] = 50.0, 25.0
    tasks[0]["predictions"][0]["result"].append(second)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    x0, y0 = recs[0].points[S.index("L3", "anterior_superior")]
    with pytest.raises(ValueError) as exc:
        read_label_studio(export, S)
    assert str(exc.value) == (
        f"{export}: [image id 1, file '00000.png']: task 1: L3 anterior_superior is labelled "
        f"twice: at ({x0:.1f}, {y0:.1f}) and at ({recs[0].width / 2:.1f}, "
        f"{recs[0].height / 4:.1f}) px; delete one in Label Studio")


def test_label_studio_upload_names_find_their_files(data: Path, tmp_path: Path) -> None:
    from spinelandmarks.data.annotation_tools import read_label_studio, write_dataset
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    tasks, recs = _ls_tasks(data, tmp_path)
    for k, t in enumerate(tasks):  # as Label Studio exports images uploaded in its interface
        t["data"] = {"image": f"/data/upload/3/5f2e1a9{k}-{Path(recs[k].file_name).name}"}
    tasks[2]["data"] = {"image": "/data/local-files/?d=storage%2Froot%2F00002.png"}  # storage
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    written = write_dataset(read_label_studio(export, S), S, data / "images", tmp_path / "ds")
    assert [r.file_name for r in written] == [r.file_name for r in recs]  # images/00000.png
    for a, b in zip(recs, written, strict=True):
        np.testing.assert_allclose(a.points, b.points, atol=1e-9)


def test_export_keeps_sub_folders_and_writes_nothing_when_it_refuses(
        data: Path, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from spinelandmarks.data.annotation_tools import (
        export_cvat,
        export_label_studio,
        read_cvat,
        read_label_studio,
        write_dataset,
    )
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    recs = read_coco(data / "annotations.json", S)[:2]
    archive = tmp_path / "archive"
    for k, patient in enumerate(("patient1", "patient2")):  # the same base name twice
        (archive / patient).mkdir(parents=True)
        shutil.copy(data / recs[k].file_name, archive / patient / "lateral.png")
    named = [dataclasses.replace(r, file_name=str(archive / p / "lateral.png"))
             for r, p in zip(recs, ("patient1", "patient2"), strict=True)]
    xml = export_cvat(named, S, tmp_path / "cvat")
    tasks = export_label_studio(named, S, tmp_path / "ls", image_url="/files/")
    assert [t["data"]["image"] for t in json.loads(tasks.read_text())] == [
        "/files/patient1/lateral.png", "/files/patient2/lateral.png"]
    for back in (read_cvat(xml, S), read_label_studio(tasks, S)):
        assert [r.file_name for r in back] == ["patient1/lateral.png", "patient2/lateral.png"]
        written = write_dataset(back, S, archive, tmp_path / "ds")
        assert (tmp_path / "ds" / written[1].file_name).is_file()
    twice = [named[0], named[0]]
    for export in (export_cvat, export_label_studio):
        with pytest.raises(ValueError, match=r"are the same image for an annotation tool .* "
                                             r"Nothing was written"):
            export(twice, S, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()


# -- 4. CVAT for images 1.1 ------------------------------------------------------------------
def test_cvat_xml_round_trip_is_exact_to_the_predictions(data: Path, tmp_path: Path) -> None:
    import zipfile
    from xml.etree import ElementTree as ET

    from spinelandmarks.data.annotation_tools import export_cvat, read_cvat
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    recs = read_coco(data / "annotations.json", S)
    rng = np.random.default_rng(0)
    for r in recs:  # predictions: full-precision floats, an absent and an occluded point
        r.points = r.points + rng.uniform(-0.5, 0.5, r.points.shape)
    recs[0].points[3] = np.nan
    recs[0].visibility[3] = 0
    recs[1].visibility[5] = 1
    xml = export_cvat(recs, S, tmp_path / "cvat")
    assert xml.name == "annotations.xml"
    root = ET.parse(xml).getroot()
    assert root.findtext("version") == "1.1"
    assert root.findtext("meta/task/mode") == "annotation"
    labels = root.findall("meta/task/labels/label")
    assert [lb.findtext("name") for lb in labels if lb.findtext("type") == "skeleton"] == list(
        S.level_names)
    assert [lb.findtext("name") for lb in labels if lb.findtext("parent") == "S1"] == list(
        S.level("S1").points)
    image = root.find("image")
    assert image is not None and image.get("name") == "00000.png"
    assert image.get("width") == str(recs[0].width)
    skel = image.find("skeleton[@label='L1']")
    assert skel is not None and [p.get("outside") for p in skel] == ["0", "0", "0", "1"]
    with zipfile.ZipFile(tmp_path / "task.zip", "w") as z:  # as CVAT exports it
        z.write(xml, "annotations.xml")
    for source in (xml, tmp_path / "task.zip"):
        back = read_cvat(source, S)
        assert [b.file_name for b in back] == ["00000.png", "00001.png", "00002.png"]
        for a, b in zip(recs, back, strict=True):
            np.testing.assert_array_equal(a.points, b.points)  # exact, NaN where absent
            np.testing.assert_array_equal(a.visibility, b.visibility)
            assert (a.width, a.height) == (b.width, b.height)


def test_cvat_xml_problems_are_named(tmp_path: Path) -> None:
    from spinelandmarks.data.annotation_tools import read_cvat
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    xml = tmp_path / "annotations.xml"
    xml.write_text(
        '<annotations><version>1.1</version><meta/>'
        '<image id="0" name="a.png" width="100" height="200">'
        '<points label="L1 anterior_superior" points="10,20"/>'
        '<points label="L1_anterior_superior" points="11,21"/>'
        '<points label="L2" points="1,2;3,4;5,6;7,8"/>'
        '<skeleton label="T9"><points label="x" points="1,1"/></skeleton>'
        '</image></annotations>')
    with pytest.raises(ValueError) as exc:
        read_cvat(xml, S)
    assert str(exc.value) == (
        f"2 annotation problem(s) in {xml}:\n"
        "  - [image id 1, file 'a.png']: L1 anterior_superior is labelled twice: at (10, 20) "
        "and at (11, 21); delete one in CVAT\n"
        "  - [image id 1, file 'a.png']: unknown skeleton label 'T9'; schema 'lumbar_sagittal' "
        "has ['L1', 'L2', 'L3', 'L4', 'L5', 'S1']")
    (tmp_path / "bad.xml").write_text("{not xml")
    with pytest.raises(ValueError, match="cannot read JSON"):
        read_cvat(tmp_path / "bad.xml", S)


def test_coco_route_has_every_section_for_predictions(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    from spinelandmarks.data.annotations import read_coco, write_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL as S

    recs = read_coco(data / "annotations.json", S)
    for r in recs:  # predictions: scores (one of them unknown), no masks
        r.masks = {}
        r.level_scores = np.full(S.num_levels, 0.9)
        r.scores = np.full(S.num_points, 0.5)
    recs[0].level_scores[2] = np.nan
    pred = tmp_path / "predictions.json"
    write_coco(recs, S, pred)
    assert main(["export", str(pred), "--format", "coco", "--out", str(tmp_path / "c")]) == 0
    assert f"wrote 3 images to {tmp_path / 'c' / 'coco_keypoints.zip'}" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "c" / "coco_keypoints.zip") as z:
        doc = json.loads(z.read("annotations/person_keypoints_default.json"))
    assert list(doc)[:2] == ["licenses", "info"]
    anns = doc["annotations"]
    assert all(isinstance(a["segmentation"], list | dict) and a["iscrowd"] == 0
               and len(a["bbox"]) == 4 for a in anns)
    assert all(isinstance(a["score"], float) for a in anns if "score" in a)
    assert sum("score" not in a for a in anns) == 1  # the unknown score is left out, not null
    assert all(a["segmentation"] == [] for a in anns)  # present although there is no mask


# -- 5. usability ----------------------------------------------------------------------------
def test_submodules_are_attributes_in_a_fresh_process() -> None:
    import subprocess
    import sys

    code = ("import sys, spinelandmarks as sl\n"
            "assert 'torch' not in sys.modules\n"
            "print(sl.data.__name__, sl.metrics.__name__, sl.data.annotations.__name__)\n"
            "try:\n    sl.no_such_module\nexcept AttributeError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(
                              Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "spinelandmarks.data spinelandmarks.metrics spinelandmarks.data.annotations",
        "module 'spinelandmarks' has no attribute 'no_such_module'"]


def test_synth_lumbopelvic_default_field_shows_the_femoral_heads(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "probes"))
    from femoral_heads_in_field import heads_in_field

    for name, fov, expected in (("default", [], (3, 3)),
                                ("lumbar", ["--fov-mm", "260,330"], (0, 3))):
        out = tmp_path / name
        assert main(["synth", str(out), "--num-images", "3", "--size", "128", "--schema",
                     "lumbopelvic_sagittal", *fov]) == 0
        assert heads_in_field(out) == expected, name
