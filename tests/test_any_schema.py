"""Schemas without the lumbar endplates: the pipeline predicts and reports only what the
schema defines; point-landmark metrics (mean radial error, success detection rates)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spinelandmarks.anatomy.angles import defined_parameters, schema_parameters
from spinelandmarks.data.annotations import ImageRecord
from spinelandmarks.evaluation import evaluate
from spinelandmarks.evaluation.report import summary_table, write_report
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.measurement_table import measure_records, write_measurements_csv
from spinelandmarks.metrics import RadialError
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.predict import predict_files
from spinelandmarks.schema import LUMBAR_SAGITTAL, LUMBOPELVIC_SAGITTAL, LandmarkSchema

#: One centre point per level (examples/new_landmark_task.py).
CENTRES = LandmarkSchema.from_levels("lumbar_centres", LUMBAR_SAGITTAL.level_names,
                                     points=("centre",))
#: The cervical schema of docs/conventions.md: four corners of C2 .. C7.
CERVICAL = LandmarkSchema.from_levels("cervical_sagittal", ["C2", "C3", "C4", "C5", "C6", "C7"])
#: A cervicothoracic schema whose C7 has its inferior endplate only.
C7_INFERIOR = LandmarkSchema.from_levels(
    "c7_inferior", ["C7", "T1", "T2", "T3"],
    overrides={"C7": ("posterior_inferior", "anterior_inferior")})


def test_schema_parameters_are_those_the_schema_defines() -> None:
    assert defined_parameters(CENTRES) == () and defined_parameters(CERVICAL) == ()
    assert defined_parameters(LUMBOPELVIC_SAGITTAL) == ("l1_l5_lordosis", "l1_s1_lordosis",
                                                        "sacral_slope")
    plate_only = LandmarkSchema.from_levels("s1", ["S1"], points=("anterior_superior",
                                                                   "posterior_superior"))
    assert defined_parameters(plate_only) == ("sacral_slope",)
    # the S1 plate of a patient facing right, anterior end 10 px lower over 10 px: 45 deg
    pts = torch.tensor([[[20.0, 30.0], [10.0, 20.0]]], dtype=torch.float64)
    got = schema_parameters(pts, plate_only)
    assert list(got) == ["sacral_slope"]
    assert float(got["sacral_slope"][0]) == pytest.approx(45.0)
    assert schema_parameters(torch.zeros(2, CERVICAL.num_points, 2), CERVICAL) == {}


@pytest.mark.parametrize("schema,refine", [(CENTRES, False), (CERVICAL, True),
                                           (C7_INFERIOR, True)])
def test_pipeline_without_lumbar_endplates_predicts(schema: LandmarkSchema, refine: bool
                                                    ) -> None:
    torch.manual_seed(0)
    lm = LandmarkModel(schema=schema, backbone="resnet_lite", input_size=(128, 96))
    refiner = (CropRefiner(schema=schema, backbone="resnet_lite", input_size=(48, 48))
               if refine else None)
    image = np.random.default_rng(1).random((200, 150)).astype(np.float32)
    for facing_check in (True, False):
        res = SpineLandmarkPipeline(lm, refiner, facing_check=facing_check).predict(image)[0]
        assert res.points.shape == (schema.num_points, 2) and np.isfinite(res.points).all()
        assert res.parameters == {} and res.parameters_step1 == {}
        assert "angle_range" not in res.qc and "steps_disagree" not in res.qc


def test_a_refiner_on_one_point_levels_is_refused() -> None:
    lm = LandmarkModel(schema=CENTRES, backbone="resnet_lite")
    refiner = CropRefiner(schema=CENTRES, backbone="resnet_lite")
    with pytest.raises(ValueError, match=r"levels \['L1', .*have one point.*refiner=None"):
        SpineLandmarkPipeline(lm, refiner)


def test_predict_files_writes_only_what_the_schema_defines(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = LandmarkModel(schema=CENTRES, backbone="resnet_lite", input_size=(128, 96))
    saved = SpineLandmarkPipeline(lm).save(tmp_path / "pipe")
    rng = np.random.default_rng(2)
    files = []
    for i in range(2):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray((rng.random((160, 120)) * 255).astype(np.uint8)).save(files[-1])
    failed = predict_files(saved, files, tmp_path / "out", accelerator="cpu", progress=False)
    assert failed == []
    with open(tmp_path / "out" / "measurements.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:2] == ["file_name", "missing_levels"]
    assert not any(c.endswith("lordosis_deg") or c in ("sacral_slope_deg", "facing")
                   for c in header)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert all(a.get("parameters", {}) == {} for a in predictions.get("images", []))
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 2


def test_measure_records_reports_only_defined_columns(tmp_path: Path) -> None:
    pts = np.arange(CERVICAL.num_points * 2, dtype=np.float64).reshape(-1, 2)
    rec = ImageRecord("a.png", 100, 200, pts, np.full(CERVICAL.num_points, 2, np.int8))
    row = measure_records([rec], CERVICAL)[0]
    assert "l1_s1_lordosis_deg" not in row and "sacral_slope_deg" not in row
    assert "facing" in row and "C2-C3_deg" in row  # the cervical endplates are measured
    path = write_measurements_csv([rec], CERVICAL, tmp_path / "m.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["file_name", "C2-C3_deg"] and "facing" in header


def _records(schema: LandmarkSchema, points: np.ndarray, spacing: tuple[float, float] | None
             ) -> list[ImageRecord]:
    return [ImageRecord(f"{i}.png", 100, 200, p, np.where(np.isfinite(p).all(-1), 2, 0)
                        .astype(np.int8), pixel_spacing=spacing)
            for i, p in enumerate(points)]


def test_radial_error_against_hand_computed_figures() -> None:
    two = LandmarkSchema.from_levels("two", ["A", "B"], points=("centre",))
    gt = torch.zeros(2, 2, 2, dtype=torch.float64)
    # image 0 (0.5 mm/px): errors 3-4-5 -> 5 px = 2.5 mm, and 6 px along x = 3 mm
    # image 1 (0.5 mm/px): errors 2 px = 1 mm, and point B missed (NaN)
    pred = torch.tensor([[[3.0, 4.0], [6.0, 0.0]], [[0.0, 2.0], [math.nan, math.nan]]],
                        dtype=torch.float64)
    spacing = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    m = RadialError(two)
    m.set_dtype(torch.float64)
    m.update(pred, gt, spacing)
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["unit_mm"] == 1.0 and out["n"] == 3 and out["n_labelled"] == 4
    assert out["mre"] == pytest.approx((2.5 + 3.0 + 1.0) / 3)
    assert out["sd"] == pytest.approx(float(np.std([2.5, 3.0, 1.0], ddof=1)))
    assert out["median"] == pytest.approx(2.5)
    # within 2 mm: 1 of 4 labelled (the missed point fails); 2.5: 2; 3 and 4: 3
    assert [out[f"sdr@{t}"] for t in (2.0, 2.5, 3.0, 4.0)] == [0.25, 0.5, 0.75, 0.75]
    assert out["detection_rate"] == 0.75
    assert out["A_centre/mre"] == pytest.approx(1.75) and out["A_centre/sdr@2.0"] == 0.5
    assert out["B_centre/mre"] == pytest.approx(3.0) and out["B_centre/sdr@4.0"] == 0.5
    # one image of unknown spacing: every figure in pixels (5, 6, 2 px)
    m = RadialError(two)
    m.set_dtype(torch.float64)
    m.update(pred, gt, torch.tensor([[0.5, 0.5], [math.nan, math.nan]]))
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["unit_mm"] == 0.0 and out["mre"] == pytest.approx(13 / 3)
    assert [out[f"sdr@{t}"] for t in (2.0, 2.5, 3.0, 4.0)] == [0.25, 0.25, 0.25, 0.25]


def test_evaluate_a_schema_without_bodies_gives_finite_headlines(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gt = rng.uniform(20, 180, size=(4, CENTRES.num_points, 2))
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    metrics = evaluate(_records(CENTRES, pred, (0.5, 0.5)),
                       _records(CENTRES, gt, (0.5, 0.5)), CENTRES)
    comparison = metrics["comparison"]
    assert list(comparison) == ["mre", "sdr_2.0", "sdr_2.5", "sdr_3.0", "sdr_4.0"]
    assert comparison["mre"]["label"] == "Mean radial error (mm)"
    assert comparison["mre"]["ours_step2"] == pytest.approx(2.5)
    assert [comparison[f"sdr_{t}"]["ours_step2"] for t in (2.0, 2.5, 3.0, 4.0)] == [
        0.0, 100.0, 100.0, 100.0]
    assert all(math.isfinite(c["ours_step2"]) for c in comparison.values())
    assert all(math.isfinite(t["ours_step2"]) for k, t in metrics["tails"].items()
               if k != "p95_mm" and k != "outliers_5mm")
    assert not any("nle" in k for k in metrics["tails"])
    assert metrics["step2"]["radial"]["unit"] == "mm"
    assert metrics["step2"]["angles"] == {}
    assert "fractures" not in metrics["clinical"]
    report = write_report(metrics, tmp_path / "report", pred_records=_records(
        CENTRES, pred, (0.5, 0.5)), gt_records=_records(CENTRES, gt, (0.5, 0.5)),
        schema=CENTRES).read_text()
    assert "| all | 2.50 | 0.00 | 2.50 | 0.0 % | 100.0 % | 100.0 % | 100.0 % |" in report
    assert "| L1_centre | 2.50 |" in report and "nan" not in report.lower()
    assert "Mean radial error (mm)" in summary_table(metrics)
    # lumbar schema: the normalized errors and the three angles as before
    lumbar = evaluate(_records(LUMBAR_SAGITTAL, rng.uniform(20, 180, (2, 22, 2)), None),
                      _records(LUMBAR_SAGITTAL, rng.uniform(20, 180, (2, 22, 2)), None),
                      LUMBAR_SAGITTAL)
    assert list(lumbar["comparison"])[:2] == ["median_nle_x_pct", "median_nle_y_pct"]
    assert "sacral_slope_median_abs_deg" in lumbar["comparison"]
