"""Tests of the synthetic lateral lumbar radiograph generator."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spinelandmarks.phantoms import PhantomConfig, generate_dataset, generate_phantom
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

SMALL = PhantomConfig(long_side=256)
LUMBAR = ("L1", "L2", "L3", "L4", "L5")


def _tilt(points: np.ndarray, level: str, side: str, facing: int) -> float:
    """CONVENTIONS section 4: tilt = atan2(A.y - P.y, facing * (A.x - P.x)), degrees."""
    a = points[S.index(level, f"anterior_{side}")]
    p = points[S.index(level, f"posterior_{side}")]
    return math.degrees(math.atan2(a[1] - p[1], facing * (a[0] - p[0])))


def _facing(points: np.ndarray) -> int:
    """Sign of (anterior x - posterior x), majority over the endplates."""
    signs = [np.sign(points[e.anterior, 0] - points[e.posterior, 0]) for e in S.endplates()
             if np.isfinite(points[[e.anterior, e.posterior]]).all()]
    return 1 if sum(signs) >= 0 else -1


def _sample(img: np.ndarray, xy: np.ndarray, r: int = 1) -> float:
    x, y = math.floor(xy[0]), math.floor(xy[1])
    win = img[max(y - r, 0): y + r + 1, max(x - r, 0): x + r + 1]
    return float(win.mean())


def test_output_types_and_meta() -> None:
    img, rec = generate_phantom(3, SMALL)
    assert img.dtype == np.float32 and img.shape == (256, 205)
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert (rec.height, rec.width) == img.shape
    assert rec.points.shape == (22, 2) and rec.visibility.shape == (22,)
    assert rec.patient_id == "synth-000003"
    assert rec.pixel_spacing is not None and rec.pixel_spacing[0] == rec.pixel_spacing[1] > 0
    meta = rec.meta["synthetic"]
    json.dumps(meta)  # JSON-serialisable
    for key in ("l1_s1_lordosis_deg", "l1_l5_lordosis_deg", "sacral_slope_deg", "facing",
                "fractures", "listhesis", "implants", "rotation_deg", "noise_level"):
        assert key in meta
    absent = rec.visibility == 0
    assert np.isnan(rec.points[absent]).all() and np.isfinite(rec.points[~absent]).all()


def test_deterministic_by_seed() -> None:
    a_img, a_rec = generate_phantom(11, SMALL)
    b_img, b_rec = generate_phantom(np.random.default_rng(11), SMALL, patient_id="synth-000011")
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_rec.points, b_rec.points)
    np.testing.assert_array_equal(a_rec.visibility, b_rec.visibility)
    assert a_rec.meta == b_rec.meta and a_rec.patient_id == b_rec.patient_id
    c_img, _ = generate_phantom(12, SMALL)
    assert not np.array_equal(a_img, c_img)


def test_angles_match_parameters() -> None:
    facings = set()
    checked = 0
    for seed in range(20):
        _, rec = generate_phantom(seed, SMALL)
        meta = rec.meta["synthetic"]
        facing = 1 if meta["facing"] == "right" else -1
        facings.add(meta["facing"])
        pts = rec.points
        if not np.isfinite(pts).all():
            continue  # a corner fell outside the field of view
        checked += 1
        assert _facing(pts) == facing
        ss = _tilt(pts, "S1", "superior", facing)
        l1s1 = ss - _tilt(pts, "L1", "superior", facing)
        l1l5 = _tilt(pts, "L5", "inferior", facing) - _tilt(pts, "L1", "superior", facing)
        assert ss == pytest.approx(meta["sacral_slope_deg"], abs=0.01)
        assert l1s1 == pytest.approx(meta["l1_s1_lordosis_deg"], abs=0.01)
        assert l1l5 == pytest.approx(meta["l1_l5_lordosis_deg"], abs=0.01)
        # rotation of the field of view changes SS by facing * rotation only
        assert ss == pytest.approx(meta["sacral_slope_anatomical_deg"]
                                   + facing * meta["rotation_deg"], abs=1e-6)
    assert checked >= 15
    assert facings == {"left", "right"}


def test_angles_in_clinical_ranges() -> None:
    for seed in range(30):
        _, rec = generate_phantom(seed, SMALL)
        m = rec.meta["synthetic"]
        assert 25.0 <= m["sacral_slope_anatomical_deg"] <= 55.0
        if not m["fractures"]:
            assert 20.0 - 1e-9 <= m["l1_s1_lordosis_deg"] <= 70.0 + 1e-9
        assert abs(m["rotation_deg"]) <= 5.0


def test_facing_left_mirrors_x() -> None:
    seen = {"left": 0, "right": 0}
    for seed in range(12):
        _, rec = generate_phantom(seed, SMALL)
        facing = rec.meta["synthetic"]["facing"]
        seen[facing] += 1
        for lv in LUMBAR:
            for side in ("superior", "inferior"):
                a = rec.points[S.index(lv, f"anterior_{side}")]
                p = rec.points[S.index(lv, f"posterior_{side}")]
                if np.isfinite(a).all() and np.isfinite(p).all():
                    assert (a[0] < p[0]) == (facing == "left")
    assert seen["left"] and seen["right"]


def test_corners_lie_on_drawn_anatomy() -> None:
    clean = PhantomConfig(long_side=512, bowel_gas=(0, 0), p_implants=0.0, noise=(0.0, 0.0),
                          p_collimation=0.0)
    rim_ok = body_ok = total_rim = total_body = 0
    for seed in range(6):
        img, rec = generate_phantom(seed, clean)
        sp = rec.pixel_spacing[0] if rec.pixel_spacing else 1.0
        pts = rec.points
        for k in range(4):
            up, lo = LUMBAR[k], LUMBAR[k + 1]
            idx_up = S.level_indices(up)
            disc_idx = [S.index(up, "posterior_inferior"), S.index(up, "anterior_inferior"),
                        S.index(lo, "posterior_superior"), S.index(lo, "anterior_superior")]
            if not np.isfinite(pts[idx_up + disc_idx]).all():
                continue
            disc = _sample(img, pts[disc_idx].mean(axis=0))
            center = pts[idx_up].mean(axis=0)
            total_body += 1
            body_ok += _sample(img, center) > disc
            for i in idx_up:
                toward = center - pts[i]
                inner = pts[i] + toward / np.linalg.norm(toward) * (1.5 / sp)
                total_rim += 1
                rim_ok += _sample(img, inner) > disc
    assert total_body >= 20
    assert body_ok / total_body >= 0.95
    assert rim_ok / total_rim >= 0.95


def test_implants_occlude_some_points() -> None:
    cfg = PhantomConfig(long_side=256, p_implants=1.0)
    occluded = 0
    for seed in range(8):
        _, rec = generate_phantom(seed, cfg)
        assert rec.meta["synthetic"]["implants"] is True
        occluded += int((rec.visibility == 1).sum())
        assert np.isfinite(rec.points[rec.visibility == 1]).all()
    assert occluded > 0
    none = PhantomConfig(long_side=256, p_implants=0.0)
    for seed in range(5):
        _, rec = generate_phantom(seed, none)
        assert not (rec.visibility == 1).any()


def test_fractures_and_listhesis_recorded() -> None:
    cfg = PhantomConfig(long_side=256, p_fracture=1.0, p_listhesis=1.0)
    for seed in range(5):
        _, rec = generate_phantom(seed, cfg)
        m = rec.meta["synthetic"]
        assert m["fractures"] and all(g in (1, 2, 3) for g in m["fractures"].values())
        assert set(m["fractures"]) <= set(LUMBAR)
        (lv, info), = m["listhesis"].items()
        assert lv in ("L4", "L5") and info["grade"] in (1, 2) and info["slip_mm"] > 0


def test_out_of_view_points_absent() -> None:
    cfg = PhantomConfig(long_side=256, p_crop=1.0)
    absent = 0
    for seed in range(10):
        _, rec = generate_phantom(seed, cfg)
        inside = ((rec.points[:, 0] >= 0) & (rec.points[:, 0] < rec.width)
                  & (rec.points[:, 1] >= 0) & (rec.points[:, 1] < rec.height))
        assert inside[rec.visibility > 0].all()
        absent += int((rec.visibility == 0).sum())
    assert absent > 0


def test_generate_dataset(tmp_path: Path) -> None:
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.data.io import read_image

    root = generate_dataset(tmp_path / "ds", 3, seed=5, config=SMALL)
    recs = read_coco(root / "annotations.json", S)
    assert len(recs) == 3
    assert len({r.patient_id for r in recs}) == 3
    for r in recs:
        assert r.patient_id is not None and r.patient_id.startswith("synth-")
        assert r.pixel_spacing is not None
        assert "synthetic" in r.meta
        img = read_image(root / r.file_name)
        assert (img.height, img.width) == (r.height, r.width)
    again = generate_dataset(tmp_path / "ds2", 3, seed=5, config=SMALL)
    assert (root / "annotations.json").read_text() == (again / "annotations.json").read_text()
    for name in ("images/00000.png", "images/00002.png"):
        assert (root / name).read_bytes() == (again / name).read_bytes()


def test_generate_dataset_workers_and_dicom(tmp_path: Path) -> None:
    from spinelandmarks.data.io import read_image

    one = generate_dataset(tmp_path / "a", 4, seed=9, config=SMALL, workers=1)
    two = generate_dataset(tmp_path / "b", 4, seed=9, config=SMALL, workers=2)
    assert (one / "annotations.json").read_text() == (two / "annotations.json").read_text()
    for i in range(4):
        name = f"images/{i:05d}.png"
        assert (one / name).read_bytes() == (two / name).read_bytes()
    dcm = generate_dataset(tmp_path / "c", 2, seed=9, config=SMALL, fmt="dicom")
    data = json.loads((dcm / "annotations.json").read_text())
    assert data["images"][0]["file_name"].endswith(".dcm")
    img = read_image(dcm / data["images"][0]["file_name"])
    png = read_image(one / "images/00000.png")
    np.testing.assert_allclose(img.pixels, png.pixels, atol=1e-4)


def test_other_schemas_add_femoral_heads_and_endplate_middles(tmp_path: Path) -> None:
    from spinelandmarks.schema import LUMBAR_MORPHOMETRY as M
    from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as P

    # seed 11: biconcave fractures of L2 and L3, facing left; the hips in the field of view
    cfg = PhantomConfig(long_side=256, p_fracture=1.0, p_crop=0.0, max_shift_frac=0.0,
                        fov_height_mm=(470, 490))
    img, rec = generate_phantom(11, cfg)
    img_p, rec_p = generate_phantom(11, cfg, schema="lumbopelvic_sagittal")
    img_m, rec_m = generate_phantom(11, cfg, schema=M)
    np.testing.assert_array_equal(img, img_p)  # the schema changes the record, not the image
    np.testing.assert_array_equal(img, img_m)
    assert rec_p.points.shape == (24, 2) and rec_m.points.shape == (32, 2)
    np.testing.assert_array_equal(rec_p.points[:22], rec.points)
    # The drawn heads sit around the designed hip axis (each side offset by ~4 mm * scale).
    heads = rec_p.points[[P.index("FH", "centre_1"), P.index("FH", "centre_2")]]
    hip = np.array(rec.meta["synthetic"]["femoral_head_center_px"])
    assert np.linalg.norm(heads.mean(0) - hip) * rec.pixel_spacing[0] < 25.0

    meta = rec.meta["synthetic"]
    sc = meta["size_scale"]
    biconcave: list[float] = []
    for lv in LUMBAR:
        for side, other in (("superior", "inferior"), ("inferior", "superior")):
            a, p = rec_m.points[M.index(lv, f"anterior_{side}")], rec_m.points[
                M.index(lv, f"posterior_{side}")]
            mid = rec_m.points[M.index(lv, f"middle_{side}")]
            toward = 0.5 * (rec_m.points[M.index(lv, f"anterior_{other}")]
                            + rec_m.points[M.index(lv, f"posterior_{other}")]) - 0.5 * (a + p)
            e = (a - p) / np.linalg.norm(a - p)
            off = mid - 0.5 * (a + p)
            assert abs(float(off @ e)) < 1e-3  # on the endplate's normal through its middle
            depth_mm = float(off @ toward) / np.linalg.norm(toward) * rec.pixel_spacing[0]
            if meta["fracture_types"].get(lv) == "biconcave":
                # Depressed by the fracture: each endplate centre by loss * height / 2, so that
                # Hm / Hp = 1 - loss (the Genant biconcavity ratio)
                hp = float(np.linalg.norm(rec_m.points[M.index(lv, "posterior_superior")]
                                          - rec_m.points[M.index(lv, "posterior_inferior")]))
                expected = 0.5 * meta["fracture_height_loss"][lv] * hp * rec.pixel_spacing[0]
                biconcave.append(depth_mm)
                assert depth_mm == pytest.approx(expected, abs=0.1), (lv, side)
            else:  # a normal endplate: concave by 0.6-1.3 mm * scale, as drawn
                assert 0.4 * sc < depth_mm < 1.3 * sc, (lv, side, depth_mm)
    assert len(biconcave) == 4


def test_phantom_schema_must_be_made_of_known_points() -> None:
    from spinelandmarks.schema import LandmarkSchema, Level

    bad = LandmarkSchema("odd", (Level("L3", ("anterior_superior", "pedicle_tip")),))
    with pytest.raises(ValueError, match=r"schema 'odd'.*L3\.pedicle_tip"):
        generate_phantom(0, SMALL, schema=bad)
    with pytest.raises(ValueError, match="unknown"):
        generate_phantom(0, SMALL, schema="no_such_schema")


def test_body_outlines_pass_by_the_corners_and_cover_the_bright_body(tmp_path: Path) -> None:
    from spinelandmarks.data.annotations import read_coco
    from spinelandmarks.data.masks import mask_from_segmentation

    cfg = PhantomConfig(long_side=384, p_fracture=1.0, p_crop=0.0, max_shift_frac=0.0,
                        p_collimation=0.0, p_implants=0.0)
    img, rec = generate_phantom(11, cfg)  # biconcave L2 and L3
    assert sorted(rec.masks) == list(LUMBAR)
    mm = rec.pixel_spacing[0]
    sc = rec.meta["synthetic"]["size_scale"]
    for lv in LUMBAR:
        poly = np.array(rec.masks[lv][0]).reshape(-1, 2)
        corners = rec.points[[S.index(lv, p) for p in ("anterior_superior", "posterior_superior",
                                                        "posterior_inferior",
                                                        "anterior_inferior")]]
        # distance from each nominal corner to the outline polygon's edges
        a, b = poly, np.roll(poly, -1, axis=0)
        for c in corners:
            t = np.clip(((c - a) * (b - a)).sum(1) / ((b - a) ** 2).sum(1), 0, 1)
            d = np.linalg.norm(a + t[:, None] * (b - a) - c, axis=1).min() * mm
            # the rounded rim passes r (1 / sin(theta / 2) - 1) inside the vertex (r = 1 mm);
            # a biconcave fracture's depressed endplate starts to dip near the corners too
            bound = 1.5 if lv in rec.meta["synthetic"]["fracture_types"] else 0.75
            assert d < bound * sc, (lv, d)
        mask = mask_from_segmentation(rec.masks[lv], rec.height, rec.width)
        assert mask.sum() * mm * mm > 500 * sc * sc  # a body is ~40 x 25 mm
    # the drawn bodies are brighter than the soft tissue around them
    union = np.any([mask_from_segmentation(rec.masks[lv], rec.height, rec.width)
                    for lv in LUMBAR], axis=0)
    from scipy import ndimage
    ring = ndimage.binary_dilation(union, iterations=6) & ~ndimage.binary_dilation(union,
                                                                                   iterations=2)
    assert img[union].mean() > img[ring].mean() + 0.05
    generate_dataset(tmp_path / "d", 2, seed=3, config=PhantomConfig(long_side=160))
    back = read_coco(tmp_path / "d" / "annotations.json")
    assert all(len(r.masks) >= 4 for r in back)


def test_ilium_shift_moves_only_the_iliac_wing() -> None:
    """Same draws (both ranges non-zero): same anatomy, points and femoral heads; the crest is
    drawn higher, so the image changes only between the heads and the lower lumbar bodies."""
    base = PhantomConfig(long_side=256, noise=(0.0, 0.0))
    kw = {"schema": "lumbopelvic_sagittal"}  # with the femoral head centres
    low_img, low = generate_phantom(5, replace(base, ilium_shift_mm=(1e-6, 1e-6)), **kw)
    high_img, high = generate_phantom(5, replace(base, ilium_shift_mm=(40.0, 40.0)), **kw)
    assert np.array_equal(low.points, high.points, equal_nan=True)
    diff = np.abs(np.asarray(high_img, float) - np.asarray(low_img, float))
    top = int(np.nanmin(low.points[S.level_indices("L1")][:, 1]))
    lo, hi = (int(np.nanmin(low.points[S.level_indices("L4")][:, 1])),
              int(np.nanmax(low.points[S.level_indices("S1")][:, 1])))
    # the display window shifts every pixel a little; the wing itself changes far more
    assert diff[lo:hi].mean() > 5 * diff[:top].mean()


def test_endplate_rim_keeps_the_corners_and_the_depression() -> None:
    """A 40 x 30 mm box, its lower edge (edge 0, y = 0, inside at y > 0) 10 mm concave: the
    outline's depth at t = 0.5 is c / (1 + c / reach) = 10 / (1 + 10 / 30) = 7.5 mm with or
    without a rim; at t = 0.05 the arc (rim 0) is already 1.56 / (1 + 1.56 / 30) = 1.49 mm
    deep, while a 0.1 rim leaves the edge where it was."""
    from spinelandmarks.phantoms.canvas import _sd_convex

    box = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 30.0], [0.0, 30.0]])

    def sd(x: float, y: float, rim: float) -> float:
        return float(_sd_convex(np.array([[x]]), np.array([[y]]), box, 0.0,
                                [(0, 10.0, rim)])[0, 0])

    for rim in (0.0, 0.1):
        assert sd(20.0, 7.5, rim) == pytest.approx(0.0, abs=1e-4)
    arc = 1.5643446504 / (1.0 + 1.5643446504 / 30.0)  # 10 sin(0.05 pi) = 1.564
    assert sd(2.0, arc, 0.0) == pytest.approx(0.0, abs=1e-4)
    assert sd(2.0, 0.5, 0.1) == pytest.approx(-0.5, abs=1e-4)  # bone: 0.5 mm inside the edge
    assert sd(2.0, 0.5, 0.0) > 0.9  # the arc has removed it


def test_endplate_rim_changes_the_images_not_the_ground_truth() -> None:
    """A biconcave fracture drawn with and without the rim: same points (endplate middles
    included), other pixels; the rim must be in [0, 0.5)."""
    cfg = PhantomConfig(long_side=256, p_fracture=1.0)
    kw = {"schema": "lumbar_morphometry"}
    seed, (rim_img, rim) = next(
        (s, drawn) for s, drawn in ((s, generate_phantom(s, cfg, **kw)) for s in range(40))
        if "biconcave" in drawn[1].meta["synthetic"]["fracture_types"].values())
    arc_img, arc = generate_phantom(seed, replace(cfg, endplate_rim=0.0), **kw)
    assert np.array_equal(rim.points, arc.points, equal_nan=True)
    assert not np.array_equal(np.asarray(rim_img), np.asarray(arc_img))
    assert rim.masks != arc.masks
    with pytest.raises(ValueError, match="endplate_rim"):
        PhantomConfig(endplate_rim=0.5)
