"""The shift score and alarm: the shrunk Gaussian, a hand-made shift (another phantom style
and intensity profile), persistence with the pipeline, summary.json and the run's last lines
(tiny untrained networks: nothing is trained)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.adaptation import fit_shift_model, pooled_features
from spinelandmarks.adaptation.shift import (
    ALARM_FRACTION,
    RunSummary,
    advice,
    archive_alarm,
    summarize,
)
from spinelandmarks.adaptation.shift_model import ShiftModel, intensity_statistics, ledoit_wolf
from spinelandmarks.inference import SpineLandmarkPipeline, SpineResult
from spinelandmarks.models import LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_phantom


def test_ledoit_wolf_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(30, 5)) * [1, 2, 3, 1, 1])
    x = x - x.mean(0)
    s = x.T @ x / 30
    mu = torch.trace(s) / 5
    delta = ((s - mu * torch.eye(5)) ** 2).sum() / 5
    beta = sum(((torch.outer(r, r) - s) ** 2).sum() for r in x) / 30 ** 2 / 5
    a = min(float(beta / delta), 1.0)
    torch.testing.assert_close(ledoit_wolf(x), (1 - a) * s + a * mu * torch.eye(5))
    sklearn = pytest.importorskip("sklearn.covariance")
    torch.testing.assert_close(ledoit_wolf(x), torch.from_numpy(
        sklearn.ledoit_wolf(x.numpy(), assume_centered=True)[0]))


def test_shift_model_units_threshold_and_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    train, val = torch.randn(200, 6, generator=g), torch.randn(50, 6, generator=g)
    ti, vi = torch.randn(200, 3, generator=g), torch.randn(50, 3, generator=g)
    m = ShiftModel.fit(train, ti, val, vi)
    scores = m.score(val, vi)
    # the unit is the validation median of the feature distances
    assert float(scores.median()) == pytest.approx(1.0)
    assert m.threshold == pytest.approx(1.25 * float(torch.quantile(scores, 0.99)))
    assert m.val_shifted_fraction == 0.0 and (m.num_train, m.num_val) == (200, 50)
    far = m.score(val + 4.0, vi)  # every feature moved by 4 standard deviations
    assert bool((far > m.threshold).all())
    f, i = m.ratios(val, vi + 4.0)  # the intensity statistics: reported, not scored
    assert bool((i > 3.0).all()) and torch.equal(f, scores)
    assert float(m.ratios(val, vi)[1].median()) == pytest.approx(1.0)
    again = ShiftModel.load(m.save(tmp_path / "shift.pt"))
    torch.testing.assert_close(again.score(val, vi), scores, rtol=1e-5, atol=1e-5)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bad\.pt: cannot load the shift model"):
        ShiftModel.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="at least 2 training and 1 validation"):
        ShiftModel.fit(train[:1], ti[:1], val, vi)


def test_intensity_statistics_by_hand() -> None:
    img = torch.linspace(0, 1, 100 * 50).reshape(1, 1, 100, 50)
    s = intensity_statistics(img)
    assert s.shape == (1, 8)
    torch.testing.assert_close(s[0, :5], torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    assert float(s[0, 5]) == pytest.approx(0.5)
    assert float(s[0, 7]) == pytest.approx(math.log(2.0))


# -- a hand-made shift on radiographs --------------------------------------------------------------
def _other_source(x: np.ndarray) -> np.ndarray:
    """A hand-made new source: another intensity profile (square-root response) and field of
    view (the anatomy fills two thirds of a detector with a bright, uncollimated surround)."""
    h, w = x.shape
    canvas = np.full((int(h * 1.5), int(w * 1.5)), 0.9)
    top, left = (canvas.shape[0] - h) // 2, (canvas.shape[1] - w) // 2
    canvas[top:top + h, left:left + w] = np.sqrt(np.clip(x, 0, 1))
    return canvas


@pytest.fixture(scope="module")
def images() -> dict[str, list[np.ndarray]]:
    """Style A phantoms, 256 px: training, validation and held-out images, and the held-out
    images as a new source would show them."""
    cfg = PhantomConfig(long_side=256)
    a = [generate_phantom(s, cfg)[0] for s in range(22)]
    return {"train": a[:12], "val": a[12:18], "test": a[18:22],
            "shifted": [_other_source(x) for x in a[18:22]]}


@pytest.fixture(scope="module")
def fitted(images: dict[str, list[np.ndarray]]) -> SpineLandmarkPipeline:
    torch.manual_seed(0)
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)))
    fit_shift_model(pipe, images["train"], images["val"], batch_size=4)
    return pipe


def test_hand_made_shift_scores_higher_than_held_out_images(
        fitted: SpineLandmarkPipeline, images: dict[str, list[np.ndarray]]) -> None:
    res = {k: fitted.predict(images[k], batch_size=4) for k in ("test", "shifted")}
    score = {k: np.array([r.shift_score for r in v]) for k, v in res.items()}
    assert fitted.shift_model is not None
    assert score["shifted"].min() > score["test"].max()
    assert all(r.shifted for r in res["shifted"])
    assert not any(r.shifted for r in res["test"])


def test_pooled_features_shape_and_batches(fitted: SpineLandmarkPipeline,
                                           images: dict[str, list[np.ndarray]]) -> None:
    mixed = [images["test"][0], images["shifted"][0], images["test"][1]]  # two sizes
    one = pooled_features(fitted, mixed, batch_size=1)
    assert one.shape == (3, 256)  # resnet_lite's last stage
    torch.testing.assert_close(pooled_features(fitted, mixed, batch_size=8), one,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no input images"):
        pooled_features(fitted, [])


def test_shift_model_saved_with_the_pipeline_and_old_pipelines_load(
        fitted: SpineLandmarkPipeline, images: dict[str, list[np.ndarray]],
        tmp_path: Path) -> None:
    d = fitted.save(tmp_path / "pipe")
    cfg = json.loads((d / "pipeline.json").read_text())
    assert cfg["shift_model"] == "shift.pt"
    loaded = SpineLandmarkPipeline.load(d)
    x = images["shifted"][:2]
    assert [r.shift_score for r in loaded.predict(x)] == pytest.approx(
        [r.shift_score for r in fitted.predict(x)], rel=1e-4)
    # a pipeline saved before shift models: no score, no alarm
    del cfg["shift_model"]
    (d / "pipeline.json").write_text(json.dumps(cfg))
    old = SpineLandmarkPipeline.load(d)
    r = old.predict(x[0])[0]
    assert old.shift_model is None and r.shift_score is None and r.shifted is None
    assert summarize([r], None) == RunSummary(1, int(r.needs_review), None, False, None)


def test_predict_writes_summary_and_says_so(fitted: SpineLandmarkPipeline,
                                            images: dict[str, list[np.ndarray]],
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from spinelandmarks.cli import main
    from spinelandmarks.data.io import write_png16

    run = fitted.save(tmp_path / "pipe")
    files = tmp_path / "archive"
    for i, x in enumerate(images["test"][:2] + images["shifted"][:3]):
        write_png16(files / f"{i}.png", x)
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(files), "--out", str(out), "--no-overlays",
                 "--accelerator", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    preds = json.loads((out / "predictions.json").read_text())["images"]
    assert [p["shifted"] for p in preds] == [False, False, True, True, True]
    assert summary["images"] == 5 and summary["shifted"] == 3
    assert summary["needs_review"] == sum(p["needs_review"] for p in preds)
    assert summary["shift_alarm"] is True and summary["shifted_fraction"] == 0.6
    assert summary["shift_threshold"] == pytest.approx(fitted.shift_model.threshold)
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert [r["shifted"] for r in rows] == ["0", "0", "1", "1", "1"]
    assert float(rows[2]["shift_score"]) == pytest.approx(preds[2]["shift_score"], abs=1e-4)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("SHIFT ALARM: 3 of 5 images (60%) do not look like")
    assert f"spinelandmarks select {run} IMAGES" in lines[-1]
    assert f"--init-from {run}" in lines[-1]


def _result(shifted: bool | None, review: bool = False) -> SpineResult:
    nan = np.full((22, 2), np.nan)
    return SpineResult("x", (10, 10), None, nan, nan, np.full(22, np.nan), np.full(6, np.nan),
                       needs_review=review, shift_score=None if shifted is None else 1.0,
                       shifted=shifted)


def test_alarm_rule_summary_and_advice() -> None:
    assert ALARM_FRACTION == 0.2
    assert archive_alarm(2, 10) and not archive_alarm(1, 10) and not archive_alarm(0, 0)
    model = ShiftModel.fit(torch.randn(5, 2), torch.randn(5, 2), torch.randn(3, 2),
                           torch.randn(3, 2))
    s = summarize([_result(True, True), _result(False), _result(False), _result(False),
                   _result(False), _result(False)], model)
    assert s == RunSummary(6, 1, 1, False, model.threshold)
    assert s.to_json()["alarm_rule"].startswith("shift_alarm when at least 20% of the images")
    assert RunSummary.from_json(s.to_json()) == s
    assert advice(s, "RUN") == ["shift: 1 of 6 images look unlike the training images "
                                "(shifted in predictions.json); the archive as a whole does "
                                "not (no shift alarm)"]
    assert "no shift model" in advice(RunSummary(3, 0, None, False, None), "RUN")[0]
