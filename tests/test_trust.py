"""Trust across reruns and the correction loop (issue 28): identity by content, no silent
partial answers, refusals with a way forward. Each probe of the issue is a failure case here,
asserting its message."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    from spinelandmarks.models import LandmarkModel
    from spinelandmarks.pipeline import SpineLandmarkPipeline

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
    for shown in ("(default: 30)", "(default: 0.001)", "(default: 512x384)",
                  "(default: 128x128)", "resnet_lite (default: resnet18)",
                  "--landmark-epochs LANDMARK_EPOCHS epochs of the landmark model",
                  "--max-epochs MAX_EPOCHS epochs of each stage without a count of its own"):
        assert shown in text, shown
