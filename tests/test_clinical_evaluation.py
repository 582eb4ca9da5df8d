"""Clinical agreement in evaluate(): phantoms' ground truth against itself and a perturbation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.evaluation import evaluate
from spinelandmarks.evaluation.report import write_report
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.schema import LUMBAR_MORPHOMETRY, LUMBOPELVIC_SAGITTAL


def _records(schema: object, n: int = 8) -> list:
    cfg = PhantomConfig(long_side=256, p_fracture=0.5, p_crop=0.0, max_shift_frac=0.0,
                        fov_height_mm=(470, 490))
    return [dataclasses.replace(generate_phantom(i, cfg, schema=schema)[1],
                                file_name=f"images/{i}.png") for i in range(n)]


def test_ground_truth_against_itself_agrees_perfectly(tmp_path: Path) -> None:
    gt = _records(LUMBAR_MORPHOMETRY)
    m = evaluate(gt, gt, LUMBAR_MORPHOMETRY)["clinical"]
    for block in (*m["angles"].values(), *m["lengths"].values()):
        if block["n"]:
            assert block["mae"] == 0.0 and block["bias"] == 0.0
    assert m["lengths"]["hm"]["n"] == 40 and m["length_unit"] == "mm"
    frac = m["fractures"]
    assert frac["per_vertebra"]["positives"] >= 3  # p_fracture 0.5 over 8 patients
    for unit in ("per_vertebra", "per_patient"):
        assert frac[unit]["sensitivity"] == 1.0 and frac[unit]["specificity"] == 1.0
    assert frac["right_levels"]["share"] == 1.0
    lines = m["fracture_lines"]  # the reference read at 20-25 % against its own grade >= 2
    assert [r["threshold"] for r in lines] == [0.2, 0.21, 0.22, 0.23, 0.24, 0.25]
    assert all(r["sensitivity"] == 1.0 for r in lines)
    assert lines[-1]["specificity"] == 1.0 and lines[-1]["patient_accuracy"] == 1.0
    assert [r["specificity"] for r in lines] == sorted(r["specificity"] for r in lines)
    report = write_report(evaluate(gt, gt, LUMBAR_MORPHOMETRY), tmp_path, pred_records=gt,
                          gt_records=gt, schema=LUMBAR_MORPHOMETRY)
    text = report.read_text()
    assert "## Clinical measurements" in text and "grade >= 2" in text
    assert "other height-loss lines" in text and "| 0.22 | 1.000 |" in text
    json.loads((tmp_path / "metrics.json").read_text())  # strict JSON


def test_spinopelvic_errors_follow_a_moved_hip_axis() -> None:
    gt = _records(LUMBOPELVIC_SAGITTAL, n=6)
    fh = [LUMBOPELVIC_SAGITTAL.index("FH", "centre_1"),
          LUMBOPELVIC_SAGITTAL.index("FH", "centre_2")]
    pred = []
    for rec in gt:  # both heads 10 px anterior: PT and PI change, SS and LL do not
        pts = rec.points.copy()
        facing = 1 if rec.meta["synthetic"]["facing"] == "right" else -1
        pts[fh, 0] += 10.0 * facing
        pred.append(dataclasses.replace(rec, points=pts))
    a = evaluate(pred, gt, LUMBOPELVIC_SAGITTAL)["clinical"]["angles"]
    assert a["sacral_slope"]["mae"] == 0.0 and a["lumbar_lordosis"]["mae"] == 0.0
    assert a["pelvic_tilt"]["mae"] > 1.0
    # PI = PT + SS, so the PI and PT errors are the same
    assert a["pelvic_incidence"]["mae"] == pytest.approx(a["pelvic_tilt"]["mae"])
    assert a["pelvic_tilt"]["bias"] == pytest.approx(a["pelvic_tilt"]["mae"])  # all anterior
    assert np.isfinite(a["pelvic_tilt"]["pearson_r"])


def test_suspected_fractures_are_scored_against_grade_2(tmp_path: Path) -> None:
    from spinelandmarks.anatomy.measurements import genant_grades, morphometry
    from spinelandmarks.measurement_table import write_measurements_csv

    gt = _records(LUMBAR_MORPHOMETRY)
    pts = np.stack([np.where((r.visibility > 0)[:, None], r.points, np.nan) for r in gt])
    grade = genant_grades(morphometry(torch.from_numpy(pts), LUMBAR_MORPHOMETRY))["grade"]
    body = LUMBAR_MORPHOMETRY.body_levels
    truth = [[lv for lv, g in zip(body, row, strict=True) if g >= 2] for row in grade.tolist()]
    assert sum(map(len, truth)) >= 2
    # the screen lists every grade-2 body plus L1 of every image: 8 false positives
    listed = [sorted(set(t) | {"L1"}, key=body.index) for t in truth]
    pred = [dataclasses.replace(r, meta={"needs_review": False, "suspected_fractures": s})
            for r, s in zip(gt, listed, strict=True)]
    clinical = evaluate(pred, gt, LUMBAR_MORPHOMETRY)["clinical"]
    screen = clinical["fracture_screen"]["per_vertebra"]
    n_fx = sum(map(len, truth))
    n_l1_normal = sum("L1" not in t for t in truth)
    assert screen["n"] == 40 and screen["positives"] == n_fx
    assert screen["sensitivity"] == 1.0
    assert screen["specificity"] == pytest.approx((40 - n_fx - n_l1_normal) / (40 - n_fx))
    assert "fracture_screen" not in evaluate(gt, gt, LUMBAR_MORPHOMETRY)["clinical"]
    csv_text = write_measurements_csv(pred, LUMBAR_MORPHOMETRY, tmp_path / "m.csv").read_text()
    header, first = (line.split(",") for line in csv_text.splitlines()[:2])
    assert first[header.index("suspected_fractures")] == " ".join(listed[0])
    report = write_report(evaluate(pred, gt, LUMBAR_MORPHOMETRY), tmp_path / "r",
                          pred_records=pred, gt_records=gt, schema=LUMBAR_MORPHOMETRY)
    assert "suspected (screen)" in report.read_text()
