"""Radiograph cache and grouped epoch sampler: each radiograph decoded once per epoch, samples
identical with and without the cache, reproducible whatever the number of workers."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.data.annotations import ImageRecord, read_coco
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.datasets import (
    CROP_SOURCE_OVERSAMPLE,
    CropDataset,
    EpochSampler,
    GroupedEpochSampler,
    ImageCache,
    LandmarkDataset,
    quantize,
)
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

CROP = (32, 32)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    return generate_dataset(root, 4, seed=5, config=PhantomConfig(long_side=384))


@pytest.fixture(scope="module")
def records(synth: Path) -> list[ImageRecord]:
    return read_coco(synth / "annotations.json")


def _runs(groups: list[int]) -> list[int]:
    return [g for g, _ in groupby(groups)]


@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_sampler_draws_epoch_sampler_pairs_grouped(weighted: bool) -> None:
    groups = np.repeat([3, 0, 2, 1], [5, 6, 4, 5])  # 20 crops of 4 radiographs
    weights = np.linspace(1.0, 4.0, 20) if weighted else None
    grouped = GroupedEpochSampler(groups, seed=7, weights=weights)
    plain = EpochSampler(20, seed=7, weights=weights)
    epochs = [list(grouped) for _ in range(2)]
    for epoch in epochs:
        # the same (index, seed) draws as EpochSampler: same samples, same augmentation
        assert sorted(epoch) == sorted(plain)
        runs = _runs([int(groups[i]) for i, _ in epoch])
        assert sorted(runs) == sorted(set(runs))  # every radiograph's crops in one run
        if not weighted:
            assert sorted(i for i, _ in epoch) == list(range(20))  # every crop once
    assert epochs[0] != epochs[1]  # new order and seeds every epoch
    grouped.set_epoch(0)
    assert list(grouped) == epochs[0]  # reproducible from seed and epoch
    ordered = list(GroupedEpochSampler(groups, shuffle=False, seed=7))
    assert [i for i, _ in ordered] == list(range(20))


def test_memory_cache_respects_its_byte_budget(tmp_path: Path) -> None:
    one = np.zeros((10, 10), np.uint16)  # 200 bytes
    cache = ImageCache("memory", max_bytes=500)
    computed: list[str] = []

    def get(name: str, px: np.ndarray = one) -> None:
        def compute() -> tuple[np.ndarray, tuple[int, int], None]:
            computed.append(name)
            return px.copy(), (10, 10), None

        cache.get(tmp_path / name, "v", compute)

    for name in ("a", "b", "c"):
        get(name)
        assert cache.nbytes <= 500
    assert cache.nbytes == 400  # "a" was evicted for "c"
    get("c")
    get("b")
    get("a")  # a miss again, evicting "c" (least recently used)
    assert computed == ["a", "b", "c", "a"] and (cache.hits, cache.misses) == (2, 4)
    get("big", np.zeros((30, 30), np.uint16))  # 1800 bytes: computed, not kept
    assert cache.nbytes == 400 and computed[-1] == "big"


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_crop_samples_identical_with_and_without_cache(records: list[ImageRecord],
                                                       synth: Path, tmp_path: Path,
                                                       mode: str) -> None:
    ref = CropDataset(records, synth, S, CROP, train=True, seed=3)
    cached = CropDataset(records, synth, S, CROP, train=True, seed=3,
                         cache=mode, cache_dir=tmp_path)  # type: ignore[arg-type]
    keys = [(i, 1000 + i) for i in range(0, len(ref), 3)]
    for _ in range(2):  # misses, then hits
        for key in keys:
            a, b = ref[key], cached[key]
            for name in ("image", "points", "matrix"):
                assert torch.equal(a[name].nan_to_num(-1), b[name].nan_to_num(-1)), name
    assert cached.cache.misses == len({ref.samples[i][0] for i, _ in keys})
    if mode == "disk":
        assert len(list(tmp_path.glob("*.npy"))) == cached.cache.misses
        again = CropDataset(records, synth, S, CROP, train=True, seed=3, cache="disk",
                            cache_dir=tmp_path)
        assert torch.equal(again[keys[0]]["image"], ref[keys[0]]["image"])
        assert (again.cache.hits, again.cache.misses) == (1, 0)  # memory-mapped, not decoded


def test_landmark_samples_identical_with_and_without_cache(records: list[ImageRecord],
                                                           synth: Path) -> None:
    ref = LandmarkDataset(records, synth, S, (96, 64), train=True)
    cached = LandmarkDataset(records, synth, S, (96, 64), train=True, cache="memory")
    for key in [(0, 11), (2, 12), (0, 13)]:
        assert torch.equal(ref[key]["image"], cached[key]["image"])
    assert (cached.cache.misses, cached.cache.hits) == (2, 1)


def test_crop_source_is_the_resolution_the_crops_need(records: list[ImageRecord],
                                                      synth: Path) -> None:
    ds = CropDataset(records, synth, S, (16, 16), train=True)
    for ri, rec in enumerate(records):
        density = max(float(np.sqrt(abs(np.linalg.det(ds.crop_params(n)[0].numpy()[:2, :2]))))
                      for n, (r, _) in enumerate(ds.samples) if r == ri)
        scale = min(1.0, CROP_SOURCE_OVERSAMPLE * density / (1 - ds.jitter[1]))
        assert ds.source_size(ri) == (round(rec.height * scale), round(rec.width * scale))
        assert scale < 1.0  # 16-px crops of a 384-px phantom need less than full resolution
    big = CropDataset(records, synth, S, (256, 256))
    assert big.source_size(0) == (records[0].height, records[0].width)  # never upsampled


def test_grouped_epoch_decodes_each_radiograph_once(synth: Path) -> None:
    dm = SpineDataModule(str(synth), task="crops", crop_size=CROP, batch_size=4,
                         num_workers=0, split=(1.0, 0.0, 0.0), cache="memory",
                         cache_bytes=1, persistent_workers=False)  # keeps no radiograph...
    dm.setup("fit")
    ds = dm.dataset("train")
    assert isinstance(ds, CropDataset)
    largest = max(quantize(np.zeros(ds.source_size(i))).nbytes for i in range(len(ds.records)))
    ds.cache.max_bytes = int(largest * 1.5)  # ...but one radiograph
    n = sum(len(batch) for batch in dm.train_dataloader())
    assert n == len(ds)
    assert ds.cache.misses == len(dm.train_records)  # one decode per radiograph and epoch


def test_grouped_loader_same_batches_with_any_number_of_workers(synth: Path) -> None:
    batches = []
    for workers in (0, 2):
        dm = SpineDataModule(str(synth), task="crops", crop_size=CROP, batch_size=5,
                             num_workers=workers, split=(1.0, 0.0, 0.0), cache="memory",
                             persistent_workers=False, pin_memory=False)
        dm.setup("fit")
        loader = dm.train_dataloader()
        batches.append([b for _ in range(2) for b in loader])  # two epochs
    for a, b in zip(*batches, strict=True):
        assert a.image_ids == b.image_ids
        assert torch.equal(a.images, b.images)
