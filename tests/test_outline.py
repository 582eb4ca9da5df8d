"""The held-out third phantom style (outlines): determinism, ground truth and files."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from spinelandmarks.anatomy.angles import lumbar_parameters
from spinelandmarks.anatomy.vertebrae import level_centres
from spinelandmarks.data.annotations import read_coco, validate
from spinelandmarks.data.io import read_image
from spinelandmarks.phantoms import outline
from spinelandmarks.phantoms.outline import (
    OutlineConfig,
    generate_outline_dataset,
    generate_outline_phantom,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

SMALL = OutlineConfig(height=256, width=208)


def test_same_seed_same_image_and_record() -> None:
    a, ra = generate_outline_phantom(4, SMALL)
    b, rb = generate_outline_phantom(4, SMALL)
    c, _ = generate_outline_phantom(5, SMALL)
    assert np.array_equal(a, b) and np.array_equal(ra.points, rb.points, equal_nan=True)
    assert ra.meta == rb.meta
    assert not np.array_equal(a, c)
    assert a.shape == (256, 208) and 0.0 <= a.min() and a.max() <= 1.0
    assert np.allclose(a * 255, np.rint(a * 255))  # 8-bit values


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 7, 11])
def test_angles_from_the_corners_equal_the_drawn_anatomy(seed: int) -> None:
    _, rec = generate_outline_phantom(seed, replace(SMALL, fov_height_mm=(420.0, 420.0),
                                                    max_shift_frac=0.0))
    syn = rec.meta["synthetic"]
    assert np.isfinite(rec.points).all()
    p = {k: float(v) for k, v in lumbar_parameters(torch.tensor(rec.points)[None]).items()}
    for k in ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"):
        assert p[k] == pytest.approx(syn[f"{k}_deg"], abs=1e-6)
    facing = 1.0 if syn["facing"] == "right" else -1.0
    assert p["sacral_slope"] == pytest.approx(
        syn["sacral_slope_anatomical_deg"] + facing * syn["rotation_deg"], abs=1e-6)
    assert 10.0 < p["l1_s1_lordosis"] < 90.0  # a lordotic, physiological spine


@pytest.mark.parametrize("seed", [0, 5])
def test_femoral_heads_sit_at_the_drawn_pelvic_incidence(seed: int) -> None:
    """Pelvic incidence: the angle at the sacral plate's middle (the patient-frame origin)
    between the plate's caudal normal and the line to the hip axis."""
    rng = np.random.default_rng(seed)
    an = outline._anatomy(rng, OutlineConfig())
    hip = outline._hip_axis(an)
    ant, post = an.plate
    along = (ant - post) / np.linalg.norm(ant - post)
    caudal = np.array([-along[1], along[0]])  # the plate's normal pointing down (y grows)
    assert caudal[1] > 0
    angle = math.degrees(math.acos(hip @ caudal / np.linalg.norm(hip)))
    assert angle == pytest.approx(math.degrees(an.incidence), abs=1e-9)
    assert hip @ along > 0  # the hip axis lies anterior of the plate's normal


def test_both_facings_occur_and_keep_names() -> None:
    facings = set()
    for seed in range(8):
        _, rec = generate_outline_phantom(seed, SMALL)
        f = rec.meta["synthetic"]["facing"]
        facings.add(f)
        a = rec.points[S.index("L3", "anterior_superior")]
        p = rec.points[S.index("L3", "posterior_superior")]
        if np.isfinite(a).all() and np.isfinite(p).all():
            assert np.sign(a[0] - p[0]) == (1 if f == "right" else -1)
    assert facings == {"left", "right"}


def test_bodies_are_where_the_corners_are() -> None:
    cfg = replace(OutlineConfig(height=512, width=416), noise=False, gas_blobs=0.0,
                  p_hardware=0.0, fov_height_mm=(400.0, 400.0), max_shift_frac=0.0)
    img, rec = generate_outline_phantom(11, cfg)
    c = level_centres(torch.tensor(rec.points)[None])[0].numpy()
    for k in range(4):  # body centre brighter than the disc space between two bodies
        inf_mid = rec.points[S.level_indices(f"L{k + 1}")][2:].mean(0)
        sup_next = rec.points[S.level_indices(f"L{k + 2}")][:2].mean(0)
        disc = (inf_mid + sup_next) / 2
        assert img[int(c[k, 1]), int(c[k, 0])] > img[int(disc[1]), int(disc[0])] + 0.05


def test_points_outside_the_field_are_absent() -> None:
    _, rec = generate_outline_phantom(2, replace(SMALL, fov_height_mm=(120.0, 120.0)))
    out = rec.visibility == 0
    assert out.any() and np.isnan(rec.points[out]).all()


def test_dataset_files_are_8_bit_png_and_jpeg_with_valid_annotations(tmp_path) -> None:
    root = generate_outline_dataset(tmp_path / "c", 6, seed=3, config=SMALL, workers=1)
    recs = read_coco(root / "annotations.json", S)
    validate(recs, S, root)
    suffixes = {r.file_name.rsplit(".", 1)[1] for r in recs}
    assert suffixes == {"png", "jpg"}
    for r in recs:
        img = read_image(root / r.file_name)
        assert img.pixels.shape == (256, 208)
        assert r.pixel_spacing is not None and r.pixel_spacing[0] > 0
    again = read_coco(generate_outline_dataset(tmp_path / "d", 6, seed=3, config=SMALL,
                                               workers=2) / "annotations.json", S)
    assert [r.meta for r in again] == [r.meta for r in recs]
