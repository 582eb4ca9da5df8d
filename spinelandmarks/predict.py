"""Batch prediction on files: the engine of ``spinelandmarks predict``.

Runs through Lightning's ``Trainer.predict`` on one CPU as on several GPUs or nodes
(``devices``, ``num_nodes``, ``strategy``): each process decodes its share of the files in
DataLoader workers, predicts them and appends the results to its own journal shard
(:class:`ShardWriter`, a ``BasePredictionWriter``); rank 0 then merges the shards and
assembles ``predictions.json``, ``predictions_step1.json``, ``measurements.csv`` and
``failures.csv`` in input order (:mod:`spinelandmarks.prediction_store`). A file that cannot
be read or predicted is reported and skipped; the others finish; a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from torch.utils.data import DataLoader, Dataset

from ._output import quiet_lightning
from .adaptation.shift import SUMMARY, summarize, write_summary
from .content_digest import pipeline_digest
from .data.io import ImageReadError, Radiograph, read_image
from .inference import SpineLandmarkPipeline, SpineResult
from .overlay import OVERLAY_MAX_SIDE, draw_overlay
from .overlay_writer import OverlayQueue
from .prediction_store import (
    JOURNAL,
    PredictionJournal,
    assemble_outputs,
    file_key,
    prepare_output_folder,
    write_failures,
)

__all__ = ["PipelinePredictor", "ShardWriter", "draw_overlay", "predict_files",
           "resolve_pipeline_dir"]

_log = logging.getLogger(__name__)
_SHARDS = "shards"


def resolve_pipeline_dir(run: str | os.PathLike[str]) -> Path:
    """``RUN/pipeline`` of a training run, or RUN itself if it is a pipeline directory."""
    p = Path(run)
    if (p / "pipeline" / "pipeline.json").is_file():
        return p / "pipeline"
    if (p / "pipeline.json").is_file():
        return p
    raise FileNotFoundError(f"{p}: neither a training run nor a pipeline directory "
                            "(no pipeline.json)")


def _accelerator(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        return "gpu"
    return "gpu" if accelerator == "auto" and torch.cuda.is_available() else "cpu"


class _Decode(Dataset[tuple[int, "Radiograph | str"]]):
    """Files decoded in DataLoader workers: ``(input index, Radiograph or the error message)``."""

    def __init__(self, files: Sequence[Path], indices: Sequence[int]) -> None:
        self.files, self.indices = list(files), list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[int, Radiograph | str]:
        i = self.indices[j]
        try:
            return i, read_image(self.files[i])
        except (ImageReadError, OSError, ValueError) as exc:
            return i, str(exc)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class _StopRequest:
    """SIGINT / SIGTERM ask the run to stop after the batch in flight (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _PredictBar(TQDMProgressBar):
    """One bar named ``predict`` counting batches (Lightning's says "Predicting DataLoader 0")."""

    def init_predict_tqdm(self) -> Any:
        bar = super().init_predict_tqdm()
        bar.set_description("predict")
        return bar

    def on_predict_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_predict_batch_start(trainer, *args, **kwargs)
        self.predict_progress_bar.set_description("predict")


class _Stopped(Exception):
    """Raised by the writer to end ``Trainer.predict`` after a stop request."""


Entry = tuple[int, SpineResult, Radiograph]
Failure = tuple[int, str, str]


class PipelinePredictor(L.LightningModule):
    """A :class:`~spinelandmarks.pipeline.SpineLandmarkPipeline` as a LightningModule for
    ``Trainer.predict``: a batch is a list of ``(input index, Radiograph or error)``; the
    prediction is ``(entries, failures)`` with ``(index, result, radiograph)`` and
    ``(index, stage, reason)``."""

    def __init__(self, pipeline: SpineLandmarkPipeline, precision: str = "32") -> None:
        super().__init__()
        self.pipeline = pipeline
        self.pipeline_precision = precision

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        return batch  # radiographs stay on the host; the pipeline moves its tensors

    def predict_step(self, batch: list[tuple[int, Radiograph | str]], batch_idx: int
                     ) -> tuple[list[Entry], list[Failure]]:
        failures: list[Failure] = [(i, "read", x) for i, x in batch if isinstance(x, str)]
        good = [(i, x) for i, x in batch if not isinstance(x, str)]
        if not good:
            return [], failures
        try:
            results = self.pipeline.predict([r for _, r in good], batch_size=len(good),
                                            precision=self.pipeline_precision)
        except (RuntimeError, ValueError) as exc:  # one bad batch must not stop the rest
            return [], failures + [(i, "predict", str(exc)) for i, _ in good]
        entries: list[Entry] = []
        for (i, rad), res in zip(good, results, strict=True):
            if res.error is not None:
                failures.append((i, "predict", res.error))
            else:
                entries.append((i, res, rad))
        return entries, failures


class ShardWriter(BasePredictionWriter):
    """Each process appends its batches to ``shards/rank<R>.jsonl`` (fsynced) and its failures
    to ``shards/failures_rank<R>.jsonl``, and draws its overlays; nothing is gathered.

    Overlays are drawn in worker threads (:class:`~spinelandmarks.overlay_writer.OverlayQueue`)
    while the next batches are predicted; a batch is journaled once its overlays are written.
    """

    def __init__(self, out: Path, keys: Sequence[str], overlays: bool,
                 stop: _StopRequest | None = None, overlay_size: int | None = OVERLAY_MAX_SIDE,
                 overlay_format: str = "png", overlay_threads: int = 2) -> None:
        super().__init__(write_interval="batch")
        self.out, self.keys, self.overlays, self.stop = out, list(keys), overlays, stop
        self.overlay_size, self.overlay_threads = overlay_size, overlay_threads
        self.suffix = "." + overlay_format.lower().replace("jpeg", "jpg")
        self._queue: OverlayQueue | None = None

    def _overlay_queue(self, pipe: SpineLandmarkPipeline) -> OverlayQueue:
        if self._queue is None:
            self._queue = OverlayQueue(pipe, self.overlay_size, self.overlay_threads)
        return self._queue

    def flush(self) -> None:
        """Write the overlays still in flight and journal their batches."""
        if self._queue is not None:
            queue, self._queue = self._queue, None
            queue.close()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.flush()  # what is drawn is journaled; the rest is redone on resume

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           prediction: Any, batch_indices: Sequence[int] | None, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        entries, failures = prediction
        shards = self.out / _SHARDS
        shards.mkdir(exist_ok=True)
        rank = trainer.global_rank

        def commit() -> None:
            with PredictionJournal(shards / f"rank{rank}.jsonl", load=False) as journal:
                journal.append([(self.keys[i], res) for i, res, _ in entries])
            if failures:
                with (shards / f"failures_rank{rank}.jsonl").open("a", encoding="utf-8") as f:
                    f.writelines(json.dumps(list(x)) + "\n" for x in failures)

        if self.overlays:
            (self.out / "overlays").mkdir(exist_ok=True)
            pipe = pl_module.pipeline
            if not isinstance(pipe, SpineLandmarkPipeline):
                raise TypeError(f"overlays need a SpineLandmarkPipeline, got {type(pipe).__name__}")
            self._overlay_queue(pipe).submit(
                [(self.out / "overlays" / f"{i + 1:05d}_{Path(rad.source).stem or 'image'}"
                  f"{self.suffix}", rad, res) for i, res, rad in entries], commit)
        else:
            commit()
        if self.stop is not None and self.stop.requested:
            self.flush()
            raise _Stopped


def predict_files(run: str | os.PathLike[str], files: Sequence[Path],
                  out_dir: str | os.PathLike[str], *, batch_size: int = 4,
                  accelerator: str = "auto", precision: str = "32", overlays: bool = True,
                  tta: bool | None = None, progress: bool = True, overwrite: bool = False,
                  workers: int = 0, devices: int | str = 1, num_nodes: int = 1,
                  strategy: str = "auto", overlay_size: int | None = OVERLAY_MAX_SIDE,
                  overlay_format: str = "png", overlay_threads: int = 2,
                  backend: str = "torch") -> list[tuple[str, str]]:
    """Predict every file, resumably; return ``(file, reason)`` for each one that failed.

    Finished images are journaled per batch (:mod:`spinelandmarks.prediction_store`); rerun
    the same call after a crash or an interruption and only the rest is predicted. The final
    files are assembled in input order.

    Parameters
    ----------
    run : path
        Training run directory or pipeline directory.
    files : sequence of Path
        Radiographs (DICOM, PNG, JPEG, TIFF).
    out_dir : path
        Output directory (created).
    batch_size : int
        Radiographs per forward pass.
    accelerator : {"auto", "cpu", "gpu"}
    precision : {"32", "bf16-mixed", "16-mixed"}
    overlays : bool
        Write ``overlays/<n>_<name>.png`` (n: position in ``files``).
    overlay_size : int, optional
        Long side of the overlays in pixels (default :data:`~spinelandmarks.overlay.OVERLAY_MAX_SIDE`;
        smaller radiographs keep their size); None: full resolution.
    overlay_format : {"png", "jpg"}
        Overlay file format (``overlays/<n>_<name>.jpg`` for JPEG).
    overlay_threads : int
        Threads drawing and encoding the overlays while the next images are predicted (per
        process); 0: in the prediction loop.
    backend : {"torch", "onnxruntime"}
        Inference backend of the networks (:meth:`SpineLandmarkPipeline.load`); onnxruntime
        runs on the CPU only.
    tta : bool, optional
        Step-2 test-time augmentation on or off; default: as saved with the pipeline.
    progress : bool
        Show a progress bar.
    overwrite : bool
        ``out_dir`` holds other files, or the output of ``predict`` on other inputs: replace
        the outputs of ``predict`` there (other files are left alone) instead of refusing.
    workers : int
        DataLoader processes decoding the files (0: in this process), per device.
    devices, num_nodes, strategy
        As for ``lightning.Trainer``: ``devices=4`` spreads the files over four GPUs (DDP),
        ``num_nodes`` over machines; each process writes its own shard, merged by rank 0.

    Raises
    ------
    ValueError
        ``out_dir`` is not empty and not the output of ``predict`` on the same inputs with the
        same pipeline (by the digest of its weights and options) and settings (and not
        ``overwrite``).
    KeyboardInterrupt
        SIGINT or SIGTERM arrived: the batch in flight was finished and every output written
        for the images done; rerun to resume.
    """
    out = Path(out_dir)
    if backend != "torch" and _accelerator(accelerator) != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU: use --accelerator cpu")
    pipe_dir = resolve_pipeline_dir(run)
    digest = pipeline_digest(pipe_dir)  # identity by content: a pipeline saved anew differs
    pipe = SpineLandmarkPipeline.load(pipe_dir, backend=backend)
    if tta is not None:
        pipe.options = dataclasses.replace(pipe.options, tta=tta)
    if overlay_format.lower() not in ("png", "jpg", "jpeg"):
        raise ValueError(f"overlay_format must be 'png' or 'jpg', got {overlay_format!r}")
    overlay_settings = ({"overlay_size": overlay_size, "overlay_format": overlay_format.lower()}
                        if overlays else {})
    prepare_output_folder(out, files, run, overwrite,
                          {"tta": pipe.options.tta, "precision": precision, "overlays": overlays,
                           **overlay_settings,
                           **({"backend": backend} if backend != "torch" else {})},
                          pipeline_sha256=digest)
    keys = [file_key(Path(f), digest) for f in files]
    _merge_shards(out)  # an interrupted earlier run's shards join the journal first
    done_before = PredictionJournal(out / JOURNAL).done
    todo = [i for i, k in enumerate(keys) if k not in done_before]
    t0 = time.perf_counter()
    with _StopRequest() as stop, quiet_lightning():
        writer = ShardWriter(out, keys, overlays, stop, overlay_size, overlay_format,
                             overlay_threads)
        trainer = L.Trainer(accelerator=_accelerator(accelerator), devices=devices,
                            num_nodes=num_nodes, strategy=strategy, logger=False,
                            enable_progress_bar=progress, enable_model_summary=False,
                            callbacks=[writer, *([_PredictBar()] if progress else [])])
        loader = DataLoader(_Decode(files, todo), batch_size=batch_size, shuffle=False,
                            num_workers=workers, collate_fn=_as_list,
                            prefetch_factor=2 if workers > 0 else None)
        module = PipelinePredictor(pipe, "32" if precision == "32-true" else precision)
        try:
            if todo:  # a finished run only reassembles its outputs
                trainer.predict(module, loader, return_predictions=False)
        except _Stopped:
            pass
        finally:
            writer.flush()
    if not trainer.is_global_zero:
        return []
    return _finish(out, files, keys, pipe, len(todo), time.perf_counter() - t0, stop.requested)


def _merge_shards(out: Path) -> list[Failure]:
    """Fold ``shards/rank*.jsonl`` into the journal and return (and remove) the failures."""
    shards = out / _SHARDS
    failures: list[Failure] = []
    if not shards.is_dir():
        return failures
    with PredictionJournal(out / JOURNAL, load=False) as journal:
        for shard in sorted(shards.glob("rank*.jsonl")):
            with shard.open(encoding="utf-8") as fh:  # in blocks: memory stays flat
                while block := "".join(itertools.islice(fh, 1024)):
                    journal.append_lines(block)
    for f in sorted(shards.glob("failures_rank*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                i, stage, reason = json.loads(line)
                failures.append((int(i), str(stage), str(reason)))
    for f in shards.iterdir():
        f.unlink()
    shards.rmdir()
    return failures


def _finish(out: Path, files: Sequence[Path], keys: Sequence[str],
            pipe: SpineLandmarkPipeline, attempted: int, seconds: float,
            stopped: bool) -> list[tuple[str, str]]:
    """Rank 0: merge the shards, assemble the outputs in input order, report."""
    failures = sorted(set(_merge_shards(out)))
    journal = PredictionJournal(out / JOURNAL)
    skipped = len(files) - attempted
    assemble_outputs(out, journal, keys, pipe.schema)
    rows = [(str(files[i]), stage, reason) for i, stage, reason in failures]
    write_failures(out, rows)
    # streamed: one result in memory at a time
    summary = summarize(journal.in_order(keys), pipe.shift_model)
    write_summary(summary, out / SUMMARY)
    done, review = summary.images, summary.needs_review
    _summary(done, review, skipped, rows, attempted, seconds)
    if stopped:
        raise KeyboardInterrupt(f"{done} of {len(files)} images done in {out}; run the "
                                "same command again to predict the rest")
    return [(f, reason) for f, _, reason in rows]


def _summary(done: int, review: int, skipped: int, failures: Sequence[tuple[str, str, str]],
             attempted: int, seconds: float) -> None:
    _log.info("%d of %d image(s) need review (needs_review in predictions.json, qc column in "
              "measurements.csv)", review, done)
    rate = (f"{(attempted - len(failures)) / seconds:.2f} images/s" if attempted and seconds > 0
            else "nothing left to predict")
    _log.info("done %d, skipped as already done %d, failed %d, %s", done, skipped,
              len(failures), rate)
