"""The examples run (tiny settings) and do what they say."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_new_landmark_task_learns_centres(tmp_path: Path) -> None:
    ex = load("new_landmark_task")
    metrics = ex.main(["--out", str(tmp_path), "--num-images", "12", "--epochs", "12"])
    assert np.isfinite(metrics["val/loss"]) and "train/smooth" in metrics
    assert ex.CENTRES.num_points == 6
    # Training went somewhere: the loss fell below its untrained value (~1.0 for DSNT + JS).
    assert metrics["train/loss"] < 1.0
    # A schema of points without bodies is scored by radial error, in mm (spacing known):
    # finite, every point found, and each centre nearer its own level than the next one
    # (lumbar levels lie about 35 mm apart; 12 tiny epochs reach about 13 mm).
    assert metrics["val/unit_mm"] == 1.0 and metrics["val/detection_rate"] == 1.0
    assert 0.0 < metrics["val/mre"] < 25.0 and np.isfinite(metrics["val/sd"])
    assert metrics["val/mre"] == pytest.approx(metrics["val/mean_mm"])
    sdr = [metrics[f"val/sdr@{t}"] for t in (2.0, 2.5, 3.0, 4.0)]
    assert sdr == sorted(sdr) and 0.0 <= sdr[0] and sdr[-1] <= 1.0
    assert not any("nle" in k or "median_x" in k for k in metrics)  # not defined here


@pytest.mark.slow
def test_train_then_notebook_workflow(tmp_path: Path) -> None:
    train = load("train_own_data")
    pipeline_dir = train.main(["--out", str(tmp_path / "run"), "--epochs", "1", "--tiny"])
    assert (pipeline_dir / "pipeline.json").is_file()
    # fine-tuning from it on the same images: every stage starts from its networks
    tuned = train.main([str(tmp_path / "run" / "synthetic"), "--out", str(tmp_path / "tuned"),
                        "--epochs", "1", "--tiny", "--init-from", str(pipeline_dir)])
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert (tuned / "pipeline.json").is_file() and config["init_from"] == str(pipeline_dir)
    nb = load("notebook_workflow")
    image = sorted((tmp_path / "run" / "synthetic" / "images").iterdir())[0]
    params = nb.main([str(tmp_path / "run"), str(image), "--out", str(tmp_path / "o.png")])
    assert set(params[0]) == {"l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"}
    assert (tmp_path / "o.png").stat().st_size > 0


def test_contact_sheet_tile_marks_every_visible_corner() -> None:
    from spinelandmarks.phantoms import PhantomConfig, generate_phantom

    config = PhantomConfig(long_side=256)
    image, rec = generate_phantom(2, config)
    tile = load("make_contact_sheet").tile(2, config, 128)
    scale = 128 / image.shape[1]
    assert tile.size == (128, round(image.shape[0] * scale))
    rgb = np.asarray(tile).astype(int)
    red = (rgb == (255, 40, 40)).all(-1)
    visible = [(x, y) for (x, y), v in zip(rec.points * scale, rec.visibility, strict=True)
               if v == 2 and y > 28]  # below the caption bar
    assert len(visible) >= 10
    for x, y in visible:  # a red ring of radius 2.5 px around each visible corner
        r, c = round(y), round(x)
        assert red[r - 4 : r + 5, c - 4 : c + 5].any(), (x, y)
    # the caption bar: black, with the caption in (anti-aliased) yellow
    bar = rgb[:24].reshape(-1, 3)
    assert (bar[:, 2] == 0).all() and (bar[:, 0] == bar[:, 1]).all()
    assert (bar == 0).all(-1).mean() > 0.5 and (bar[:, 0] > 128).any()


def test_angle_figure(tmp_path: Path) -> None:
    load("make_angle_figure").main(["--out", str(tmp_path / "a.png"), "--seed", "3"])
    assert (tmp_path / "a.png").stat().st_size > 10_000
