"""The second phantom style (cone-beam projections): determinism, ground truth and files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from spinelandmarks.anatomy.angles import lumbar_parameters
from spinelandmarks.anatomy.vertebrae import level_centres
from spinelandmarks.data.annotations import read_coco, validate
from spinelandmarks.data.io import read_image
from spinelandmarks.phantoms.projection import (
    ProjectionConfig,
    generate_projection_dataset,
    generate_projection_phantom,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

SMALL = ProjectionConfig(height=192, width=160, slices=5)


def test_same_seed_same_image_and_record() -> None:
    a, ra = generate_projection_phantom(4, SMALL)
    b, rb = generate_projection_phantom(4, SMALL)
    c, _ = generate_projection_phantom(5, SMALL)
    assert np.array_equal(a, b) and np.array_equal(ra.points, rb.points, equal_nan=True)
    assert ra.meta == rb.meta
    assert not np.array_equal(a, c)
    assert a.shape == (192, 160) and 0.0 <= a.min() and a.max() <= 1.0
    assert np.allclose(a * 4095, np.rint(a * 4095))  # 12-bit values


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7])
def test_angles_from_the_corners_equal_the_drawn_anatomy(seed: int) -> None:
    _, rec = generate_projection_phantom(seed, replace(SMALL, fov_height_mm=(400.0, 420.0),
                                                       max_shift_frac=0.0))
    syn = rec.meta["synthetic"]
    p = {k: float(v) for k, v in lumbar_parameters(torch.tensor(rec.points)[None]).items()}
    for k in ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"):
        assert p[k] == pytest.approx(syn[f"{k}_deg"], abs=1e-6)
    facing = 1.0 if syn["facing"] == "right" else -1.0
    assert p["l1_s1_lordosis"] == pytest.approx(syn["l1_s1_lordosis_anatomical_deg"], abs=1e-6)
    assert p["sacral_slope"] == pytest.approx(
        syn["sacral_slope_anatomical_deg"] + facing * syn["rotation_deg"], abs=1e-6)


def test_both_facings_occur_and_keep_names() -> None:
    facings = set()
    for seed in range(8):
        _, rec = generate_projection_phantom(seed, SMALL)
        f = rec.meta["synthetic"]["facing"]
        facings.add(f)
        a, p = rec.points[S.index("L3", "anterior_superior")], rec.points[
            S.index("L3", "posterior_superior")]
        if np.isfinite(a).all() and np.isfinite(p).all():
            assert np.sign(a[0] - p[0]) == (1 if f == "right" else -1)
    assert facings == {"left", "right"}


def test_bodies_are_where_the_corners_are() -> None:
    cfg = replace(ProjectionConfig(height=384, width=320), noise=False, p_grid=0.0,
                  unsharp_amount=(0.0, 0.0), fov_height_mm=(380.0, 400.0), max_shift_frac=0.0)
    img, rec = generate_projection_phantom(11, cfg)
    c = level_centres(torch.tensor(rec.points)[None])[0].numpy()
    for k in range(4):  # body centre brighter than the disc space between two bodies
        body = img[int(c[k, 1]), int(c[k, 0])]
        inf_mid = rec.points[S.level_indices(f"L{k + 1}")][2:].mean(0)
        sup_next = rec.points[S.level_indices(f"L{k + 2}")][:2].mean(0)
        disc = (inf_mid + sup_next) / 2
        assert body > img[int(disc[1]), int(disc[0])] + 0.05


def test_points_outside_the_field_are_absent() -> None:
    cfg = replace(SMALL, fov_height_mm=(150.0, 150.0))  # lumbar column taller than the field
    _, rec = generate_projection_phantom(2, cfg)
    out = rec.visibility == 0
    assert out.any()
    assert np.isnan(rec.points[out]).all() and np.isfinite(rec.points[~out]).all()


def test_dataset_files_round_trip(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    cfg = replace(SMALL, p_dicom=0.5)
    one = generate_projection_dataset(root / "w1", 6, seed=3, config=cfg, workers=1)
    two = generate_projection_dataset(root / "w2", 6, seed=3, config=cfg, workers=2)
    a = json.loads((one / "annotations.json").read_text())
    b = json.loads((two / "annotations.json").read_text())
    assert a == b
    recs = read_coco(one / "annotations.json", S)
    assert validate(recs, S, one) == []
    kinds = {r.file_name.rsplit(".", 1)[1] for r in recs}
    assert kinds == {"png", "dcm"}
    for r in recs:
        rad = read_image(one / r.file_name)
        c = level_centres(torch.tensor(r.points)[None])[0, 2].numpy()
        if r.file_name.endswith(".png"):
            assert rad.pixels.max() <= 4095 / 65535 + 1e-7  # 12-bit data, unscaled
        else:
            assert rad.meta["bits_stored"] == 12
            assert rad.meta["photometric_interpretation"] == \
                r.meta["synthetic"]["photometric"]
        if np.isfinite(c).all():  # bone reads bright whatever the storage
            assert rad.pixels[int(c[1]), int(c[0])] > np.median(rad.pixels)
