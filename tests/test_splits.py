"""Patient-aware splits."""

from __future__ import annotations

import numpy as np
import pytest

from spinelandmarks.data.annotations import ImageRecord
from spinelandmarks.data.splits import split_records
from spinelandmarks.schema import LUMBAR_SAGITTAL as S


def make_records(seed: int = 0) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    recs: list[ImageRecord] = []
    for p in range(60):
        for k in range(int(rng.integers(1, 5))):
            recs.append(ImageRecord.empty(S, f"p{p}_{k}.png", 8, 8, image_id=len(recs) + 1,
                                          patient_id=f"P{p:03d}"))
    for k in range(20):  # no patient id: each is its own group
        recs.append(ImageRecord.empty(S, f"anon{k}.png", 8, 8, image_id=len(recs) + 1,
                                      patient_id=None if k % 2 else ""))
    return recs


def test_patients_disjoint_and_complete() -> None:
    recs = make_records()
    train, val, test = split_records(recs, (0.7, 0.15, 0.15), seed=3)
    names = [r.file_name for part in (train, val, test) for r in part]
    assert sorted(names) == sorted(r.file_name for r in recs)  # every record exactly once
    pids = [{r.patient_id for r in part if r.patient_id} for part in (train, val, test)]
    assert not (pids[0] & pids[1] or pids[0] & pids[2] or pids[1] & pids[2])
    # records keep their input order within a set
    for part in (train, val, test):
        ids = [r.image_id for r in part]
        assert ids == sorted(ids)


def test_fractions_roughly_matched() -> None:
    recs = make_records()
    n = len(recs)
    for fractions in [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0)]:
        parts = split_records(recs, fractions, seed=0)
        for part, f in zip(parts, fractions, strict=True):
            assert abs(len(part) - f * n) <= 4  # at most one patient (<= 4 images) off
        if fractions[2] == 0:
            assert parts[2] == []


def test_deterministic_and_seed_dependent() -> None:
    recs = make_records()
    a = split_records(recs, seed=5)
    b = split_records(recs, seed=5)
    c = split_records(recs, seed=6)
    key = [[r.file_name for r in part] for part in a]
    assert key == [[r.file_name for r in part] for part in b]
    assert key != [[r.file_name for r in part] for part in c]


def test_small_exact_split() -> None:
    recs = [ImageRecord.empty(S, f"{i}.png", 4, 4, image_id=i) for i in range(10)]
    train, val, test = split_records(recs)
    assert (len(train), len(val), len(test)) == (8, 1, 1)


def test_invalid_fractions() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_records([], (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        split_records([], (1.2, -0.1, -0.1))
    assert split_records([]) == ([], [], [])
