"""``train --init-from``: settings taken from the source pipeline, and mismatches named before
anything is written (tiny untrained pipelines: nothing is trained in the fast tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spinelandmarks.cli import main
from spinelandmarks.demo import CPU_DETECTOR
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.init_from import first_mismatch, inherit_settings, source_settings
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.models.detector import VertebraDetector
from spinelandmarks.training import TrainConfig

SMALL = dict(CPU_DETECTOR)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained pipeline saved as a run: resnet_lite, 96x64 inputs, 40x40 crops, small
    detector head, crop scale 1.5."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("src") / "run"
    pipe = SpineLandmarkPipeline(
        LandmarkModel(backbone="resnet_lite", input_size=(96, 64)),
        CropRefiner(backbone="resnet_lite", input_size=(40, 40)),
        VertebraDetector(backbone="resnet_lite", input_size=(96, 64), **SMALL),
        crop_scale=1.5)
    pipe.save(run / "pipeline")
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "d"
    assert main(["synth", str(out), "--num-images", "4", "--seed", "3", "--size", "256"]) == 0
    return out


def test_source_settings_read_from_the_saved_networks(source: Path) -> None:
    s = source_settings(source)  # a run directory works as well as RUN/pipeline
    assert s.path == source / "pipeline"
    assert (s.image_size, s.crop_size, s.crop_scale) == ((96, 64), (40, 40), 1.5)
    assert (s.backbone, s.detector_backbone, s.masks) == ("resnet_lite", "resnet_lite", False)
    # only the head settings that differ from VertebraDetector's defaults
    assert s.detector_kwargs == {"fpn_channels": 64, "representation_size": 256,
                                 "proposals_train": 300, "proposals_test": 100,
                                 "box_batch_size_per_image": 64}
    assert s.config_values()["schema"] == "lumbar_sagittal"


def test_inherit_takes_what_is_not_given(source: Path) -> None:
    cfg = TrainConfig(init_from=str(source), crop_size=(48, 48))
    new, taken = inherit_settings(cfg, given={"crop_size"})
    assert new.image_size == (96, 64) and new.crop_size == (48, 48)
    assert new.backbone == new.detector_backbone == "resnet_lite"
    assert new.crop_scale == 1.5 and new.schema == "lumbar_sagittal"
    assert new.detector_kwargs["fpn_channels"] == 64
    assert set(taken) == {"schema", "image_size", "crop_scale", "backbone",
                          "detector_backbone", "detector_kwargs"}
    assert inherit_settings(TrainConfig(), ()) == (TrainConfig(), {})  # no --init-from


def test_first_mismatch_names_layer_and_shapes() -> None:
    a = {"x.weight": torch.zeros(2, 3), "y": torch.zeros(1)}
    assert first_mismatch(a, a) is None
    assert first_mismatch({"x.weight": torch.zeros(4, 3), "y": torch.zeros(1)}, a) == (
        "layer x.weight is 2x3 in the source and 4x3 in this run")
    assert first_mismatch({"x.weight": torch.zeros(2, 3)}, a) == (
        "layer y (1) is in the source but not in this run's network")
    assert first_mismatch({**a, "z": torch.zeros(5)}, a) == (
        "layer z (5) is in this run's network but not in the source")


def test_cli_mismatch_is_named_before_anything_is_written(
        source: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tuned"
    code = main(["train", str(data), "--out", str(out), "--init-from", str(source),
                 "--schema", "lumbopelvic_sagittal", "--workers", "0", "--accelerator", "cpu"])
    captured = capsys.readouterr()
    assert code == 2
    assert "taken from the source pipeline: image-size 96x64, crop-size 40x40" in captured.out
    err = captured.err
    assert f"--init-from {source / 'pipeline'}: detector.pt does not fit this run's detector" \
        in err
    # the detector's class head: 6 levels + background in the source, 7 + 1 here
    assert "is 7x256 in the source and 8x256 in this run" in err
    assert ("The source was trained with schema lumbar_sagittal (22 points), --image-size "
            "96x64, --crop-size 40x40, crop scale 1.5, --backbone resnet_lite, "
            "--detector-backbone resnet_lite, detector head box_batch_size_per_image=64") in err
    assert "this run asks for schema lumbopelvic_sagittal (24 points)" in err
    assert "nothing was written" in err
    assert not out.exists()


def test_cli_backbone_mismatch(source: Path, data: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tuned"
    assert main(["train", str(data), "--out", str(out), "--init-from", str(source),
                 "--stages", "landmark", "--backbone", "resnet18", "--workers", "0",
                 "--accelerator", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "landmark.pt does not fit this run's landmark network: layer backbone." in err
    assert not out.exists()


@pytest.mark.slow
def test_cli_corrected_rerun_takes_source_settings(source: Path, data: Path,
                                                   tmp_path: Path) -> None:
    """After a refused run, the rerun without the wrong option starts (nothing was written),
    with the source's sizes and weights."""
    import json

    from spinelandmarks.inference import load_module

    out = tmp_path / "tuned"
    base = ["train", str(data), "--out", str(out), "--init-from", str(source), "--stages",
            "landmark", "--max-epochs", "1", "--lr", "1e-9", "--workers", "0",
            "--accelerator", "cpu", "--batch-size", "2"]
    assert main([*base, "--backbone", "resnet18"]) == 2
    assert main(base) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["image_size"] == [96, 64] and cfg["backbone"] == "resnet_lite"
    tuned = load_module(out / "landmark" / "best.pt")
    start = load_module(source / "pipeline" / "landmark.pt")
    # one epoch at a learning rate of 1e-9 (the parser refuses 0 epochs): the weights are the
    # source's (the batch-norm running statistics, not weights, do move)
    for a, b in zip(tuned.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("flags", "head"), [
    (["--accelerator", "cpu"], SMALL),
    (["--accelerator", "cpu", "--detector-head", "full"], {}),
    (["--accelerator", "cpu", "--small-detector"], SMALL),
    (["--accelerator", "cpu", "--init-from", "SRC"], None),  # the source's, not a default
    (["--accelerator", "cpu", "--init-from", "SRC", "--detector-head", "full"], {}),
])
def test_cli_detector_head_default_follows_the_accelerator(flags: list[str],
                                                           head: dict | None) -> None:
    from spinelandmarks.cli import _network_options, build_parser

    args = build_parser().parse_args(["train", "DATA", "--out", "OUT", *flags])
    assert _network_options(args).get("detector_kwargs") == head
