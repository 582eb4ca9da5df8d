"""Overlays drawn off the critical path: reduced size, PNG or JPEG, an image journaled only once
its overlay is written, and the files of an interrupted, resumed run equal an uninterrupted
one's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spinelandmarks import overlay_writer
from spinelandmarks.data.io import Radiograph
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.overlay import draw_overlay, save_overlay
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.predict import predict_files
from spinelandmarks.prediction_store import PredictionJournal

OUTPUTS = ("predictions.json", "predictions_step1.json", "measurements.csv", "failures.csv")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("overlays")
    data = generate_dataset(root / "data", 4, seed=4, config=PhantomConfig(long_side=320))
    torch.manual_seed(0)
    run = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)),
                                CropRefiner(backbone="resnet_lite", input_size=(48, 48)),
                                tta=False).save(root / "pipeline")
    return run, sorted((data / "images").iterdir())


def _predict(run: Path, files: list[Path], out: Path, **kw: object) -> None:
    predict_files(run, files, out, batch_size=1, accelerator="cpu", progress=False,
                  overlay_size=160, **kw)  # type: ignore[arg-type]


def test_overlay_drawn_at_reduced_size_and_saved_as_jpeg(
        setup: tuple[Path, list[Path]], tmp_path: Path) -> None:
    run, _ = setup
    pipe = SpineLandmarkPipeline.load(run)
    image = np.random.default_rng(0).random((300, 240), dtype=np.float32)
    res = pipe.predict(image)[0]
    rad = Radiograph(pixels=image, pixel_spacing=None, source="x")
    assert draw_overlay(rad, res, pipe, max_side=150).shape == (150, 120, 3)
    assert draw_overlay(rad, res, pipe, max_side=1024).shape == (300, 240, 3)  # not enlarged
    assert draw_overlay(rad, res, pipe).shape == (300, 240, 3)
    jpg = save_overlay(tmp_path / "a.jpg", draw_overlay(rad, res, pipe, 150))
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (120, 150)
    with pytest.raises(ValueError, match=r"overlays are written as \.png or \.jpg"):
        save_overlay(tmp_path / "a.gif", np.zeros((2, 2, 3), np.uint8))


def test_image_journaled_only_after_its_overlay_is_written(
        setup: tuple[Path, list[Path]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run, files = setup
    append = PredictionJournal.append
    seen: list[int] = []

    def checked(self: PredictionJournal, entries: list) -> None:
        if entries:  # the writer's shard: every overlay of the batch is on disk already
            assert len(list((tmp_path / "out" / "overlays").glob("*.jpg"))) >= len(seen) + 1
            seen.append(len(entries))
        append(self, entries)

    monkeypatch.setattr(PredictionJournal, "append", checked)
    _predict(run, files, tmp_path / "out", overlay_format="jpg")
    assert sum(seen) == len(files)
    names = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert names == [f"{i + 1:05d}_{f.stem}.jpg" for i, f in enumerate(files)]


def test_resumed_run_overlays_equal_uninterrupted(setup: tuple[Path, list[Path]],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run, files = setup
    _predict(run, files, tmp_path / "whole")

    # A crash while the third overlay is drawn: batches 1-2 are journaled (or not yet: their
    # overlays may still be in flight), batch 3 is not; nothing half-written is left.
    save = overlay_writer.save_overlay
    count: list[int] = []

    def crash_on_third(path: Path, rgb: np.ndarray) -> Path:
        count.append(1)
        if len(count) == 3:
            raise OSError("disk pulled out")
        return save(path, rgb)

    monkeypatch.setattr(overlay_writer, "save_overlay", crash_on_third)
    with pytest.raises(OSError, match="disk pulled out"):
        _predict(run, files, tmp_path / "part")
    monkeypatch.setattr(overlay_writer, "save_overlay", save)
    done = PredictionJournal(tmp_path / "part" / "shards" / "rank0.jsonl").done
    assert len(done) <= 2
    _predict(run, files, tmp_path / "part")  # resumes

    whole, part = tmp_path / "whole" / "overlays", tmp_path / "part" / "overlays"
    names = sorted(p.name for p in whole.iterdir())
    assert len(names) == len(files) and sorted(p.name for p in part.iterdir()) == names
    for name in names:
        assert (part / name).read_bytes() == (whole / name).read_bytes(), name
    for name in OUTPUTS:
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "whole" / name).read_text()
