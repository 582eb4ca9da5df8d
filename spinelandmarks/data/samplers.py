"""Samplers of the training datasets: every sample once per epoch, reproducible order and
augmentation seeds, optionally grouped by radiograph."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "GroupedEpochSampler"]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` pairs, shuffled or not, new seeds every epoch.

    The order and the seeds come from ``numpy.random.default_rng([seed, epoch])`` in the
    main process, so the augmentation of every sample is reproducible from ``seed`` and the
    epoch alone, whatever the number of workers and with persistent workers. ``epoch``
    advances by one after every iteration; Lightning's ``set_epoch`` overrides it.

    Parameters
    ----------
    num_samples : int
        Dataset length.
    shuffle : bool
        Random order per epoch.
    seed : int
        Base seed.
    weights : array-like, optional
        (num_samples,) non-negative sampling weights: an epoch is then ``num_samples``
        draws with replacement, each index with probability proportional to its weight
        (with ``shuffle`` only). None: every index once per epoch.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0,
                 weights: Sequence[float] | np.ndarray | None = None) -> None:
        self.num_samples = int(num_samples)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.p: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (self.num_samples,) or not np.isfinite(w).all() or (w < 0).any() \
                    or (self.num_samples and w.sum() <= 0):
                raise ValueError(f"weights must be {self.num_samples} finite non-negative "
                                 f"numbers with a positive sum, got shape {w.shape}")
            self.p = w / w.sum() if self.num_samples else w

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch])
        self.epoch += 1
        order, seeds = self._draw(rng)
        for i, s in zip(order, seeds, strict=True):
            yield int(i), int(s)

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's sample indices and their seeds, (num_samples,) int64 each."""
        if self.shuffle and self.p is not None:
            order = rng.choice(self.num_samples, self.num_samples, p=self.p)
        elif self.shuffle:
            order = rng.permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        seeds = rng.integers(0, 2**62, self.num_samples)
        if self.p is None:
            seeds = seeds[order]  # the seed belongs to the sample
        # Weighted, the seed belongs to the draw: a sample drawn twice is augmented twice.
        return order, seeds


class GroupedEpochSampler(EpochSampler):
    """:class:`EpochSampler` whose draws come grouped: all the crops of one radiograph in a
    row, the radiographs in random order.

    An epoch draws exactly the ``(index, sample_seed)`` pairs of :class:`EpochSampler` with
    the same ``seed`` and epoch (so the same samples with the same augmentation), then
    orders them by a random permutation of the groups; within a group the draws keep their
    random order. A radiograph is then decoded about once per epoch instead of once per crop
    (its crops follow each other, so the dataset's cache holds it while they are made), and
    every batch still mixes several radiographs. Without ``shuffle`` the draws keep the index
    order.

    Parameters
    ----------
    groups : sequence of int
        (num_samples,) the group (radiograph) of every sample, e.g.
        :attr:`CropDataset.groups`.
    shuffle, seed, weights
        As :class:`EpochSampler`.
    """

    def __init__(self, groups: Sequence[int] | np.ndarray, shuffle: bool = True,
                 seed: int = 0, weights: Sequence[float] | np.ndarray | None = None) -> None:
        self.groups = np.asarray(groups, dtype=np.int64).reshape(-1)
        super().__init__(len(self.groups), shuffle, seed, weights)
        _, self._group_index = np.unique(self.groups, return_inverse=True)

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        order, seeds = super()._draw(rng)
        if not self.shuffle or self.num_samples == 0:
            return order, seeds
        rank = rng.permutation(int(self._group_index.max()) + 1)[self._group_index[order]]
        grouped = np.argsort(rank, kind="stable")
        return order[grouped], seeds[grouped]
