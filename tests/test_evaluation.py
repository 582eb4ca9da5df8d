"""Tests of spinelandmarks.evaluation on hand-built spines with known angles and offsets."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spines import spine_points

from spinelandmarks.data.annotations import ImageRecord
from spinelandmarks.evaluation import REFERENCE, evaluate, metrics_to_json
from spinelandmarks.evaluation.report import write_report
from spinelandmarks.measurement_table import measure_records, write_measurements_csv
from spinelandmarks.schema import LUMBAR_SAGITTAL, LandmarkSchema, Level

S = LUMBAR_SAGITTAL
IMG_W, IMG_H = 512, 512  # the spines are drawn in a 512-px-wide image
TILTS = (-12.0, -6.0, 0.0, 6.0, 12.0)


# ---------------------------------------------------------------------------------------------
# hand-built spines
# ---------------------------------------------------------------------------------------------
def record(name: str, pts: np.ndarray, spacing: tuple[float, float] | None = None
           ) -> ImageRecord:
    vis = np.where(np.isfinite(pts).all(axis=1), 2, 0).astype(np.int8)
    return ImageRecord(name, IMG_W, IMG_H, pts.copy(), vis, pixel_spacing=spacing)


def drop_level(rec: ImageRecord, level: str) -> ImageRecord:
    pts = rec.points.copy()
    pts[S.level_indices(level)] = np.nan
    return record(rec.file_name, pts, rec.pixel_spacing)


def shifted(recs: Sequence[ImageRecord], dx: float = 0.0, dy: float = 0.0) -> list[ImageRecord]:
    return [record(r.file_name, r.points + np.array([dx, dy]), r.pixel_spacing) for r in recs]


def gt_set(n: int = 4, spacing: tuple[float, float] | None = (0.5, 0.5)) -> list[ImageRecord]:
    """``n`` spines with different angles (so Pearson r is defined)."""
    out = []
    for k in range(n):
        tilts = [t + 2.0 * k * (i - 2) for i, t in enumerate(TILTS)]
        out.append(record(f"img{k}.png", spine_points(tilts, 35.0 + 3.0 * k,
                                                      face=1 if k % 2 == 0 else -1), spacing))
    return out


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------
def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_measure_csv_columns_and_known_angles(tmp_path: Path) -> None:
    full = record("a.png", spine_points(s1_tilt=40.0))
    left = record("b.png", spine_points(s1_tilt=40.0, face=-1))
    no_l1 = drop_level(record("c.png", spine_points(s1_tilt=30.0)), "L1")
    out = write_measurements_csv([full, left, no_l1], S, tmp_path / "sub" / "m.csv")
    assert out == tmp_path / "sub" / "m.csv"
    cols, rows = read_rows(out)
    assert cols[:4] == ["file_name", "l1_l5_lordosis_deg", "l1_s1_lordosis_deg",
                        "sacral_slope_deg"]
    assert [f"{a}-{b}_deg" for a, b in (("L1", "L2"), ("L4", "L5"), ("L5", "S1"))] == \
        [c for c in cols if c in ("L1-L2_deg", "L4-L5_deg", "L5-S1_deg")]
    assert "facing" in cols
    a, b, c = rows
    assert a["file_name"] == "a.png"
    # L1-L5 = tilt(L5 inf) - tilt(L1 sup) = 12 - (-12); L1-S1 = 40 - (-12); SS = 40
    assert float(a["l1_l5_lordosis_deg"]) == pytest.approx(24.0, abs=1e-3)
    assert float(a["l1_s1_lordosis_deg"]) == pytest.approx(52.0, abs=1e-3)
    assert float(a["sacral_slope_deg"]) == pytest.approx(40.0, abs=1e-3)
    assert float(a["L1-L2_deg"]) == pytest.approx(6.0, abs=1e-3)
    assert float(a["L5-S1_deg"]) == pytest.approx(28.0, abs=1e-3)
    assert a["facing"] == "1" and b["facing"] == "-1"
    for col in cols[1:4]:
        assert float(b[col]) == pytest.approx(float(a[col]), abs=1e-3)
    # L1 absent: lordosis cells empty (not 0, not "nan"), sacral slope still measured
    assert c["l1_l5_lordosis_deg"] == "" and c["l1_s1_lordosis_deg"] == ""
    assert c["L1-L2_deg"] == ""
    assert float(c["sacral_slope_deg"]) == pytest.approx(30.0, abs=1e-3)
    assert c["missing_levels"] == "L1"
    assert not list(tmp_path.glob("sub/.*tmp"))  # no temp file left behind


def test_measure_records_values_and_other_schema() -> None:
    rows = measure_records([record("a.png", spine_points())], S)
    assert list(rows[0])[:4] == ["file_name", "l1_l5_lordosis_deg", "l1_s1_lordosis_deg",
                                 "sacral_slope_deg"]
    assert rows[0]["l1_l5_lordosis_deg"] == pytest.approx(24.0)
    empty = measure_records([ImageRecord.empty(S, "e.png", 10, 10)], S)[0]
    assert math.isnan(empty["sacral_slope_deg"]) and math.isnan(empty["facing"])
    # a schema without L1/L5/S1 endplates reports only what it defines: no lumbar columns
    two = LandmarkSchema("two", (Level("A", ("anterior_superior", "posterior_superior")),
                                 Level("B", ("anterior_superior", "posterior_superior"))))
    pts = np.array([[10.0, 0.0], [0.0, 0.0], [10.0, 15.0], [0.0, 10.0]])
    r = measure_records([ImageRecord("t.png", 20, 20, pts, np.full(4, 2, np.int8))], two)[0]
    assert "l1_l5_lordosis_deg" not in r and "sacral_slope_deg" not in r
    assert list(r)[:3] == ["file_name", "A-B_deg", "facing"]
    assert r["A-B_deg"] == pytest.approx(math.degrees(math.atan2(5.0, 10.0)))


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def test_perfect_prediction() -> None:
    gts = gt_set(4)
    m = evaluate(shifted(gts), gts, S)
    s2 = m["step2"]
    loc = s2["localization"]
    for k in ("median_x", "median_y", "mean_x", "mean_y"):
        assert loc[k] == pytest.approx(0.0, abs=1e-9)
    assert loc["detection_rate"] == 1.0 and loc["n"] == 4 * 22
    assert s2["euclidean"]["median_px"] == pytest.approx(0.0, abs=1e-9)
    assert s2["sdr"]["sdr@2.0mm"] == 1.0
    assert s2["detection"]["level_detection_rate"] == 1.0
    for lv in S.level_names:
        assert s2["per_level"][lv]["level_detection_rate"] == 1.0
    for a in s2["angles"].values():
        assert a["median_abs"] == pytest.approx(0.0, abs=1e-9)
        assert a["pearson_r"] == pytest.approx(1.0)
        assert a["bias"] == pytest.approx(0.0, abs=1e-9)
        assert a["n"] == 4 and a["missed"] == 0
    assert m["n_images"] == 4 and m["n_predicted"] == 4 and m["missing_images"] == []
    assert m["step1"] is None
    assert m["reference"]["study"] == "Cina et al. 2021"
    assert m["reference"]["n_images_evaluated"] == 4
    assert m["comparison"]["median_nle_x_pct"]["better_than_reference"] is True
    json.loads(metrics_to_json(m))  # strict JSON


def test_known_offset() -> None:
    gts = gt_set(3, spacing=(0.5, 0.5))
    m = evaluate(shifted(gts, dx=2.0), gts, S)
    s2 = m["step2"]
    # 2 px on a 40 px wide body = 5 %; S1 (36 px endplate) = 5.56 %
    for lv in ("L1", "L2", "L3", "L4", "L5"):
        assert s2["per_level"][lv]["median_x"] == pytest.approx(5.0)
        assert s2["per_level"][lv]["median_y"] == pytest.approx(0.0, abs=1e-9)
    assert s2["per_level"]["S1"]["median_x"] == pytest.approx(100 * 2 / 36)
    assert s2["localization"]["median_x"] == pytest.approx(5.0)
    assert s2["localization"]["median_y"] == pytest.approx(0.0, abs=1e-9)
    assert s2["euclidean"]["median_px"] == pytest.approx(2.0)
    assert s2["euclidean"]["median_mm"] == pytest.approx(1.0)
    # a translation leaves every angle unchanged
    assert s2["angles"]["sacral_slope"]["median_abs"] == pytest.approx(0.0, abs=1e-9)

    m = evaluate(shifted(gts, dx=5.0), gts, S)  # 2.5 mm
    sdr = m["step2"]["sdr"]
    assert sdr["sdr@2.0mm"] == 0.0 and sdr["sdr@3.0mm"] == 1.0 and sdr["sdr@4.0mm"] == 1.0
    assert sdr["n"] == 3 * 22
    # no pixel spacing: mm figures and SDR are NaN, px figures still there
    gts = gt_set(2, spacing=None)
    s2 = evaluate(shifted(gts, dx=2.0), gts, S)["step2"]
    assert math.isnan(s2["euclidean"]["median_mm"]) and math.isnan(s2["sdr"]["sdr@2.0mm"])
    assert s2["euclidean"]["median_px"] == pytest.approx(2.0)


def test_missing_level_and_image_are_missed() -> None:
    gts = gt_set(4)
    preds = shifted(gts)
    preds[0] = drop_level(preds[0], "L3")
    preds[1] = drop_level(preds[1], "L1")
    del preds[3]  # no prediction at all for img3
    m = evaluate(preds, gts, S)
    s2 = m["step2"]
    assert m["missing_images"] == ["img3.png"] and m["n_predicted"] == 3
    assert s2["detection"]["images_without_prediction"] == 1
    l3 = s2["per_level"]["L3"]
    assert l3["levels_labelled"] == 4 and l3["levels_missed"] == 2  # img0 and img3
    assert l3["level_detection_rate"] == pytest.approx(0.5)
    assert l3["detection_rate"] == pytest.approx(0.5)
    assert s2["per_level"]["L1"]["level_detection_rate"] == pytest.approx(0.5)
    assert s2["per_level"]["L2"]["level_detection_rate"] == pytest.approx(0.75)
    n_lab = 4 * 22
    n_missed_pts = 4 + 4 + 22
    assert s2["localization"]["n_labelled"] == n_lab
    assert s2["localization"]["detection_rate"] == pytest.approx((n_lab - n_missed_pts) / n_lab)
    assert s2["localization"]["n"] == n_lab - n_missed_pts
    assert s2["detection"]["levels_missed"] == 1 + 1 + 6
    # found points still have zero error: misses are not errors
    assert s2["localization"]["median_x"] == pytest.approx(0.0, abs=1e-9)
    # L1 missing (img1) and whole image missing (img3): lordosis missed twice, SS once
    assert s2["angles"]["l1_l5_lordosis"]["missed"] == 2
    assert s2["angles"]["l1_l5_lordosis"]["n"] == 2
    assert s2["angles"]["sacral_slope"]["missed"] == 1
    assert s2["angles"]["sacral_slope"]["n"] == 3
    # SDR counts misses as failures
    assert s2["sdr"]["sdr@2.0mm"] == pytest.approx((n_lab - n_missed_pts) / n_lab)


def test_unlabelled_gt_level_is_not_missed() -> None:
    gts = gt_set(2)
    gts[0] = drop_level(gts[0], "S1")
    preds = shifted(gts)
    s2 = evaluate(preds, gts, S)["step2"]
    assert s2["per_level"]["S1"]["levels_labelled"] == 1
    assert s2["per_level"]["S1"]["level_detection_rate"] == 1.0
    assert s2["angles"]["sacral_slope"]["n"] == 1
    assert s2["angles"]["sacral_slope"]["missed"] == 0


def test_unmatched_predictions_warn() -> None:
    gts = gt_set(2)
    preds = [*shifted(gts), record("other.png", spine_points())]
    with pytest.warns(UserWarning, match="without ground truth"):
        m = evaluate(preds, gts, S)
    assert m["n_unmatched_predictions"] == 1 and m["n_images"] == 2


def test_step1_and_step2_side_by_side() -> None:
    gts = gt_set(3)
    m = evaluate(shifted(gts, dx=1.0), gts, S, step1_records=shifted(gts, dx=3.0, dy=3.0))
    assert m["step2"]["per_level"]["L2"]["median_x"] == pytest.approx(2.5)
    assert m["step1"]["per_level"]["L2"]["median_x"] == pytest.approx(7.5)
    assert m["step1"]["per_level"]["L2"]["median_y"] == pytest.approx(10.0)  # 3 px of 30
    c = m["comparison"]["median_nle_x_pct"]
    assert c["ours_step2"] == pytest.approx(2.5) and c["ours_step1"] == pytest.approx(7.5)
    assert c["reference"] == REFERENCE["median_nle_x_pct"]
    assert m["comparison"]["sacral_slope_median_abs_deg"]["reference"] == 1.98


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def test_write_report(tmp_path: Path) -> None:
    gts = gt_set(5)
    rng = np.random.default_rng(0)
    preds = [record(r.file_name, r.points + rng.normal(0, 1.0, r.points.shape), r.pixel_spacing)
             for r in gts]
    preds[2] = drop_level(preds[2], "L4")
    step1 = [record(r.file_name, r.points + rng.normal(0, 3.0, r.points.shape), r.pixel_spacing)
             for r in gts]
    m = evaluate(preds, gts, S, step1_records=step1)
    out = tmp_path / "report"
    path = write_report(m, out, pred_records=preds, gt_records=gts, schema=S,
                        step1_records=step1)
    assert path == out / "report.md"
    loaded = json.loads((out / "metrics.json").read_text())
    for key in ("step2", "step1", "reference", "comparison", "n_images", "missing_images"):
        assert key in loaded
    assert loaded["reference"]["median_nle_x_pct"] == 1.98
    assert loaded["step2"]["angles"]["sacral_slope"]["n"] == 5
    text = path.read_text()
    assert "| Figure | ours (step 2) | ours (step 1) | Cina et al. 2021 |" in text
    for ref in ("1.98", "1.68", "1.84", "2.43"):
        assert ref in text
    assert "Pearson r" in text and "limits of agreement" in text and "SDR 2.0mm" in text
    pngs = ["error_per_level.png"] + [f"{kind}_{n}.png" for kind in ("bland_altman", "scatter")
                                      for n in ("l1_l5_lordosis", "l1_s1_lordosis",
                                                "sacral_slope")]
    for name in pngs:
        assert f"({name})" in text
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
            im.verify()
    assert not list(out.glob(".*tmp"))


def test_write_report_without_step1_or_data(tmp_path: Path) -> None:
    gts = gt_set(2, spacing=None)
    preds = [ImageRecord.empty(S, g.file_name, IMG_W, IMG_H) for g in gts]  # nothing found
    m = evaluate(preds, gts, S)
    assert m["step2"]["localization"]["detection_rate"] == 0.0
    assert math.isnan(m["step2"]["localization"]["median_x"])
    assert m["comparison"]["median_nle_x_pct"]["better_than_reference"] is None
    path = write_report(m, tmp_path, pred_records=preds, gt_records=gts, schema=S)
    text = path.read_text()
    assert "| Figure | ours (step 2) | ours (step 1) | Cina et al. 2021 |" in text
    assert "n/a" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["step1"] is None
    with Image.open(tmp_path / "scatter_sacral_slope.png") as im:
        assert im.format == "PNG"
