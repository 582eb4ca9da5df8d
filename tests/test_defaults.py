"""One source of defaults (spinelandmarks.defaults) and the errors that replaced asserts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from spinelandmarks import defaults, demo, training
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.datasets import CropDataset, DetectionDataset, LandmarkDataset
from spinelandmarks.geometry import vertebra_crop_params
from spinelandmarks.inference import PipelineOptions
from spinelandmarks.models import CropRefiner, LandmarkModel, VertebraDetector
from spinelandmarks.prediction_store import PredictionJournal


def _default(func: object, name: str) -> object:
    return inspect.signature(func).parameters[name].default  # type: ignore[arg-type]


def test_every_site_takes_its_default_from_defaults() -> None:
    assert defaults.INPUT_SIZE == (512, 384) and defaults.CROP_SIZE == (128, 128)
    assert defaults.CROP_SCALE == 1.6
    for func in (LandmarkModel, VertebraDetector, LandmarkDataset, DetectionDataset,
                 SpineDataModule):
        assert _default(func, "input_size") == defaults.INPUT_SIZE, func
    assert _default(CropRefiner, "input_size") == defaults.CROP_SIZE
    assert _default(CropDataset, "crop_size") == defaults.CROP_SIZE
    assert _default(SpineDataModule, "crop_size") == defaults.CROP_SIZE
    assert _default(CropDataset, "scale") == defaults.CROP_SCALE
    assert _default(SpineDataModule, "crop_scale") == defaults.CROP_SCALE
    assert _default(vertebra_crop_params, "scale") == defaults.CROP_SCALE
    assert _default(CropRefiner, "crop_scale") == defaults.CROP_SCALE
    assert _default(PipelineOptions, "crop_scale") is None  # the refiner's
    cfg = training.TrainConfig()
    assert (cfg.image_size, cfg.crop_size, cfg.crop_scale) == (
        defaults.INPUT_SIZE, defaults.CROP_SIZE, defaults.CROP_SCALE)


def test_old_names_are_the_same_objects() -> None:
    assert demo.CPU_BUDGET_S is defaults.CPU_BUDGET_S
    assert demo.GPU_BUDGET_S is defaults.GPU_BUDGET_S
    assert demo.CPU_DETECTOR is defaults.CPU_DETECTOR
    assert training.BUDGET_SHARES is defaults.BUDGET_SHARES


def test_budget_shares_are_the_cpu_budget_split() -> None:
    total = sum(defaults.CPU_BUDGET_S.values())
    assert training.split_time_budget(total) == pytest.approx(defaults.CPU_BUDGET_S)
    assert defaults.BUDGET_SHARES["landmark"] == pytest.approx(210 / 430)


def test_train_help_states_the_shares(capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "detector 23 %, landmark 49 %, refiner 28 %" in text
    assert "the detector keeps its own (VertebraDetector's lr)" in text
    assert "--backbone of the landmark model and the refiner" in text


def test_forward_masks_without_a_mask_head_is_a_clear_error() -> None:
    refiner = CropRefiner(backbone="resnet_lite", input_size=(32, 32))
    with pytest.raises(ValueError, match=r"no mask head .*masks=False.*train --masks"):
        refiner.forward_masks(torch.zeros(1, 1, 32, 32))


def test_journal_used_outside_a_with_block_is_a_clear_error(tmp_path: Path) -> None:
    journal = PredictionJournal(tmp_path / "predictions.jsonl", load=False)
    with pytest.raises(RuntimeError, match="the journal is not open; use it as a context manager"):
        journal.append_lines('{"key": "a"}\n')
    assert not (tmp_path / "predictions.jsonl").exists()
