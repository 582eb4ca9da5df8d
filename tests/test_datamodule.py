"""Datasets and DataModule: shapes, exact matrices, pixels that follow the points, seeding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.data.annotations import ImageRecord, read_coco, write_coco
from spinelandmarks.data.batch import LandmarkBatch
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.datasets import (
    AugmentConfig,
    CropDataset,
    DetectionDataset,
    EpochSampler,
    LandmarkDataset,
    detection_boxes,
    reference_height_loss,
)
from spinelandmarks.data.intensity import NORMALIZE_PERCENTILES
from spinelandmarks.data.io import write_png16
from spinelandmarks.geometry import transform_points
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

N_IMAGES = 8
INPUT = (256, 192)
GEOMETRIC_ONLY = AugmentConfig(photometric=False)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_dataset(root, N_IMAGES, seed=3, config=PhantomConfig(long_side=256))


@pytest.fixture(scope="module")
def records(synth: Path) -> list[ImageRecord]:
    return read_coco(synth / "annotations.json")


@pytest.fixture(scope="module")
def dots(tmp_path_factory: pytest.TempPathFactory, records: list[ImageRecord]) -> Path:
    """Dark images with a bright disk (radius 4 px) on every ground-truth point."""
    root = tmp_path_factory.mktemp("dots")
    out: list[ImageRecord] = []
    for k, rec in enumerate(records[:4]):
        w, h = rec.width * 2, rec.height * 2  # ~512 px: downsampled to the input
        pts = rec.points * 2
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        img = np.zeros((h, w), np.float32)
        for x, y in pts[rec.visibility > 0]:
            img[(xx - x) ** 2 + (yy - y) ** 2 <= 16.0] = 1.0
        name = f"images/dots{k}.png"
        write_png16(root / name, img)
        out.append(dataclasses.replace(rec, file_name=name, width=w, height=h, points=pts,
                                       image_id=k + 1))
    write_coco(out, S, root / "annotations.json")
    return root


def _at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Intensity of the pixel containing each finite point; (n,)."""
    img = image[0]
    p = points[torch.isfinite(points).all(-1)]
    ix = p[:, 0].floor().long().clamp(0, img.shape[1] - 1)
    iy = p[:, 1].floor().long().clamp(0, img.shape[0] - 1)
    return img[iy, ix]


# -- samples ---------------------------------------------------------------------------------
def test_sample_shapes_and_dtypes(records: list[ImageRecord], synth: Path) -> None:
    lm = LandmarkDataset(records, synth, S, INPUT)[0]
    det = DetectionDataset(records, synth, S, INPUT, train=True)[1]
    crop = CropDataset(records, synth, S, (64, 64), train=True)[2]
    for s, (h, w), p in ((lm, INPUT, 22), (det, INPUT, 22), (crop, (64, 64), 4)):
        assert s["image"].shape == (1, h, w) and s["image"].dtype == torch.float32
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert s["points"].shape == (p, 2) and s["points"].dtype == torch.float32
        assert s["visibility"].shape == (p,) and s["visibility"].dtype == torch.int64
        assert s["matrix"].shape == (3, 3) and s["matrix"].dtype == torch.float64
        assert s["pixel_spacing"].shape == (2,) and s["pixel_spacing"].dtype == torch.float32
        assert torch.isfinite(s["pixel_spacing"]).all()  # the phantoms know their spacing
        assert isinstance(s["image_id"], str) and s["image_id"].startswith("images/")
        assert (torch.isnan(s["points"]).any(-1) == (s["visibility"] == 0)).all()
    assert det["boxes"].shape[1] == 4 and det["boxes"].dtype == torch.float32
    assert det["labels"].dtype == torch.int64 and len(det["labels"]) == len(det["boxes"])
    assert crop["level"].dtype == torch.int64 and crop["level"].ndim == 0


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("kind", ["landmarks", "detection", "crops"])
def test_matrix_is_exact(records: list[ImageRecord], synth: Path, train: bool,
                         kind: str) -> None:
    ds: LandmarkDataset | CropDataset
    if kind == "crops":
        ds = CropDataset(records, synth, S, (96, 96), train=train)
    else:
        cls = DetectionDataset if kind == "detection" else LandmarkDataset
        ds = cls(records, synth, S, INPUT, train=train)
    checked = 0
    for i in range(0, len(ds), max(1, len(ds) // 6)):
        s = ds[i]
        if kind == "crops":
            ri, li = ds.samples[i]  # type: ignore[union-attr]
            gt = torch.full((4, 2), float("nan"), dtype=torch.float64)
            idx = S.level_indices(S.levels[li].name)
            gt[: len(idx)] = torch.as_tensor(records[ri].points[idx])
        else:
            gt = torch.as_tensor(records[i].points)
        mapped = transform_points(gt, s["matrix"])
        m = s["visibility"] > 0
        assert m.any()
        torch.testing.assert_close(mapped[m].float(), s["points"][m], atol=1e-3, rtol=0)
        checked += int(m.sum())
    assert checked > 10


def test_no_augmentation_matrix_is_letterbox(records: list[ImageRecord], synth: Path) -> None:
    from spinelandmarks.geometry import letterbox_matrix

    s = LandmarkDataset(records, synth, S, INPUT, train=True, augment=False)[0]
    m, _ = letterbox_matrix((records[0].height, records[0].width), INPUT)
    torch.testing.assert_close(s["matrix"], m)


# -- pixels follow the points ----------------------------------------------------------------
def test_points_on_anatomy_after_augmentation(dots: Path) -> None:
    recs = read_coco(dots / "annotations.json")
    ds = LandmarkDataset(recs, dots, S, INPUT, train=True, augment=GEOMETRIC_ONLY, seed=11)
    n_pts = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            vals = _at(s["image"], s["points"])
            assert float(vals.min()) > 0.6, vals
            assert float(s["image"].mean()) < 0.1
            n_pts += len(vals)
    assert n_pts > 100
    # Also with photometric augmentation the dots stay the bright spots.
    ds = LandmarkDataset(recs, dots, S, INPUT, train=True, seed=5)
    for i in range(len(ds)):
        s = ds[i]
        assert float(_at(s["image"], s["points"]).mean()) > float(s["image"].mean()) + 0.3


def test_points_on_anatomy_in_crops(dots: Path) -> None:
    recs = read_coco(dots / "annotations.json")
    ds = CropDataset(recs, dots, S, (64, 64), train=True, augment=GEOMETRIC_ONLY, seed=2,
                     jitter=(0.1, 0.15, 10.0))
    for i in range(len(ds)):
        s = ds[i]
        vals = _at(s["image"], s["points"])
        assert len(vals) >= 2
        assert float(vals.min()) > 0.6, (i, vals)
        assert float(s["image"].mean()) < 0.2


def test_horizontal_flip_keeps_names(records: list[ImageRecord], synth: Path) -> None:
    flip = AugmentConfig(photometric=False, rotate_deg=0.0, scale=(1.0, 1.0),
                         translate_frac=0.0, hflip_p=1.0)
    plain = LandmarkDataset(records, synth, S, INPUT)[0]
    flipped = LandmarkDataset(records, synth, S, INPUT, train=True, augment=flip)[0]
    w = INPUT[1]
    m = plain["visibility"] > 0
    torch.testing.assert_close(flipped["points"][m, 0], w - plain["points"][m, 0], atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(flipped["points"][m, 1], plain["points"][m, 1])
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1), atol=1e-5, rtol=0)
    a, p = S.index("L3", "anterior_superior"), S.index("L3", "posterior_superior")
    d_plain = plain["points"][a, 0] - plain["points"][p, 0]
    d_flip = flipped["points"][a, 0] - flipped["points"][p, 0]
    assert float(d_plain) * float(d_flip) < 0  # same names, mirrored relation


def test_points_leaving_the_image(records: list[ImageRecord], synth: Path) -> None:
    zoom = AugmentConfig(photometric=False, rotate_deg=0.0, scale=(3.0, 3.0),
                         translate_frac=0.0, hflip_p=0.0)
    ds = LandmarkDataset(records, synth, S, INPUT, train=True, augment=zoom)
    for i in range(3):
        s = ds[i]
        raw = transform_points(torch.as_tensor(records[i].points), s["matrix"])
        x, y = raw[:, 0], raw[:, 1]
        inside = (x >= 0) & (x <= INPUT[1]) & (y >= 0) & (y <= INPUT[0])
        labelled = torch.as_tensor(records[i].visibility > 0)
        out = labelled & ~inside
        assert out.any()
        assert torch.isnan(s["points"][out]).all() and (s["visibility"][out] == 0).all()
        keep = labelled & inside
        assert torch.isfinite(s["points"][keep]).all() and (s["visibility"][keep] > 0).all()


def test_detection_boxes_contain_points(records: list[ImageRecord], synth: Path) -> None:
    ds = DetectionDataset(records, synth, S, INPUT)
    for i in range(len(ds)):
        s = ds[i]
        for box, lab in zip(s["boxes"], s["labels"], strict=True):
            lv = S.levels[int(lab) - 1].name
            p = s["points"][S.level_indices(lv)]
            p = p[torch.isfinite(p).all(-1)]
            assert (p[:, 0] >= box[0] - 1e-4).all() and (p[:, 0] <= box[2] + 1e-4).all()
            assert (p[:, 1] >= box[1] - 1e-4).all() and (p[:, 1] <= box[3] + 1e-4).all()
    # S1: the box extends caudally (down, towards the sacrum) beyond the plate.
    pts = torch.as_tensor(records[0].points)
    vis = torch.as_tensor(records[0].visibility)
    boxes, labels = detection_boxes(pts, vis, S, (records[0].height, records[0].width))
    s1 = S.level_indices("S1")
    if bool((vis[s1] > 0).all()) and 6 in labels.tolist():
        b = boxes[labels.tolist().index(6)]
        plate_y = float(pts[s1, 1].max())
        l5 = pts[S.level_indices("L5")]
        l5_h = float(torch.linalg.norm(l5[0] - l5[3]))
        assert float(b[3]) > plate_y + 0.5 * l5_h or float(b[3]) >= records[0].height - 1e-3


def test_detection_boxes_missing_levels() -> None:
    pts = torch.full((22, 2), float("nan"), dtype=torch.float64)
    vis = torch.zeros(22, dtype=torch.int64)
    idx = S.level_indices("L2")
    pts[idx] = torch.tensor([[60.0, 40.0], [20.0, 42.0], [21.0, 70.0], [61.0, 68.0]],
                            dtype=torch.float64)
    vis[idx] = 2
    boxes, labels = detection_boxes(pts, vis, S, (200, 100))
    assert labels.tolist() == [2]
    torch.testing.assert_close(boxes[0], torch.tensor([13.85, 35.5, 67.15, 74.5]))


def test_epoch_sampler_reproducible() -> None:
    a, b = EpochSampler(10, seed=4), EpochSampler(10, seed=4)
    first = list(a)
    assert first == list(b) and sorted(i for i, _ in first) == list(range(10))
    assert list(a) != first  # next epoch: new order and seeds
    b.set_epoch(0)
    assert list(b) == first


def test_cache_modes_agree(records: list[ImageRecord], synth: Path, tmp_path: Path) -> None:
    ref = LandmarkDataset(records[:2], synth, S, INPUT)[1]["image"]
    for mode in ("memory", "disk"):
        ds = LandmarkDataset(records[:2], synth, S, INPUT, cache=mode, cache_dir=tmp_path)
        for _ in range(2):  # miss, then hit: the same sample exactly
            assert torch.equal(ds[1]["image"], ref)
        assert (ds.cache.misses, ds.cache.hits) == (1, 1)
    assert len(list(tmp_path.glob("*.npy"))) == 1


# -- DataModule ------------------------------------------------------------------------------
def _dm(synth: Path, **kw: object) -> SpineDataModule:
    args: dict[str, object] = dict(input_size=INPUT, crop_size=(48, 48), batch_size=3,
                                   num_workers=0, split=(0.5, 0.25, 0.25), seed=0)
    args.update(kw)
    return SpineDataModule(str(synth), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["landmarks", "detection", "crops"])
def test_datamodule_loaders(synth: Path, task: str) -> None:
    dm = _dm(synth, task=task)
    dm.setup("fit")
    n = len(dm.train_records) + len(dm.val_records) + len(dm.test_records)
    assert n == N_IMAGES and dm.train_records and dm.val_records and dm.test_records
    assert dm.hparams["schema"] == S.to_dict()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(),
                   dm.predict_dataloader()):
        batch = next(iter(loader))
        assert isinstance(batch, LandmarkBatch)
        assert 1 <= len(batch) <= 3
        if task == "crops":
            assert batch.images.shape[1:] == (1, 48, 48) and batch.points.shape[1:] == (4, 2)
            assert batch.levels is not None and batch.levels.shape == (len(batch),)
        else:
            assert batch.images.shape[1:] == (1, *INPUT) and batch.points.shape[1:] == (22, 2)
            assert batch.levels is None
        assert batch.matrices.shape == (len(batch), 3, 3)
        assert (len(batch.boxes) == len(batch)) == (task == "detection")
    # training draws with the dataset's deformity weights; evaluation draws every sample once
    weighted = _dm(synth, task=task, deformity_weight=4.0)
    weighted.setup("fit")
    ds = weighted.dataset("train")
    assert isinstance(ds, CropDataset | LandmarkDataset)
    w = ds.deformity_weights(4.0)
    p = weighted.train_dataloader().sampler.p  # type: ignore[attr-defined]
    np.testing.assert_allclose(p, w / w.sum())
    assert weighted.val_dataloader().sampler.p is None  # type: ignore[attr-defined]


def test_split_is_patient_disjoint(tmp_path: Path, records: list[ImageRecord],
                                   synth: Path) -> None:
    # Two images per patient.
    recs = [dataclasses.replace(r, patient_id=f"p{i // 2}") for i, r in enumerate(records)]
    (tmp_path / "images").symlink_to(synth / "images")
    write_coco(recs, S, tmp_path / "annotations.json")
    dm = _dm(tmp_path, split=(0.5, 0.25, 0.25))
    dm.setup()
    sets = [{r.patient_id for r in rs} for rs in (dm.train_records, dm.val_records,
                                                 dm.test_records)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(s) for s in sets) == N_IMAGES // 2


def test_val_dir(synth: Path, dots: Path) -> None:
    dm = _dm(synth, val_dir=str(dots), split=(0.8, 0.1, 0.1))
    dm.setup()
    assert len(dm.val_records) == 4 and all("dots" in r.file_name for r in dm.val_records)
    assert len(dm.train_records) + len(dm.test_records) == N_IMAGES
    batch = next(iter(dm.val_dataloader()))
    assert batch.image_ids[0].startswith("images/dots")


def _first_batch(dm: SpineDataModule) -> LandmarkBatch:
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_determinism(synth: Path) -> None:
    a, b = _first_batch(_dm(synth)), _first_batch(_dm(synth))
    assert a.image_ids == b.image_ids
    assert torch.equal(a.images, b.images) and torch.equal(a.matrices, b.matrices)
    assert torch.equal(a.points.nan_to_num(-1), b.points.nan_to_num(-1))
    c = _first_batch(_dm(synth, seed=1))
    assert not torch.equal(a.matrices, c.matrices)
    # A second epoch draws new augmentation.
    dm = _dm(synth)
    dm.setup("fit")
    loader = dm.train_dataloader()
    e0, e1 = next(iter(loader)), next(iter(loader))
    assert not torch.equal(e0.matrices, e1.matrices)


@pytest.mark.slow
def test_two_workers_match_main_process(synth: Path) -> None:
    main = _first_batch(_dm(synth, num_workers=0))
    for task in ("landmarks", "crops"):
        dm = _dm(synth, num_workers=2, task=task)
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        assert all(isinstance(b, LandmarkBatch) for b in batches)
        assert sum(len(b) for b in batches) == len(dm.dataset("train"))  # type: ignore[arg-type]
        if task == "landmarks":
            # Worker-independent augmentation: identical to the in-process loader.
            assert torch.equal(batches[0].images, main.images)
            assert torch.equal(batches[0].matrices, main.matrices)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory, records: list[ImageRecord]) -> Path:
    """One image whose intensity is linear in (x, y): any correct resampling is exact on it."""
    root = tmp_path_factory.mktemp("ramp")
    rec = records[0]
    h, w = 300, 230
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    write_png16(root / "images/ramp.png", (0.5 * xx / w + 0.5 * yy / h).astype(np.float32))
    scale = np.array([w / rec.width, h / rec.height])
    write_coco([dataclasses.replace(rec, file_name="images/ramp.png", width=w, height=h,
                                    points=rec.points * scale)], S, root / "annotations.json")
    return root


def _check_ramp(sample: dict[str, torch.Tensor], size: tuple[int, int]) -> None:
    """Sample pixels equal the ramp at the matrix preimage of their centres (sub-pixel check)."""
    h, w = sample["image"].shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centres = torch.stack((xx, yy), -1).reshape(-1, 2).double()
    src = transform_points(centres, torch.linalg.inv(sample["matrix"]))
    inside = ((src[:, 0] > 3) & (src[:, 0] < size[1] - 3) & (src[:, 1] > 3)
              & (src[:, 1] < size[0] - 3))
    # The datasets window every image between its own percentiles (robust_normalize), an affine
    # map of the ramp clipped at both ends; pixels near the clip kinks are left out.
    yy_src, xx_src = np.mgrid[0:size[0], 0:size[1]] + 0.5
    lo, hi = np.percentile(0.5 * xx_src / size[1] + 0.5 * yy_src / size[0], NORMALIZE_PERCENTILES)
    ramp = 0.5 * src[:, 0] / size[1] + 0.5 * src[:, 1] / size[0]
    expected = (ramp - lo) / (hi - lo)
    inside &= (expected > 0.02) & (expected < 0.98)
    got = sample["image"].reshape(-1).double()
    assert int(inside.sum()) > 0.3 * h * w
    # A half-pixel slip would cost ~1e-3 everywhere. INTER_AREA at non-integer ratios has an
    # unbiased per-pixel wobble of ~1.5e-4 (like antialiased interpolate), hence two bounds.
    err = got[inside] - expected[inside]
    assert float(err.mean().abs()) < 5e-5
    assert float(err.abs().max()) < 4e-4


@pytest.mark.parametrize("train", [False, True])
def test_pixels_agree_with_matrix_subpixel(ramp: Path, train: bool) -> None:
    recs = read_coco(ramp / "annotations.json")
    for size in (INPUT, (512, 384)):  # downsampling and upsampling
        ds = LandmarkDataset(recs, ramp, S, size, train=train, augment=GEOMETRIC_ONLY)
        for epoch in range(3):
            ds.set_epoch(epoch)
            _check_ramp(ds[0], (300, 230))
    crops = CropDataset(recs, ramp, S, (32, 32), train=train, augment=GEOMETRIC_ONLY)
    for i in range(len(crops)):  # crops of ~60 px to 32 px: k = 2 supersampling
        _check_ramp(crops[i], (300, 230))


def test_epoch_sampler_weights() -> None:
    s = EpochSampler(4, seed=1, weights=[1.0, 1.0, 1.0, 7.0])
    draws = [i for _ in range(200) for i, _ in s]
    share = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(share, [0.1, 0.1, 0.1, 0.7], atol=0.03)
    s.set_epoch(3)
    epoch3 = list(s)
    assert len(epoch3) == 4
    s.set_epoch(3)
    assert list(s) == epoch3
    with pytest.raises(ValueError, match="non-negative"):
        EpochSampler(3, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="3 finite"):
        EpochSampler(3, weights=[1.0, 1.0])


def test_deformity_weights(records: list[ImageRecord], synth: Path) -> None:
    """A body given a 30 % anterior wedge is drawn ``weight`` times as often."""
    rec = records[0]
    pts = rec.points.copy()
    a_sup, a_inf, p_sup, p_inf = (S.index("L3", n) for n in (
        "anterior_superior", "anterior_inferior", "posterior_superior", "posterior_inferior"))
    hp = np.linalg.norm(pts[p_inf] - pts[p_sup])
    wall = (pts[a_inf] - pts[a_sup]) / np.linalg.norm(pts[a_inf] - pts[a_sup])
    pts[a_inf] = pts[a_sup] + 0.7 * hp * wall  # Ha / Hp = 0.7: height loss 30 %
    wedged = dataclasses.replace(rec, points=pts)
    ds = CropDataset([rec, wedged], synth, S, (32, 32))
    w = ds.deformity_weights(4.0)
    l3 = S.level_names.index("L3")
    by_sample = dict(zip(ds.samples, w.tolist(), strict=True))
    assert by_sample[(1, l3)] == 4.0
    assert by_sample[(0, l3)] == 1.0  # the phantom's own L3 is not deformed
    assert by_sample[(1, l3 + 3)] == 1.0  # S1: no body, never weighted
    assert set(w.tolist()) <= {1.0, 4.0}
    assert (ds.deformity_weights(1.0) == 1.0).all()
    # whole radiographs: the mean of their five bodies' weights, so one more deformed body
    # of five adds (4 - 1) / 5 = 0.6
    images = LandmarkDataset([rec, wedged], synth, S, (64, 48))
    w_img = images.deformity_weights(4.0)
    assert w_img[1] - w_img[0] == pytest.approx(0.6) and w_img[0] >= 1.0
    assert (images.deformity_weights(1.0) == 1.0).all()
    loss = reference_height_loss([rec, wedged], S)
    assert loss.shape == (2, 5) and loss[1, 2] == pytest.approx(0.3)


def test_detection_boxes_femoral_heads() -> None:
    """The FH box: the centres widened by a head radius (0.85 mean body height), + margin."""
    from spinelandmarks.schema import LUMBOPELVIC_SAGITTAL as LP
    pts = torch.full((LP.num_points, 2), float("nan"), dtype=torch.float64)
    vis = torch.zeros(LP.num_points, dtype=torch.int64)
    l5, fh = LP.level_indices("L5"), LP.level_indices("FH")
    pts[l5] = torch.tensor([[130.0, 100.0], [90.0, 100.0], [90.0, 130.0], [130.0, 130.0]],
                           dtype=torch.float64)  # walls of 30 px
    pts[fh] = torch.tensor([[100.0, 200.0], [110.0, 204.0]], dtype=torch.float64)
    vis[l5], vis[fh] = 2, 2
    boxes, labels = detection_boxes(pts, vis, LP, (300, 200))
    assert labels.tolist() == [5, 7]
    # Before the margin: x 100-25.5 .. 110+25.5, y 200-25.5 .. 204+25.5 (61 x 55 px);
    # the 0.15 margin adds 9.15 px in x and 8.25 px in y.
    torch.testing.assert_close(boxes[1], torch.tensor([65.35, 166.25, 144.65, 237.75]))
