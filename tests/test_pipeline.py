"""The two-step pipeline: inputs, geometry of step 2, persistence, precision, export."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor

from spinelandmarks.data.io import read_dicom, write_dicom
from spinelandmarks.inference import (
    PipelineOptions,
    SpineLandmarkPipeline,
    load_module,
    save_module,
)
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_phantom


@pytest.fixture(scope="module")
def pipe() -> SpineLandmarkPipeline:
    torch.manual_seed(0)
    lm = LandmarkModel(backbone="resnet_lite", input_size=(128, 96))
    ref = CropRefiner(backbone="resnet_lite", input_size=(48, 48))
    return SpineLandmarkPipeline(lm, ref)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, object]:
    return generate_phantom(3, PhantomConfig(long_side=256))


def test_predict_on_array_tensor_and_dicom(pipe: SpineLandmarkPipeline, phantom: tuple,
                                           tmp_path: Path) -> None:
    image, _ = phantom
    res = pipe.predict(image)[0]
    assert res.points.shape == (22, 2) and res.points_step1.shape == (22, 2)
    assert res.image_size == image.shape
    assert np.isfinite(res.points).all() and (res.point_scores > 0).all()
    assert set(res.parameters) == {"l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"}
    same = pipe.predict(torch.from_numpy(image)[None])[0]
    np.testing.assert_allclose(same.points, res.points, atol=1e-4)

    path = tmp_path / "x.dcm"
    write_dicom(path, image, pixel_spacing=(0.3, 0.3), patient_id="p1")
    from_path = pipe.predict(path)[0]
    from_ds = pipe.predict(__import__("pydicom").dcmread(path))[0]
    assert from_path.pixel_spacing == (0.3, 0.3)
    np.testing.assert_allclose(from_path.points, from_ds.points, atol=1e-5)
    # 16-bit quantization of the DICOM moves the input by < 1e-5: same points.
    np.testing.assert_allclose(from_path.points, res.points, atol=1e-2)
    assert read_dicom(path).pixels.shape == image.shape


def test_batches_and_mixed_sizes(pipe: SpineLandmarkPipeline, phantom: tuple) -> None:
    image, _ = phantom
    small = image[:200, :160]
    results = pipe.predict([image, image, small, image], batch_size=2)
    assert [r.image_size for r in results] == [image.shape, image.shape, small.shape, image.shape]
    np.testing.assert_allclose(results[0].points, results[3].points, atol=1e-4)


class CentreRefiner(CropRefiner):
    """Predicts the crop centre for every point: step 2 must return each level's crop centre."""

    def predict_points(self, images: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = images.shape
        pts = torch.tensor([w / 2, h / 2]).expand(b, self.num_outputs, 2).clone()
        return pts, torch.ones(b, self.num_outputs)


def test_step2_maps_crop_points_back_to_the_image(pipe: SpineLandmarkPipeline,
                                                  phantom: tuple) -> None:
    image, _ = phantom
    stub = SpineLandmarkPipeline(pipe.landmark_model,
                                 CentreRefiner(backbone="resnet_lite", input_size=(48, 48)))
    res = stub.predict(image)[0]
    schema = stub.schema
    for lv in schema.level_names:
        idx = schema.level_indices(lv)
        centre = res.points_step1[idx].mean(0)
        np.testing.assert_allclose(res.points[idx], np.broadcast_to(centre, (len(idx), 2)),
                                   atol=1e-3)


class FixedRefiner(CropRefiner):
    """Predicts one fixed point ``(fx * w, fy * h)`` of the crop for every output."""

    def __init__(self, fx: float, fy: float) -> None:
        super().__init__(backbone="resnet_lite", input_size=(48, 48))
        self.fx, self.fy = fx, fy

    def predict_points(self, images: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h, w = images.shape
        pts = torch.tensor([self.fx * w, self.fy * h]).expand(b, self.num_outputs, 2).clone()
        return pts, torch.ones(b, self.num_outputs)


class FixedSpine(LandmarkModel):
    """Step 1 stub: a straight spine of 12x10 px bodies, tilted 10 deg, in input pixels."""

    def predict_points(self, images: Tensor) -> tuple[Tensor, Tensor]:
        box = torch.tensor([[0.0, 0.0], [12.0, 0.0], [12.0, 10.0], [0.0, 10.0]])
        levels = [box + torch.tensor([30.0 + 2 * k, 12.0 + 17 * k]) for k in range(6)]
        pts = torch.cat([*levels[:5], levels[5][:2]])  # 22 points, S1 superior pair only
        t = math.radians(10.0)
        rot = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        pts = (pts - 50) @ rot.T + 50
        return pts.expand(images.shape[0], -1, -1).clone(), torch.ones(images.shape[0], 22)


def test_suspected_fractures_follow_the_screen_and_are_saved(phantom: tuple,
                                                          tmp_path: Path) -> None:
    image, _ = phantom
    lm = FixedSpine(backbone="resnet_lite", input_size=(128, 96))  # rectangles: no height loss
    p = SpineLandmarkPipeline(lm)
    res = p.predict(image)[0]
    assert p.options.fracture_screen_loss == 0.25 and res.suspected_fractures == []
    # a screen line below any loss lists every body level, in the result and its record
    p.options = dataclasses.replace(p.options, fracture_screen_loss=-1.0)
    res = p.predict(image)[0]
    assert res.suspected_fractures == ["L1", "L2", "L3", "L4", "L5"]
    assert res.to_record(p.schema).meta["suspected_fractures"] == res.suspected_fractures
    saved = json.loads((p.save(tmp_path / "p") / "pipeline.json").read_text())
    assert saved["fracture_screen_loss"] == -1.0
    # fitted on images whose bodies are all normal and measured so: the grade-1 line
    p.calibrate_qc([image] * 2, [res.points] * 2)
    assert p.options.fracture_screen_loss == 0.20 and p.predict(image)[0].suspected_fractures == []


def test_tta_views_average_back_in_the_image(phantom: tuple) -> None:
    image, _ = phantom
    pipe = SpineLandmarkPipeline(FixedSpine(backbone="resnet_lite", input_size=(128, 96)))
    # A crop point (u, v) lands at the crop centre + side * scale * (u - 0.5, v - 0.5) along
    # the crop's axes, u -> 1 - u in a mirrored view. The views (1.0, 1.0 mirrored, 0.94,
    # 1.06 mirrored) have mean scale 1, so the offset 0.2 along v is the plain crop's; along u
    # the plain offset -0.2 becomes 0.2 * (-1 + 1 - 0.94 + 1.06) / 4 = -0.03 * (-0.2).
    tta = SpineLandmarkPipeline(pipe.landmark_model, FixedRefiner(0.3, 0.7), tta=True)
    plain = SpineLandmarkPipeline(pipe.landmark_model, FixedRefiner(0.5, 0.7), tta=False)
    off_axis = SpineLandmarkPipeline(pipe.landmark_model, FixedRefiner(0.3, 0.7), tta=False)
    r_tta, r_plain, r_off = (p.predict(image)[0] for p in (tta, plain, off_axis))
    np.testing.assert_allclose(r_tta.points - r_plain.points,
                               -0.03 * (r_off.points - r_plain.points), atol=1e-3)
    assert np.abs(r_off.points - r_plain.points).max() > 2.0  # the views did differ
    np.testing.assert_array_equal(r_tta.points_step1, r_plain.points_step1)


def test_tta_mirrored_crop_is_the_mirror_image() -> None:
    from spinelandmarks.geometry import crop_images, crop_matrix, hflip_matrix

    torch.manual_seed(0)
    image = torch.rand(1, 1, 60, 80)
    m = crop_matrix(torch.tensor([[40.3, 29.1]]), torch.tensor([[30.0, 30.0]]),
                    torch.tensor([12.0]), (24, 24))
    crop = crop_images(image, m[None], (24, 24))
    mirrored = crop_images(image, (hflip_matrix(24) @ m)[None], (24, 24))
    torch.testing.assert_close(mirrored, crop.flip(-1), atol=1e-5, rtol=0)


class FakeDetector(torch.nn.Module):
    """Returns fixed per-level scores (0 = no box assigned)."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = torch.tensor(scores)

    def detect(self, images: Tensor) -> list:
        from spinelandmarks.models.detector import LevelDetections

        present = self.scores > 0
        names = ("L1", "L2", "L3", "L4", "L5", "S1")
        missing = [n for n, ok in zip(names, present.tolist(), strict=True) if not ok]
        return [LevelDetections(torch.zeros(6, 4), self.scores.clone(), present, missing, names)
                for _ in range(images.shape[0])]


@pytest.mark.parametrize(("scores", "missing"), [
    ([0.15, 0.9, 0.9, 0.9, 0.9, 0.9], []),               # weak L1 next to L2: kept
    ([0.05, 0.9, 0.9, 0.9, 0.9, 0.9], ["L1"]),           # too weak: missing
    ([0.9, 0.0, 0.9, 0.9, 0.9, 0.9], []),                # L2 between L1 and L3: kept
    ([0.9, 0.9, 0.9, 0.9, 0.0, 0.0], ["L5", "S1"]),      # caudal end cut off
])
def test_detector_levels_are_confirmed_along_the_spine(pipe: SpineLandmarkPipeline,
                                                       phantom: tuple, scores: list[float],
                                                       missing: list[str]) -> None:
    image, _ = phantom
    p = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, FakeDetector(scores))
    res = p.predict(image)[0]
    assert res.missing_levels == missing
    for lv in p.schema.level_names:
        finite = np.isfinite(res.points[p.schema.level_indices(lv)]).all()
        assert finite == (lv not in missing)


def test_calibrate_qc_chooses_how_levels_are_declared_present(phantom: tuple) -> None:
    image, _ = phantom
    lm = FixedSpine(backbone="resnet_lite", input_size=(128, 96))
    truth = SpineLandmarkPipeline(lm).predict(image)[0].points  # right by construction
    # the detector misses L1, which every validation image shows: every level is predicted
    p = SpineLandmarkPipeline(lm, detector=FakeDetector([0.0, 0.9, 0.9, 0.9, 0.9, 0.9]))
    assert p.predict(image)[0].missing_levels == ["L1"]
    p.calibrate_qc([image] * 2, [truth] * 2)
    assert not p.options.detector_presence and p.predict(image)[0].missing_levels == []
    # ... where the validation images do not show L1, the detector keeps deciding
    cut = truth.copy()
    cut[p.schema.level_indices("L1")] = np.nan
    p = SpineLandmarkPipeline(lm, detector=FakeDetector([0.0, 0.9, 0.9, 0.9, 0.9, 0.9]))
    p.calibrate_qc([image] * 2, [cut] * 2)
    assert p.options.detector_presence and p.predict(image)[0].missing_levels == ["L1"]
    assert PipelineOptions.from_dict(p.options.to_dict()) == p.options  # saved as chosen


def test_save_load_and_checkpoint_round_trip(pipe: SpineLandmarkPipeline, phantom: tuple,
                                             tmp_path: Path) -> None:
    image, _ = phantom
    ref = pipe.predict(image)[0]
    loaded = SpineLandmarkPipeline.load(pipe.save(tmp_path / "p"))
    np.testing.assert_array_equal(loaded.predict(image)[0].points, ref.points)
    assert loaded.options == pipe.options
    assert loaded.options.tta and loaded.options.min_adjacent_score == 0.1
    opts = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, tta=False,
                                 min_level_score=0.4, min_adjacent_score=0.2)
    reloaded = SpineLandmarkPipeline.load(opts.save(tmp_path / "opts"))
    assert reloaded.options == dataclasses.replace(PipelineOptions(), tta=False, masks=False,
                                                   crop_scale=1.6,
                                                   min_level_score=0.4, min_adjacent_score=0.2)
    # A Lightning checkpoint loads weights-only into the same module.
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(pipe.landmark_model)
    ckpt = tmp_path / "lm.ckpt"
    trainer.save_checkpoint(ckpt)
    lm = load_module(ckpt)
    assert isinstance(lm, LandmarkModel)
    again = SpineLandmarkPipeline(lm, pipe.refiner).predict(image)[0]  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.points, ref.points)
    with pytest.raises(ValueError, match="cannot load"):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"junk")
        load_module(bad)
    save_module(pipe.refiner, tmp_path / "r.pt")  # type: ignore[arg-type]
    assert isinstance(load_module(tmp_path / "r.pt"), CropRefiner)


def test_bf16_inference_close_to_fp32(phantom: tuple) -> None:
    image, _ = phantom
    # Untrained heads give flat heatmaps, whose expectation is the map's centre at any
    # precision. Scaled logits give peaked maps that move with the image, so the points
    # depend on what the bf16 networks compute.
    torch.manual_seed(0)
    lm = LandmarkModel(backbone="resnet_lite", input_size=(128, 96))
    ref = CropRefiner(backbone="resnet_lite", input_size=(48, 48))
    with torch.no_grad():
        for net in (lm, ref):
            net.head.conv.weight.mul_(30.0)
            net.head.conv.bias.mul_(30.0)
    sharp = SpineLandmarkPipeline(lm, ref)
    fp32 = sharp.predict(image)[0]
    bf16 = sharp.predict(image, precision="bf16-mixed")[0]
    assert np.isfinite(bf16.points).all()
    assert np.abs(fp32.points - fp32.points.mean(0)).std() > 1.0  # not all at one centre
    step1 = np.abs(bf16.points_step1 - fp32.points_step1).max()
    step2 = np.abs(bf16.points - fp32.points).max()
    assert 0.0 < step1 < 1.0 and 0.0 < step2 < 0.25  # bf16 ran (differs), within 1/4 px
    with pytest.raises(ValueError, match="precision"):
        sharp.predict(image, precision="fp8")


def test_torchscript_export_gives_same_coordinates(pipe: SpineLandmarkPipeline,
                                                   tmp_path: Path) -> None:
    for model in (pipe.landmark_model, pipe.refiner):
        assert model is not None
        path = model.export(tmp_path / "m.pt")
        loaded = torch.jit.load(str(path))
        size = model.hparams["input_size"]
        x = torch.rand(3, 1, *size)
        with torch.no_grad():
            coords, heatmaps = model(x)
            got, got_hm = loaded(x)
        torch.testing.assert_close(got, coords)
        torch.testing.assert_close(got_hm, heatmaps)
    with pytest.raises(ValueError, match="unknown export format"):
        pipe.landmark_model.export(tmp_path / "m.x", fmt="tflite")


@pytest.mark.slow  # the dynamo ONNX exporter takes ~10 s per network
def test_onnx_export_runs_in_onnxruntime(pipe: SpineLandmarkPipeline, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    for model in (pipe.landmark_model, pipe.refiner):
        assert model is not None
        path = model.export(tmp_path / "m.onnx", fmt="onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(3, 1, *model.hparams["input_size"])  # batch 3, exported with batch 1
        with torch.no_grad():
            coords, heatmaps = model(x)
        got, got_hm = session.run(["coords", "heatmaps"], {"images": x.numpy()})
        np.testing.assert_allclose(got, coords.numpy(), atol=1e-5)
        np.testing.assert_allclose(got_hm, heatmaps.numpy(), atol=1e-6)


def test_channels_last_gives_same_points(pipe: SpineLandmarkPipeline, phantom: tuple) -> None:
    image, _ = phantom
    ref = pipe.predict(image)[0]
    cl = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, channels_last=True)
    try:
        np.testing.assert_allclose(cl.predict(image)[0].points, ref.points, atol=1e-3)
    finally:
        for net in (pipe.landmark_model, pipe.refiner):
            assert net is not None
            net.to(memory_format=torch.contiguous_format)


class BoxDetector(torch.nn.Module):
    """Fixed boxes (input pixels) for every level, all confirmed."""

    def __init__(self, boxes: Tensor) -> None:
        super().__init__()
        self.boxes = boxes

    def detect(self, images: Tensor) -> list:
        from spinelandmarks.models.detector import LevelDetections

        names = ("L1", "L2", "L3", "L4", "L5", "S1")
        return [LevelDetections(self.boxes.clone(), torch.full((6,), 0.9),
                                torch.ones(6, dtype=torch.bool), [], names)
                for _ in range(images.shape[0])]


def test_the_chain_names_the_levels_and_qc_reports_the_detector(phantom: tuple) -> None:
    from spinelandmarks.anatomy.vertebrae import level_centres

    image, _ = phantom
    lm = FixedSpine(backbone="resnet_lite", input_size=(128, 96))
    chain = lm.predict_points(torch.zeros(1, 1, 128, 96))[0]
    centres = level_centres(chain.double())[0].float()
    # the detector sees every body one level lower than the chain: L1's box on the chain's
    # L2, ..., L4's on L5; L5's box one spacing below the chain's L5 (no step-1 level there)
    step = centres[4] - centres[3]
    det_c = torch.cat([centres[1:5], (centres[4] + step)[None], (centres[4] + 2 * step)[None]])
    boxes = torch.cat([det_c - 7.0, det_c + 7.0], dim=1)
    p = SpineLandmarkPipeline(lm, detector=BoxDetector(boxes))
    res = p.predict(image)[0]
    assert res.relabelled_levels == []  # the step-1 chain stands
    np.testing.assert_allclose(res.points, res.points_step1)  # no refiner: step 1 is final
    assert "detector_disagrees" in res.qc and res.needs_review
    record = res.to_record(p.schema)
    assert record.meta["needs_review"] and record.meta["qc"] == res.qc


def test_overlay_circles_flagged_levels_only(pipe: SpineLandmarkPipeline, phantom: tuple) -> None:
    import dataclasses

    from spinelandmarks.data.io import Radiograph
    from spinelandmarks.predict import draw_overlay

    image, rec = phantom
    # the untrained pipeline puts every point on one spot: draw the true corners instead
    res = dataclasses.replace(pipe.predict(image)[0], points=rec.points.astype(np.float64))
    rad = Radiograph(pixels=image, pixel_spacing=None, source="phantom")
    clean = dataclasses.replace(res, qc={}, needs_review=False)
    # image flags name parameters, not levels: they are written, not circled
    image_flags = dataclasses.replace(res, needs_review=True,
                                      qc={"steps_disagree": ["l1_l5_lordosis"],
                                          "angle_range": ["sacral_slope"]})
    level_flag = dataclasses.replace(res, needs_review=True, qc={"overlap": ["L3"]})
    base = draw_overlay(rad, clean, pipe)
    texts = draw_overlay(rad, image_flags, pipe)
    circled = draw_overlay(rad, level_flag, pipe)
    red = np.array([255, 0, 0])
    assert not (base == red).all(-1).any()
    assert not (texts == red).all(-1).any()  # the NEEDS REVIEW text is (255, 64, 64)
    assert (circled == red).all(-1).sum() > 50


def test_qc_thresholds_are_used_saved_and_calibrated(pipe: SpineLandmarkPipeline,
                                                     phantom: tuple, tmp_path: Path) -> None:
    import dataclasses

    from spinelandmarks.qc import QCThresholds

    image, rec = phantom
    assert "low_confidence" in pipe.predict(image)[0].qc  # untrained: wide heatmaps
    loose = QCThresholds(max_spread_frac=1e9, min_detector_score=0.0)
    p = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, qc_thresholds=loose)
    assert "low_confidence" not in p.predict(image)[0].qc
    loaded = SpineLandmarkPipeline.load(p.save(tmp_path / "pipe"))
    assert loaded.options.qc_thresholds == loose
    assert isinstance(loaded.options.qc_thresholds.aspect_range, tuple)
    # an untrained pipeline identifies no level: nothing to fit, the thresholds stay
    before = dataclasses.replace(pipe.options.qc_thresholds)
    assert pipe.calibrate_qc([image] * 2, [rec.points] * 2) == before
    with pytest.raises(ValueError, match="2 inputs but 1 ground truths"):
        pipe.calibrate_qc([image] * 2, [rec.points])


def test_calibrate_qc_fits_the_spread_of_correct_levels(phantom: tuple) -> None:
    from spinelandmarks.qc import QCThresholds, qc_statistics

    image, _ = phantom
    lm = FixedSpine(backbone="resnet_lite", input_size=(128, 96))
    p = SpineLandmarkPipeline(lm, qc_thresholds=QCThresholds(max_spread_frac=0.01))
    res = p.predict(image)[0]
    assert "low_confidence" in res.qc
    truth = res.points.copy()  # the fixed spine is right by construction
    spread = qc_statistics(*(torch.from_numpy(a)[None] for a in
                             (res.points, res.points_step1, res.point_scores)),
                           p.schema)["spread_frac"]
    th = p.calibrate_qc([image] * 4, [truth] * 4)  # 4 images x 6 levels >= 20 samples
    assert th.max_spread_frac == pytest.approx(1.25 * float(spread.max()), rel=1e-6)
    assert p.options.qc_thresholds == th
    assert "low_confidence" not in p.predict(image)[0].qc


def test_unusable_inputs_raise_alone_and_are_reported_per_item_in_a_list(
        pipe: SpineLandmarkPipeline, phantom: tuple, tmp_path: Path) -> None:
    image, _ = phantom
    bad = {"too small": np.zeros((0, 0), np.float32),
           "NaN or infinite": np.full((64, 64), np.nan, np.float32),
           "10 x 12 pixels is too small": np.zeros((12, 10), np.float32),
           "no such image file": str(tmp_path / "missing.png")}
    for message, x in bad.items():
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            pipe.predict(x)
    results = pipe.predict([bad["too small"], image, bad["NaN or infinite"],
                            bad["no such image file"], image])
    assert [r.error is None for r in results] == [False, True, False, False, True]
    assert "too small" in results[0].error and results[0].source == "<ndarray 0x0>"
    assert "missing.png" in results[3].error and results[3].source.endswith("missing.png")
    np.testing.assert_array_equal(results[1].points, results[4].points)
    assert results[2].needs_review and results[2].missing_levels == list(pipe.schema.level_names)
    assert np.isnan(results[2].points).all()


def test_predict_iter_is_lazy_and_matches_predict(pipe: SpineLandmarkPipeline,
                                                  phantom: tuple) -> None:
    image, _ = phantom
    consumed: list[int] = []

    def inputs():  # a generator: the pipeline may only read a batch ahead
        for i in range(5):
            consumed.append(i)
            yield image if i != 2 else np.zeros((4, 4), np.float32)

    it = pipe.predict_iter(inputs(), batch_size=2)
    first = next(it)
    assert consumed == [0, 1]  # one batch read, not the whole list
    rest = list(it)
    assert consumed == [0, 1, 2, 3, 4] and len(rest) == 4
    assert rest[1].error is not None and "too small" in rest[1].error
    whole = pipe.predict([image] * 2, batch_size=2)
    # the same images give the same points; a batch of 1 and a batch of 2 may round
    # differently in the last float32 bits (CPU kernels pick their blocking by batch size)
    np.testing.assert_allclose(first.points, whole[0].points, rtol=0, atol=1e-3)
    np.testing.assert_allclose(rest[2].points, whole[1].points, rtol=0, atol=1e-3)


def test_overlay_marks_graded_fractures_and_spinopelvic_angles(
        pipe: SpineLandmarkPipeline) -> None:
    import dataclasses

    from spinelandmarks.data.io import Radiograph
    from spinelandmarks.overlay import _mark_fractures, _spinopelvic_lines, draw_overlay
    from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as P

    cfg = PhantomConfig(long_side=256, p_fracture=1.0, fov_height_mm=(470, 490))
    image, rec = generate_phantom(0, cfg, schema=P)  # L5: wedge fracture, grade 2
    meta = rec.meta["synthetic"]
    lines = _spinopelvic_lines(rec.points, P)
    pt = float(lines[0].split("PT ")[1].split()[0])
    assert pt == pytest.approx(meta["pelvic_tilt_deg"], abs=3.0)  # heads vs designed hip axis
    assert "SS " in lines[0] and "LL " in lines[0]

    from PIL import Image, ImageDraw
    canvas = Image.new("RGB", image.shape[::-1])
    found = _mark_fractures(ImageDraw.Draw(canvas), rec.points, rec.points, P, 1)
    assert [f.split()[0] for f in found] == list(meta["fractures"])
    assert (np.asarray(canvas) == [255, 160, 0]).all(-1).sum() > 20
    res = dataclasses.replace(pipe.predict(image)[0], points=rec.points[:22].astype(np.float64))
    rgb = draw_overlay(Radiograph(pixels=image, pixel_spacing=None, source="p"), res, pipe)
    assert (rgb == [255, 160, 0]).all(-1).sum() > 20  # the lumbar schema marks fractures too
    from spinelandmarks.overlay import _text_lines
    listed = dataclasses.replace(res, suspected_fractures=["L5"])
    assert "suspected fracture (screen): L5" in _text_lines(listed, pipe.schema, [])
    none = dataclasses.replace(res, suspected_fractures=[])
    assert not any("suspected" in t for t in _text_lines(none, pipe.schema, []))


class CentreMaskRefiner(CropRefiner):
    """Predicts the crop centre for every point and a body mask on the crop's middle half."""

    def predict_points_and_masks(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, _, h, w = images.shape
        pts = torch.tensor([w / 2, h / 2]).expand(b, self.num_outputs, 2).clone()
        probs = torch.zeros(b, 1, h, w)
        probs[:, :, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        return pts, torch.ones(b, self.num_outputs), probs


def test_pipeline_masks_are_pasted_back_around_their_level(phantom: tuple) -> None:
    from spinelandmarks.data.masks import mask_from_segmentation

    image, _ = phantom
    lm = FixedSpine(backbone="resnet_lite", input_size=(128, 96))  # a known straight spine
    ref = CentreMaskRefiner(backbone="resnet_lite", input_size=(48, 48), masks=True)
    pipe = SpineLandmarkPipeline(lm, ref, tta=False, facing_check=False)
    assert pipe.options.masks
    res = pipe.predict(image)[0]
    assert sorted(res.masks) == sorted(pipe.schema.body_levels)  # bodies, not S1
    for lv in pipe.schema.body_levels:
        m = mask_from_segmentation(res.masks[lv], *image.shape)
        ys, xs = np.nonzero(m)
        pts = res.points[pipe.schema.level_indices(lv)]
        centre = pts.mean(0)  # every point is the crop centre: the mask is centred on it
        assert abs(xs.mean() + 0.5 - centre[0]) < 1.0 and abs(ys.mean() + 0.5 - centre[1]) < 1.0
    assert res.to_record(pipe.schema).masks == res.masks
    from spinelandmarks.data.io import Radiograph
    from spinelandmarks.overlay import draw_overlay
    rgb = draw_overlay(Radiograph(pixels=image, pixel_spacing=None, source="p"), res, pipe)
    assert (rgb == [0, 220, 255]).all(-1).sum() > 100  # the outlines, cyan
    assert not SpineLandmarkPipeline(lm, ref, masks=False).predict(image)[0].masks
    with pytest.raises(ValueError, match="masks=True needs a refiner"):
        SpineLandmarkPipeline(lm, CropRefiner(backbone="resnet_lite", input_size=(48, 48)),
                              masks=True)


@pytest.mark.slow
def test_refiner_overfits_body_masks(tmp_path: Path) -> None:
    from spinelandmarks.data.batch import collate
    from spinelandmarks.data.datasets import CropDataset
    from spinelandmarks.evaluation.masks import dice
    from spinelandmarks.phantoms import generate_dataset

    root = generate_dataset(tmp_path / "d", 2, seed=4, config=PhantomConfig(long_side=256))
    from spinelandmarks.data.annotations import read_coco
    recs = read_coco(root / "annotations.json")
    ds = CropDataset(recs, root, pipe_schema(), crop_size=(48, 48), masks=True)
    samples = [ds[i] for i in range(len(ds))]
    batch = collate(samples)
    assert batch.body_masks is not None and batch.has_masks is not None
    assert batch.has_masks.sum() == 10  # L1-L5 of both images have masks, S1 none
    torch.manual_seed(0)
    ref = CropRefiner(backbone="resnet_lite", input_size=(48, 48), masks=True)
    opt = torch.optim.Adam(ref.parameters(), lr=5e-3)
    ref.train()
    for _ in range(35):
        opt.zero_grad()
        loss, _, _ = ref.compute_loss(batch)
        loss.backward()
        opt.step()
    ref.eval()
    _, _, probs = ref.predict_points_and_masks(batch.images)
    keep = batch.has_masks
    scores = [dice(p[0].numpy() > 0.5, t[0].numpy() > 0.5)
              for p, t in zip(probs[keep], batch.body_masks[keep], strict=True)]
    assert min(scores) > 0.85, scores


def pipe_schema():  # the default schema of the models
    from spinelandmarks.schema import LUMBAR_SAGITTAL
    return LUMBAR_SAGITTAL


def test_femoral_heads_keep_step1_points_and_are_not_cropped(phantom: tuple,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from spinelandmarks.inference import TTA_VIEWS
    from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as LP
    torch.manual_seed(0)
    pipe = SpineLandmarkPipeline(
        LandmarkModel(backbone="resnet_lite", input_size=(128, 96), schema=LP.to_dict()),
        CropRefiner(backbone="resnet_lite", input_size=(48, 48), schema=LP.to_dict()),
        column_repair=False, recrop=False)
    seen: list[int] = []
    original = pipe.refiner.predict_points

    def counting(crops: Tensor) -> tuple[Tensor, Tensor]:
        seen.append(crops.shape[0])
        return original(crops)
    monkeypatch.setattr(pipe.refiner, "predict_points", counting)
    image, _ = phantom
    res = pipe.predict(image)[0]
    fh = LP.level_indices("FH")
    np.testing.assert_array_equal(res.points[fh], res.points_step1[fh])
    assert seen == [(LP.num_levels - 1) * len(TTA_VIEWS)]  # every level but FH, each view


def test_options_are_validated_and_set_only_as_a_whole(pipe: SpineLandmarkPipeline) -> None:
    with pytest.raises(ValueError, match="crop_scale must be > 0"):
        PipelineOptions(crop_scale=0.0)
    with pytest.raises(ValueError, match="min_adjacent_score must be in"):
        PipelineOptions(min_level_score=0.2, min_adjacent_score=0.3)
    with pytest.raises(ValueError, match="fracture_screen_loss must be a finite number"):
        SpineLandmarkPipeline(pipe.landmark_model, fracture_screen_loss=float("nan"))
    assert type(PipelineOptions(crop_scale=np.float32(1.5)).crop_scale) is float  # JSON-safe
    with pytest.raises(AttributeError, match=r"dataclasses.replace\(pipe.options, tta="):
        pipe.tta = False  # an unchecked attribute would silently do nothing
    with pytest.raises(AttributeError, match=r"pipe\.options\.tta"):
        pipe.tta  # noqa: B018
    with pytest.raises(ValueError, match="masks=True needs a refiner trained with masks"):
        pipe.options = dataclasses.replace(pipe.options, masks=True)
    with pytest.raises(TypeError, match="options= or option keywords, not both"):
        SpineLandmarkPipeline(pipe.landmark_model, options=PipelineOptions(), tta=False)


def test_removed_options_are_refused_when_given_and_ignored_with_a_warning_when_loaded(
        pipe: SpineLandmarkPipeline, phantom: tuple, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"middle_peak_radius: removed in spinelandmarks 0\.2"):
        SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, middle_peak_radius=2.0)
    with pytest.raises(TypeError, match="level_rule: removed"):
        SpineLandmarkPipeline(pipe.landmark_model, level_rule="detector")
    saved = pipe.save(tmp_path / "p")
    config = json.loads((saved / "pipeline.json").read_text())
    # a file of 0.1 wrote every option at the top level, the removed ones at their defaults
    old = {**config, "refine_iterations": 1, "middle_peak_radius": None,
           "level_rule": "landmarks", "version": "0.1.0"}
    (saved / "pipeline.json").write_text(json.dumps(old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults: no warning
        assert SpineLandmarkPipeline.load(saved).options == pipe.options
    (saved / "pipeline.json").write_text(json.dumps({**old, "refine_iterations": 2,
                                                     "level_rule": "detector"}))
    with pytest.warns(UserWarning, match="refine_iterations=2 was removed") as caught:
        loaded = SpineLandmarkPipeline.load(saved)
    assert any("level_rule='detector'" in str(w.message) for w in caught)
    image, _ = phantom
    np.testing.assert_array_equal(loaded.predict(image)[0].points, pipe.predict(image)[0].points)
    (saved / "pipeline.json").write_text(json.dumps({**old, "crop_scale": -1}))
    with pytest.raises(ValueError, match=r"pipeline.json: crop_scale must be > 0"):
        SpineLandmarkPipeline.load(saved)


def test_the_refiner_carries_its_crop_scale_into_the_pipeline(tmp_path: Path) -> None:
    lm = LandmarkModel(backbone="resnet_lite", input_size=(128, 96))
    ref = CropRefiner(backbone="resnet_lite", input_size=(48, 48), crop_scale=1.4)
    pipe = SpineLandmarkPipeline(lm, ref)
    assert pipe.options.crop_scale == 1.4 and pipe.step_two().crop_scale == 1.4
    loaded = SpineLandmarkPipeline.load(pipe.save(tmp_path / "p"))
    assert loaded.refiner.crop_scale == 1.4 and loaded.options.crop_scale == 1.4
    assert SpineLandmarkPipeline(lm, ref, crop_scale=1.8).step_two().crop_scale == 1.8
    assert SpineLandmarkPipeline(lm).options.crop_scale == 1.6  # no refiner: the default
    with pytest.raises(ValueError, match="crop_scale must be > 0"):
        CropRefiner(backbone="resnet_lite", crop_scale=0.0)


def test_a_pipeline_saved_by_version_0_1_loads_and_predicts_the_same(tmp_path: Path) -> None:
    """The directory layout of 0.1.0 (its save, reproduced): network files without a class
    path, a refiner without ``crop_scale``, every option of 0.1 at the top of pipeline.json."""
    torch.manual_seed(0)
    lm = LandmarkModel(backbone="resnet_lite", input_size=(64, 48), decoder_channels=16)
    ref = CropRefiner(backbone="resnet_lite", input_size=(32, 32), decoder_channels=16)
    old = tmp_path / "v0_1"
    old.mkdir()
    for role, net in (("landmark", lm), ("refiner", ref)):
        hparams = {k: v for k, v in net.hparams.items() if k != "crop_scale"}
        torch.save({"class": type(net).__name__, "hyper_parameters": hparams,
                    "state_dict": net.state_dict(), "version": "0.1.0"}, old / f"{role}.pt")
    config = {"version": "0.1.0", "schema": lm.schema.to_dict(),
              "models": {"landmark": "landmark.pt", "refiner": "refiner.pt"},
              "crop_scale": 1.5, "refine_iterations": 1, "min_level_score": 0.4,
              "min_adjacent_score": 0.2, "level_rule": "landmarks", "facing_check": True,
              "column_repair": True, "recrop": True, "tta": False, "masks": False,
              "fracture_screen_loss": 0.25, "middle_peak_radius": None,
              "qc_thresholds": {"max_spread_frac": 0.5, "aspect_range": [0.7, 4.0]}}
    (old / "pipeline.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing removed was set: no warning
        loaded = SpineLandmarkPipeline.load(old)
    assert loaded.options.crop_scale == 1.5 and not loaded.options.tta
    assert loaded.options.qc_thresholds.max_spread_frac == 0.5
    assert loaded.options.qc_thresholds.aspect_range == (0.7, 4.0)
    assert loaded.refiner is not None and loaded.refiner.crop_scale == 1.6  # 0.1's default
    same = SpineLandmarkPipeline(lm, ref, tta=False, min_level_score=0.4,
                                 min_adjacent_score=0.2, crop_scale=1.5,
                                 qc_thresholds=loaded.options.qc_thresholds)
    image = np.random.default_rng(0).random((200, 160)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(image)[0].points, same.predict(image)[0].points)
