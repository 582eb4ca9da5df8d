"""Patient-aware train / validation / test splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np

__all__ = ["split_records"]


class _HasPatient(Protocol):
    @property
    def patient_id(self) -> str | None: ...


R = TypeVar("R", bound=_HasPatient)


def split_records(records: Sequence[R], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> tuple[list[R], list[R], list[R]]:
    """Split records into train / validation / test without sharing a patient between sets.

    Records are grouped by ``patient_id`` (a record without one, None or ``""``, is a group of
    its own). The groups are shuffled with ``numpy.random.default_rng(seed)`` and assigned one
    by one, each to the set furthest below its target image count (``fraction * n_images``;
    ties go to the earlier set). A set with fraction 0 receives nothing.

    Parameters
    ----------
    records : sequence of ImageRecord (anything with a ``patient_id``)
    fractions : (float, float, float)
        Target shares of images in train, validation and test; non-negative, summing to 1.
    seed : int
        Seed of the shuffle; the same records, order and seed give the same split.

    Returns
    -------
    (train, val, test) : tuple of lists
        Records in their input order within each set.

    Raises
    ------
    ValueError
        Invalid fractions.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or not np.isfinite(fr).all() or (fr < 0).any():
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions!r}")
    if abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {fr.sum():.6g})")

    groups: dict[tuple[str, object], list[int]] = {}
    for i, rec in enumerate(records):
        pid = rec.patient_id
        key: tuple[str, object] = ("patient", str(pid)) if pid not in (None, "") else ("record", i)
        groups.setdefault(key, []).append(i)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))

    targets = fr * len(records)
    counts = np.zeros(3)
    assign = np.zeros(len(records), dtype=np.int64)
    for g in order:
        s = int(np.argmax(targets - counts))
        assign[members[g]] = s
        counts[s] += len(members[g])
    out: tuple[list[R], list[R], list[R]] = ([], [], [])
    for i, rec in enumerate(records):
        out[int(assign[i])].append(rec)
    return out
