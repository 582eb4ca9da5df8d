"""Phantoms of standing full-length films: the measurements recomputed from the annotated
points equal the generating parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.anatomy.alignment import sagittal_alignment
from spinelandmarks.anatomy.angles import schema_parameters
from spinelandmarks.anatomy.measurements import spinopelvic_parameters
from spinelandmarks.cli import main
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.phantoms import PhantomConfig
from spinelandmarks.phantoms.whole_spine import generate_whole_spine_phantom
from spinelandmarks.schema import WHOLE_SPINE_SAGITTAL as W


def recomputed(points: np.ndarray, spacing: tuple[float, float]) -> dict[str, float]:
    """Every generating parameter, measured from the points as a user would."""
    pts = torch.tensor(points)[None]
    a = sagittal_alignment(pts, W, spacing)
    pelvic = spinopelvic_parameters(pts, W)
    lumbar = schema_parameters(pts, W)
    return {"sva_mm": float(a["sva_mm"][0]),
            "thoracic_kyphosis_t4_t12_deg": float(a["thoracic_kyphosis_t4_t12"][0]),
            "t1_pelvic_angle_deg": float(a["t1_pelvic_angle"][0]),
            "pelvic_tilt_deg": float(pelvic["pelvic_tilt"][0]),
            "pelvic_incidence_deg": float(pelvic["pelvic_incidence"][0]),
            "sacral_slope_deg": float(lumbar["sacral_slope"][0]),
            "l1_s1_lordosis_deg": float(lumbar["l1_s1_lordosis"][0])}


def test_measurements_from_the_points_equal_the_generating_parameters() -> None:
    facings = set()
    for seed in range(4):
        image, rec = generate_whole_spine_phantom(seed, PhantomConfig(long_side=384))
        h, w = image.shape
        assert h == 384 and w == round(384 * 0.36) and rec.points.shape == (W.num_points, 2)
        assert (rec.visibility == 2).all()  # C7 to the femoral heads inside the field
        truth = rec.meta["synthetic"]
        facings.add(truth["facing"])
        for name, value in recomputed(rec.points, rec.pixel_spacing).items():
            assert value == pytest.approx(truth[name], abs=1e-6), name
        # plausible adults: kyphosis 15-70 deg, SVA within -40..90 mm, T1PA -10..40 deg
        assert 15 <= truth["thoracic_kyphosis_t4_t12_deg"] <= 70
        assert -40 <= truth["sva_mm"] <= 90 and -10 <= truth["t1_pelvic_angle_deg"] <= 40
        # the field is a full-length film: 85-95 cm tall
        assert 850 <= rec.pixel_spacing[0] * h <= 950
    assert facings == {"left", "right"}


def test_synth_cli_writes_whole_spine_films(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert main(["synth", str(out), "--num-images", "2", "--size", "256",
                 "--schema", "whole_spine_sagittal"]) == 0
    recs = read_coco(out / "annotations.json", W)
    assert len(recs) == 2 and all(r.points.shape == (76, 2) for r in recs)
    assert recs[0].height == 256 and recs[0].width == round(256 * 0.36)
    assert all((out / r.file_name).is_file() for r in recs)
