"""Overlays drawn and encoded off the prediction's critical path, in worker threads.

The prediction loop hands each batch's overlays to :class:`OverlayQueue` together with the
batch's *commit* (its journal append) and goes on with the next batch. A commit runs, in batch
order and in the calling thread, only once every overlay of its batch is on disk (each written
atomically): an image is never journaled as done without its overlay, so a run killed at any
moment redraws on resume exactly the overlays it may lack, and the final files equal those of
an uninterrupted run. Drawing (Pillow, OpenCV) and encoding (zlib, libjpeg) release the GIL for
most of their time, so threads overlap with the networks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from .data.io import Radiograph
from .inference import SpineLandmarkPipeline, SpineResult
from .overlay import draw_overlay, save_overlay

__all__ = ["OverlayJob", "OverlayQueue"]

#: One overlay to write: output file (``.png`` or ``.jpg``), radiograph, its result.
OverlayJob = tuple[Path, Radiograph, SpineResult]


def _draw_and_save(job: OverlayJob, pipeline: SpineLandmarkPipeline,
                   max_side: int | None) -> None:
    path, rad, res = job
    save_overlay(path, draw_overlay(rad, res, pipeline, max_side))


class OverlayQueue:
    """Draw and save overlays in ``threads`` worker threads; run each batch's commit once its
    overlays are written, in submission order.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
        Gives the schema and the fracture grading of the overlays.
    max_side : int, optional
        Long side of the overlays in pixels (:func:`~spinelandmarks.overlay.draw_overlay`);
        None: full resolution.
    threads : int
        Worker threads; 0 draws in the calling thread (no overlap).
    max_pending : int
        Batches whose overlays may be in flight; past that, :meth:`submit` waits for the
        oldest (bounds the radiographs held in memory).
    """

    def __init__(self, pipeline: SpineLandmarkPipeline, max_side: int | None = None,
                 threads: int = 2, max_pending: int = 4) -> None:
        self.pipeline = pipeline
        self.max_side = max_side
        self.max_pending = max(1, int(max_pending))
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix="overlay")
                      if threads > 0 else None)
        self._pending: deque[tuple[list[Future[None]], Callable[[], None]]] = deque()

    def submit(self, jobs: Sequence[OverlayJob], commit: Callable[[], None]) -> None:
        """Queue one batch's overlays; ``commit()`` runs once they are all written (in this
        thread, during a later :meth:`submit` or :meth:`flush`)."""
        if self._pool is None:
            for job in jobs:
                _draw_and_save(job, self.pipeline, self.max_side)
            self._pending.append(([], commit))
        else:
            futures = [self._pool.submit(_draw_and_save, job, self.pipeline, self.max_side)
                       for job in jobs]
            self._pending.append((futures, commit))
        self._commit_ready(wait_oldest=len(self._pending) > self.max_pending)

    def _commit_ready(self, wait_oldest: bool = False) -> None:
        while self._pending:
            futures, commit = self._pending[0]
            if wait_oldest:
                wait(futures)
                wait_oldest = False
            elif not all(f.done() for f in futures):
                return
            for f in futures:
                f.result()  # an overlay that failed fails the run, before its commit
            self._pending.popleft()
            commit()

    def flush(self) -> None:
        """Wait for every queued overlay and run every pending commit."""
        while self._pending:
            self._commit_ready(wait_oldest=True)

    def close(self) -> None:
        """:meth:`flush`, then stop the threads."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
