"""Every verb of the command line, end to end on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks import __version__
from spinelandmarks.cli import main

TINY_TRAIN = ["--max-epochs", "1", "--image-size", "128x96", "--crop-size", "48x48",
              "--backbone", "resnet_lite", "--detector-backbone", "resnet_lite", "--small-detector",
              "--batch-size", "4", "--workers", "0", "--accelerator", "cpu"]


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2  # a bare command is a usage error; the help goes to stderr
    out = capsys.readouterr().err
    for verb in ("synth", "train", "predict", "measure", "evaluate", "demo"):
        assert verb in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data, test = root / "data", root / "test"
    assert main(["synth", str(data), "--num-images", "8", "--seed", "1", "--size", "256"]) == 0
    assert main(["synth", str(test), "--num-images", "3", "--seed", "99", "--size", "256"]) == 0
    run = root / "run"
    assert main(["train", str(data), "--out", str(run), *TINY_TRAIN]) == 0
    return data, test, run


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(data, test, run)`` like :func:`trained`, but ``RUN/pipeline`` holds untrained
    networks of the ``TINY_TRAIN`` settings, saved without training (the fast tier's run)."""
    from spinelandmarks.inference import SpineLandmarkPipeline
    from spinelandmarks.models import CropRefiner, LandmarkModel

    root = tmp_path_factory.mktemp("cli_untrained")
    data, test = root / "data", root / "test"
    assert main(["synth", str(data), "--num-images", "4", "--seed", "1", "--size", "256"]) == 0
    assert main(["synth", str(test), "--num-images", "2", "--seed", "99", "--size", "256"]) == 0
    torch.manual_seed(0)
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)),
                                 CropRefiner(backbone="resnet_lite", input_size=(48, 48)))
    run = root / "run"
    pipe.save(run / "pipeline")
    return data, test, run


@pytest.mark.slow
def test_train_writes_run(trained: tuple[Path, Path, Path]) -> None:
    _, _, run = trained
    for stage in ("detector", "landmark", "refiner"):
        assert (run / stage / "best.pt").is_file()
        assert (run / stage / "last.ckpt").is_file()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["image_size"] == [128, 96] and cfg["backbone"] == "resnet_lite"
    assert (run / "pipeline" / "pipeline.json").is_file()


@pytest.mark.slow
def test_train_resumes_and_skips_finished_stages(trained: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    data, _, run = trained
    # An interrupted landmark stage: only last.ckpt is left; it resumes to 2 epochs from it.
    resumed = tmp_path / "resumed"
    stage_src = run / "landmark"
    (resumed / "landmark").mkdir(parents=True)
    (resumed / "landmark" / "last.ckpt").write_bytes((stage_src / "last.ckpt").read_bytes())
    args = ["train", str(data), "--out", str(resumed), "--stages", "landmark",
            *[a if a != "1" else "2" for a in TINY_TRAIN]]
    assert main(args) == 0

    ckpt = torch.load(resumed / "landmark" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1  # resumed after epoch 0, trained epoch 1 only
    mtime = (resumed / "landmark" / "best.pt").stat().st_mtime
    assert main(args) == 0  # a finished stage is skipped
    assert (resumed / "landmark" / "best.pt").stat().st_mtime == mtime


@pytest.mark.slow
def test_predict_measure_evaluate(trained: tuple[Path, Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    _, test, run = trained
    images = sorted((test / "images").iterdir())
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "pred"
    caplog.set_level("INFO", logger="spinelandmarks.predict")
    status = main(["predict", str(run), *map(str, images), str(bad), "--out", str(out),
                   "--accelerator", "cpu"])
    err = capsys.readouterr().err
    assert status == 1 and "broken.png" in err  # reported, and the exit status says so
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["images"]) == len(images)  # the others finished
    assert (out / "predictions_step1.json").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == len(images)
    with (out / "measurements.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["file_name", "l1_l5_lordosis_deg", "l1_s1_lordosis_deg",
                           "sacral_slope_deg"]
    assert rows[0][-5:] == ["needs_review", "qc", "suspected_fractures", "shift_score",
                            "shifted"]
    assert len(rows) == 1 + len(images)
    # the tiny model is far from converged: its spines are implausible and must be flagged
    review = [im["needs_review"] for im in pred["images"]]
    assert all(isinstance(v, bool) for v in review)
    col = rows[0].index("needs_review")
    assert [r[col] for r in rows[1:]] == [str(int(v)) for v in review]
    assert f"{sum(review)} of {len(images)} image(s) need review" in caplog.text

    csv_path = tmp_path / "gt.csv"
    assert main(["measure", str(test / "annotations.json"), "--out", str(csv_path)]) == 0
    with csv_path.open() as f:
        gt_rows = list(csv.DictReader(f))
    params = json.loads((test / "annotations.json").read_text())["images"][0]["synthetic"]
    assert float(gt_rows[0]["sacral_slope_deg"]) == pytest.approx(params["sacral_slope_deg"],
                                                                  abs=1e-3)

    # Predictions name files by the path given to predict; rewrite the ground truth to match.
    gt = json.loads((test / "annotations.json").read_text())
    for im in gt["images"]:
        im["file_name"] = str(test / im["file_name"])
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    report = tmp_path / "report"
    assert main(["evaluate", str(out / "predictions.json"), str(gt_path), "--out",
                 str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["step1"] is not None and metrics["step2"] is not None
    assert metrics["n_images"] == len(images)
    assert (report / "report.md").read_text().count("Cina") >= 1
    assert "Images with every level identified" in capsys.readouterr().out
    assert list(report.glob("bland_altman_*.png"))


def test_predict_no_tta_reaches_the_pipeline(untrained: tuple[Path, Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import spinelandmarks.inference.pipeline as pipeline_mod

    _, test, run = untrained
    image = sorted((test / "images").iterdir())[0]
    seen: list[bool] = []
    forward = pipeline_mod.SpineLandmarkPipeline.forward

    def spy(self: pipeline_mod.SpineLandmarkPipeline, images: torch.Tensor) -> dict:
        seen.append(self.options.tta)
        return forward(self, images)

    monkeypatch.setattr(pipeline_mod.SpineLandmarkPipeline, "forward", spy)
    for k, extra in enumerate(([], ["--no-tta"])):
        assert main(["predict", str(run), str(image), "--out", str(tmp_path / f"o{k}"),
                     "--accelerator", "cpu", "--no-overlays", *extra]) == 0
    assert seen == [True, False]  # saved pipelines refine with TTA unless told otherwise
    # other settings into the same folder: refused, not silently resumed from old results
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "o0"),
                 "--accelerator", "cpu", "--no-overlays", "--no-tta"]) == 2


def test_predict_reports_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    assert main(["predict", str(tmp_path / "nope"), str(img), "--out", str(tmp_path / "o")]) == 2
    assert "pipeline.json" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("config", "size"), [("landmark", "[128, 96]"), ("refiner", "[48, 48]"),
                                              ("detector", "[128, 96]")])
def test_lightning_cli_fit_from_example_configs(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                config: str, size: str) -> None:
    data, _, _ = trained
    cfg = Path(__file__).resolve().parents[1] / "examples" / "configs" / f"{config}.yaml"
    status = main(["fit", "-c", str(cfg), "--data.data_dir", str(data),
                   "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                   "--trainer.default_root_dir", str(tmp_path), "--data.num_workers", "0",
                   "--data.batch_size", "2", "--model.init_args.backbone", "resnet_lite",
                   "--model.init_args.input_size", size, "--data.input_size", size,
                   "--data.crop_size", size if config == "refiner" else "[128, 128]",
                   "--trainer.enable_progress_bar", "false"])
    assert status == 0
    assert list(tmp_path.rglob("*.ckpt")), "fit wrote no checkpoint"
    assert (tmp_path / "lightning_logs").is_dir()


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["demo", "--out", str(tmp_path / "demo"), "--num-train", "8", "--num-test", "3",
                   "--max-epochs", "1", "--size", "256", "--accelerator", "cpu"])
    out = capsys.readouterr().out
    assert status == 0
    assert "Cina 2021" in out and "Median normalized error x" in out
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    assert len(list((tmp_path / "demo" / "predictions" / "overlays").glob("*.png"))) == 3


def test_time_budget_option_parses_totals_and_stages() -> None:
    from spinelandmarks.cli import build_parser

    parse = build_parser().parse_args
    base = ["train", "data", "--out", "run", "--time-budget"]
    assert parse([*base, "20m"]).time_budget == 1200.0
    assert parse([*base, "1.5h"]).time_budget == 5400.0
    assert parse([*base, "90s"]).time_budget == 90.0
    assert parse([*base, "3"]).time_budget == 180.0  # bare numbers are minutes
    assert parse([*base, "detector=30s,landmark=2m"]).time_budget == {"detector": 30.0,
                                                                      "landmark": 120.0}
    for bad in ("soon", "-5m", "backbone=3m"):
        with pytest.raises(SystemExit):
            parse([*base, bad])


@pytest.mark.slow
def test_train_on_a_time_budget(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, _, _ = trained
    run = tmp_path / "budget"
    args = [a for a in TINY_TRAIN if a not in ("--max-epochs", "1")]
    assert main(["train", str(data), "--out", str(run), *args, "--stages", "landmark",
                 "--time-budget", "3s"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["time_budget_s"] == {"landmark": 3.0}
    assert (run / "landmark" / "best.pt").is_file()


def test_schema_option_by_name_file_and_unknown(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks.schema import LUMBAR_SAGITTAL

    data = tmp_path / "data"
    assert main(["synth", str(data), "--num-images", "2", "--seed", "3", "--size", "256"]) == 0
    schema_file = tmp_path / "schema.json"
    LUMBAR_SAGITTAL.save(schema_file)
    outs = []
    for schema in ([], ["--schema", "lumbar_sagittal"], ["--schema", str(schema_file)]):
        out = tmp_path / f"m{len(outs)}.csv"
        assert main(["measure", str(data / "annotations.json"), "--out", str(out), *schema]) == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1] == outs[2]
    capsys.readouterr()
    for verb in (["measure", str(data / "annotations.json"), "--out", str(tmp_path / "x.csv")],
                 ["train", str(data), "--out", str(tmp_path / "run"), *TINY_TRAIN]):
        assert main([*verb, "--schema", "cervical"]) == 2
        assert "unknown schema 'cervical'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any training


def test_train_lists_every_data_problem_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--num-images", "3", "--seed", "4", "--size", "256"]) == 0
    ann = json.loads((data / "annotations.json").read_text())
    ann["images"][1]["file_name"] = "images/missing.png"
    ann["annotations"][0]["keypoints"][0] = None  # a labelled point without coordinates
    (data / "annotations.json").write_text(json.dumps(ann))
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), *TINY_TRAIN]) == 2
    err = capsys.readouterr().err
    assert "2 annotation problem(s)" in err
    assert "missing.png" in err and "NaN" in err
    assert "Traceback" not in err
    assert not any(run.glob("*/best.pt")) and not any(run.glob("*/*.ckpt"))


@pytest.mark.slow
def test_train_refuses_a_run_from_other_settings_unless_overwrite(
        trained: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, _, _ = trained
    run = tmp_path / "run"
    args = [a for a in TINY_TRAIN if a not in ("--max-epochs", "1")]
    base = ["train", str(data), "--out", str(run), *args, "--stages", "landmark",
            "--time-budget", "2s"]
    assert main(base) == 0
    first = json.loads((run / "landmark" / "config.json").read_text())
    assert first["image_size"] == [128, 96]
    capsys.readouterr()
    other = [*base, "--image-size", "96x64"]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "image_size: [128, 96] in the run, [96, 64] now" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert main([*other, "--overwrite"]) == 0
    for cfg in (run / "config.json", run / "landmark" / "config.json"):
        assert json.loads(cfg.read_text())["image_size"] == [96, 64]
    assert json.loads((run / "config.json").read_text())["identity"]["image_size"] == [96, 64]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_unwritable_out_is_one_line_for_every_verb(
        untrained: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, test, run = untrained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = str(blocker / "out")
    probes = {
        "synth": ["synth", out, "--num-images", "1", "--size", "128"],
        "measure": ["measure", str(test / "annotations.json"), "--out", out],
        "train": ["train", str(data), "--out", out, *TINY_TRAIN],
        "predict": ["predict", str(run), str(test / "images"), "--out", out,
                    "--accelerator", "cpu"],
        "evaluate": ["evaluate", str(test / "annotations.json"), str(test / "annotations.json"),
                     "--out", out],
    }
    capsys.readouterr()
    for verb, argv in probes.items():
        assert main(argv) == 2, verb
        line = _one_error_line(capsys.readouterr().err)
        assert str(blocker) in line, (verb, line)
        assert "Not a directory" in line or "a file is in the way" in line, (verb, line)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_requested_without_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--accelerator", "gpu"]) == 2
    assert "no CUDA GPU" in _one_error_line(capsys.readouterr().err)


def test_interrupt_exits_130_and_debug_shows_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks import cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "synth", interrupted)
    assert main(["synth", str(tmp_path / "d")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    with pytest.raises(KeyboardInterrupt):
        main(["synth", str(tmp_path / "d"), "--debug"])
    missing = ["measure", str(tmp_path / "none.json"), "--out", str(tmp_path / "m.csv")]
    assert main(missing) == 2
    _one_error_line(capsys.readouterr().err)
    with pytest.raises(ValueError):
        main([*missing, "--debug"])


@pytest.mark.slow
def test_train_is_quiet_by_default_and_names_its_stage(
        trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    data, _, _ = trained
    args = [a for a in TINY_TRAIN if a not in ("--max-epochs", "1")]
    outputs = []
    for name, extra in (("q", []), ("v", ["--verbose"])):
        proc = subprocess.run(
            [sys.executable, "-m", "spinelandmarks.cli", "train", str(data), "--out",
             str(tmp_path / name), *args, "--stages", "landmark", "--time-budget", "2s", *extra],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    quiet, verbose = outputs
    assert "landmark: epoch 0" in quiet
    for noise in ("GPU available", "Tip:", "Checkpoint directory", "LeafSpec"):
        assert noise not in quiet, noise
    assert verbose.count("GPU available") == 1  # third-party lines back, each once


@pytest.mark.slow
def test_predict_export_import_gives_the_predicted_points(
        trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL

    _, test, run = trained
    pred = tmp_path / "pred"
    assert main(["predict", str(run), str(test / "images"), "--out", str(pred),
                 "--accelerator", "cpu", "--no-overlays"]) in (0, 1)
    predicted = read_coco(pred / "predictions.json", LUMBAR_SAGITTAL)
    for fmt, name in (("cvat", "annotations.xml"), ("coco", "coco_keypoints.zip"),
                      ("label-studio", "label_studio_tasks.json")):
        assert main(["export", str(pred / "predictions.json"), "--format", fmt, "--out",
                     str(tmp_path / fmt)]) == 0
        assert main(["import", str(tmp_path / fmt / name), "--format", fmt, "--images",
                     str(test / "images"), "--out", str(tmp_path / f"ds_{fmt}")]) == 0
        back = read_coco(tmp_path / f"ds_{fmt}" / "annotations.json", LUMBAR_SAGITTAL)
        for a, b in zip(predicted, back, strict=True):
            assert Path(a.file_name).name == Path(b.file_name).name
            np.testing.assert_allclose(a.points, b.points, atol=1e-9)


@pytest.mark.slow
def test_predict_output_folder_is_guarded_and_never_read_back(
        trained: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from PIL import Image

    _, test, run = trained
    images = tmp_path / "films"
    shutil.copytree(test / "images", images)
    out = images / "pred"  # inside the input folder
    base = ["predict", str(run), str(images), "--accelerator", "cpu"]
    assert main([*base, "--out", str(out)]) == 0
    n = len(list((test / "images").iterdir()))
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == n
    assert main([*base, "--out", str(out)]) == 0  # same inputs: replaced, overlays not doubled
    assert len(list((out / "overlays").iterdir())) == n
    capsys.readouterr()
    foreign = tmp_path / "busy"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main([*base, "--out", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err
    one = ["predict", str(run), str(next(images.glob("*.png"))), "--accelerator", "cpu"]
    assert main([*one, "--out", str(out)]) == 2  # other inputs
    assert main([*one, "--out", str(out), "--overwrite"]) == 0
    assert len(list((out / "overlays").iterdir())) == 1
    assert (foreign / "notes.txt").read_text() == "keep me"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "tiny.png")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p2")]) == 1  # one unusable image
    err = capsys.readouterr().err
    assert "tiny.png" in err and "too small" in err


def test_os_errors_read_as_one_line_with_what_to_do() -> None:
    import errno

    from spinelandmarks.cli import _message

    ro = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out")
    assert _message(ro) == "/mnt/ro/out: Read-only file system (choose an --out on a " \
                           "writable disk)"
    full = OSError(errno.ENOSPC, "No space left on device", "/data/pred")
    assert _message(full).startswith("/data/pred: No space left on device (free space")
    assert _message(ValueError("x.png: too small")) == "x.png: too small"


def test_evaluate_matches_paths_as_predict_names_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    from spinelandmarks.data.annotations import read_coco, write_coco
    from spinelandmarks.schema import LUMBAR_SAGITTAL

    data = tmp_path / "data"
    assert main(["synth", str(data), "--num-images", "3", "--seed", "6", "--size", "256"]) == 0
    recs = read_coco(data / "annotations.json", LUMBAR_SAGITTAL)
    # predictions name files by the path given to predict: absolute, or a bare name
    recs[0].file_name = str((data / recs[0].file_name).resolve())
    recs[1].file_name = Path(recs[1].file_name).name
    recs[2].file_name = "elsewhere/unknown.png"
    pred = tmp_path / "predictions.json"
    write_coco(recs, LUMBAR_SAGITTAL, pred)
    capsys.readouterr()
    assert main(["evaluate", str(pred), str(data / "annotations.json"), "--out",
                 str(tmp_path / "rep"), "--allow-partial"]) == 0
    out = capsys.readouterr()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n_images"] == 3 and len(metrics["missing_images"]) == 1
    assert f"report: {tmp_path / 'rep' / 'report.md'}\n" in out.out  # not report.md/report.md
    assert "1 prediction(s) match no ground-truth image" in caplog.text
    recs[0].file_name = recs[1].file_name = "nowhere/x.png"
    write_coco(recs[:1], LUMBAR_SAGITTAL, pred)
    assert main(["evaluate", str(pred), str(data / "annotations.json"), "--out",
                 str(tmp_path / "rep2")]) == 2
    assert "no prediction matches an image" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_resumes_after_an_interruption_with_identical_outputs(
        trained: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import shutil
    import signal

    from spinelandmarks.prediction_store import PredictionJournal

    _, test, run = trained
    films = tmp_path / "films"
    shutil.copytree(test / "images", films)
    (films / "broken.png").write_bytes(b"not a png")
    n = len(list((test / "images").iterdir()))
    base = ["predict", str(run), str(films), "--accelerator", "cpu", "--batch-size", "1"]
    assert main([*base, "--out", str(tmp_path / "whole")]) == 1  # broken.png failed
    failures = (tmp_path / "whole" / "failures.csv").read_text().splitlines()
    assert failures[0] == "file,stage,reason" and len(failures) == 2
    assert "broken.png,read," in failures[1]

    append = PredictionJournal.append
    calls: list[int] = []

    def interrupt_after_first(self: PredictionJournal, entries: list) -> None:
        append(self, entries)
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first batch is journaled

    monkeypatch.setattr(PredictionJournal, "append", interrupt_after_first)
    capsys.readouterr()
    part = tmp_path / "part"
    assert main([*base, "--out", str(part)]) == 130
    assert "run the same command again" in capsys.readouterr().err
    # the batches already handed to the overlay threads finish before the run stops: at least
    # the first is done, never all of them
    done = len(json.loads((part / "predictions.json").read_text())["images"])
    assert 1 <= done < n
    monkeypatch.setattr(PredictionJournal, "append", append)
    with (part / "predictions.jsonl").open("a") as f:
        f.write('{"key": "cut short by a cra')  # a crash in the middle of a line
    assert main([*base, "--out", str(part), "--workers", "2"]) == 1
    for name in ("predictions.json", "predictions_step1.json", "measurements.csv",
                 "failures.csv"):
        assert (part / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert len(list((part / "overlays").iterdir())) == n


@pytest.mark.slow
@pytest.mark.skipif(not __import__("torch").distributed.is_available(),
                    reason="torch.distributed not available")
def test_predict_two_processes_merge_to_the_single_process_outputs(
        trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from spinelandmarks.predict import predict_files

    _, test, run = trained
    files = sorted((test / "images").iterdir())
    kw = dict(accelerator="cpu", batch_size=1, progress=False, overlays=False, tta=False)
    # The threads each of the two processes gets (Lightning shares the cores out, unless
    # OMP_NUM_THREADS is set): float sums in the convolutions then run in the same order, and
    # the files are byte-identical.
    from lightning.fabric.utilities.distributed import _suggested_max_num_threads

    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(_suggested_max_num_threads(2))
    try:
        predict_files(run, files, tmp_path / "one", **kw)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(threads)
    # Two CPU processes (gloo): each writes its shard; rank 0 merges them in input order.
    predict_files(run, files, tmp_path / "two", devices=2, strategy="ddp_spawn",
                  **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "two" / "shards").exists()
    for name in ("predictions.json", "predictions_step1.json", "measurements.csv",
                 "failures.csv"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
    assert len(json.loads((tmp_path / "two" / "predictions.json").read_text())["images"]) == (
        len(files))


def test_collect_inputs_from_folders_patterns_and_lists(tmp_path: Path) -> None:
    from PIL import Image

    from spinelandmarks.cli import collect_inputs

    root = tmp_path / "export"
    for rel in ("p1/lateral/a.png", "p1/ap/b.png", "p2/lateral/c.png", "p2/notes.txt"):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".png":
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(f)
        else:
            f.write_text("x")
    files, missing = collect_inputs([str(root)], include_patterns=["*/lateral/*"])
    assert [f.relative_to(root).as_posix() for f in files] == ["p1/lateral/a.png",
                                                               "p2/lateral/c.png"]
    files, _ = collect_inputs([str(root)], exclude_patterns=["p1/*"])
    assert [f.name for f in files] == ["c.png"]
    (root / "list.txt").write_text("# lateral films\np1/lateral/a.png\np9/gone.png\n")
    (root / "list.csv").write_text("patient,file\n1,p2/lateral/c.png\n2,p1/lateral/a.png\n")
    files, missing = collect_inputs([str(root / "list.txt"), str(root / "list.csv")])
    assert [f.name for f in files] == ["a.png", "c.png"]  # a.png listed twice, kept once
    assert missing == [str(root / "p9/gone.png")]


@pytest.mark.slow
def test_other_schema_and_masks_train_and_predict_through_the_cli(tmp_path: Path) -> None:
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.data.masks import mask_from_segmentation
    from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as P

    data = tmp_path / "data"
    assert main(["synth", str(data), "--num-images", "6", "--seed", "3", "--size", "256",
                 "--schema", "lumbopelvic_sagittal"]) == 0
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--masks", "--height-weight", "0.5",
                 *TINY_TRAIN]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["identity"]["masks"] is True and cfg["height_weight"] == 0.5
    assert json.loads((run / "pipeline" / "pipeline.json").read_text())["masks"] is True
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(data / "images"), "--out", str(out),
                 "--accelerator", "cpu", "--no-overlays"]) in (0, 1)
    recs = read_coco(out / "predictions.json", P)  # the schema of the run: 24 points
    assert len(recs) == 6 and all(r.points.shape == (24, 2) for r in recs)
    from spinelandmarks.inference import SpineLandmarkPipeline
    pipe = SpineLandmarkPipeline.load(run / "pipeline")
    assert pipe.options.masks and pipe.refiner is not None and pipe.refiner.has_masks
    assert pipe.refiner.hparams["height_weight"] == 0.5
    # one epoch segments little; whatever it found decodes at the image size
    for r in recs:
        for seg in r.masks.values():
            assert mask_from_segmentation(seg, r.height, r.width).shape == (r.height, r.width)
    header = (out / "measurements.csv").read_text().splitlines()[0]
    assert "pelvic_incidence_deg" in header and "pelvic_tilt_deg" in header


def test_train_init_from_starts_each_stage_from_a_saved_pipeline(
        untrained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from spinelandmarks.inference import load_module
    from spinelandmarks.models import CropRefiner, LandmarkModel
    from spinelandmarks.training import TrainConfig, _initialize, train_pipeline

    data, _, run = untrained
    source = load_module(run / "pipeline" / "landmark.pt")
    # no epoch: the stage's weights are the source's; a run directory works as well
    tuned = tmp_path / "tuned"  # (the command line needs >= 1 epoch; the library takes 0)
    train_pipeline(data, tuned, TrainConfig(
        init_from=str(run), stages=("landmark",), max_epochs=0, image_size=(128, 96),
        crop_size=(48, 48), backbone="resnet_lite", batch_size=4, num_workers=0,
        accelerator="cpu", progress=False))
    start = load_module(tuned / "landmark" / "best.pt")
    for a, b in zip(start.state_dict().values(), source.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    cfg = json.loads((tuned / "config.json").read_text())
    assert cfg["identity"]["init_from"] == str(run)
    pipeline = run / "pipeline"
    with pytest.raises(ValueError, match=r"landmark\.pt: its network does not fit"):
        _initialize(LandmarkModel(backbone="resnet_lite", decoder_channels=32), pipeline,
                    "landmark")
    with pytest.raises(ValueError, match="a LandmarkModel, not a CropRefiner"):
        _initialize(CropRefiner(backbone="resnet_lite"), pipeline, "landmark")
    with pytest.raises(FileNotFoundError, match="--init-from needs a saved pipeline"):
        _initialize(LandmarkModel(backbone="resnet_lite"), tmp_path / "nothing", "landmark")
