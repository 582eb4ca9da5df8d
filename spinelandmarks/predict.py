"""Batch prediction on files: the engine of ``spinelandmarks predict``.

Reads every radiograph, runs the pipeline, and writes (atomically) ``predictions.json`` (step
2, the annotation layout with scores), ``predictions_step1.json``, ``measurements.csv`` and
overlay PNGs. A file that cannot be read or predicted is reported and skipped; the others
finish.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data.intensity import robust_normalize
from .data.io import ImageReadError, Radiograph, read_image
from .data.plot import draw_points, save_png
from .pipeline import SpineLandmarkPipeline, SpineResult
from .prediction_store import (
    JOURNAL,
    PredictionJournal,
    assemble_outputs,
    file_key,
    prepare_output_folder,
    write_failures,
)
from .qc import LEVEL_FLAGS

__all__ = ["draw_overlay", "predict_files", "resolve_pipeline_dir"]

_log = logging.getLogger(__name__)

_ANGLE_LABELS = {"l1_l5_lordosis": "L1-L5 lordosis", "l1_s1_lordosis": "L1-S1 lordosis",
                 "sacral_slope": "Sacral slope"}


def resolve_pipeline_dir(run: str | os.PathLike[str]) -> Path:
    """``RUN/pipeline`` of a training run, or RUN itself if it is a pipeline directory."""
    p = Path(run)
    if (p / "pipeline" / "pipeline.json").is_file():
        return p / "pipeline"
    if (p / "pipeline.json").is_file():
        return p
    raise FileNotFoundError(f"{p}: neither a training run nor a pipeline directory "
                            "(no pipeline.json)")


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def draw_overlay(radiograph: Radiograph, result: SpineResult,
                 pipeline: SpineLandmarkPipeline) -> np.ndarray:
    """RGB overlay: step-2 points, endplate lines, level names, the measured angles and the QC
    flags (flagged levels circled in red).

    The radiograph is windowed by its own percentiles
    (:func:`~spinelandmarks.data.intensity.robust_normalize`), so 12-bit data stored in 16-bit
    files and narrow-range DICOM are readable.
    """
    rgb = draw_points(robust_normalize(radiograph.pixels),
                      np.nan_to_num(result.points, nan=-1e6), pipeline.schema,
                      visibility=np.isfinite(result.points).all(-1).astype(np.int64) * 2)
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    scale = max(1, img.height // 400)
    _circle_flagged(draw, result, pipeline, scale)
    lines = [f"{_ANGLE_LABELS.get(k, k)}: {v:.1f} deg" if np.isfinite(v) else
             f"{_ANGLE_LABELS.get(k, k)}: n/a" for k, v in result.parameters.items()]
    if result.missing_levels:
        lines.append("missing: " + ", ".join(result.missing_levels))
    if result.needs_review:
        lines.append("NEEDS REVIEW: " + "; ".join(f"{k} {' '.join(v)}"
                                                  for k, v in result.qc.items()))
    y = 4
    for line in lines:
        color = (255, 64, 64) if line.startswith("NEEDS REVIEW") else (255, 255, 0)
        draw.text((6, y), line, fill=color, font_size=10 * scale)
        y += 12 * scale
    return np.asarray(img)


def _circle_flagged(draw: ImageDraw.ImageDraw, result: SpineResult,
                    pipeline: SpineLandmarkPipeline, scale: int) -> None:
    """A red circle around every level with a per-level QC flag."""
    # image flags (angle_range, steps_disagree) name parameters, not levels
    flagged = {lv for k, levels in result.qc.items() if k in LEVEL_FLAGS for lv in levels}
    for lv in flagged:
        pts = result.points[pipeline.schema.level_indices(lv)]
        pts = pts[np.isfinite(pts).all(-1)]
        if not len(pts):
            continue
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        pad = 0.3 * max(x1 - x0, y1 - y0, 10.0)
        draw.ellipse((x0 - pad, y0 - pad, x1 + pad, y1 + pad), outline=(255, 0, 0),
                     width=2 * scale)


class _Decode(Dataset[tuple[int, "Radiograph | str"]]):
    """Files decoded in DataLoader workers: ``(index, Radiograph or the error message)``."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Radiograph | str]:
        try:
            return i, read_image(self.files[i])
        except (ImageReadError, OSError, ValueError) as exc:
            return i, str(exc)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class _StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the batch in flight (main thread only)."""

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


def predict_files(run: str | os.PathLike[str], files: Sequence[Path],
                  out_dir: str | os.PathLike[str], *, batch_size: int = 4,
                  accelerator: str = "auto", precision: str = "32", overlays: bool = True,
                  tta: bool | None = None, progress: bool = True, overwrite: bool = False,
                  workers: int = 0) -> list[tuple[str, str]]:
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
    tta : bool, optional
        Step-2 test-time augmentation on or off; default: as saved with the pipeline.
    progress : bool
        Show a progress bar.
    overwrite : bool
        ``out_dir`` holds other files, or the output of ``predict`` on other inputs: replace
        the outputs of ``predict`` there (other files are left alone) instead of refusing.
    workers : int
        DataLoader processes decoding the files (0: in this process).

    Raises
    ------
    ValueError
        ``out_dir`` is not empty and not the output of ``predict`` on the same inputs (and not
        ``overwrite``).
    KeyboardInterrupt
        SIGINT or SIGTERM arrived: the batch in flight was finished and every output written
        for the images done; rerun to resume.
    """
    out = Path(out_dir)
    pipe = SpineLandmarkPipeline.load(resolve_pipeline_dir(run)).to(_device(accelerator))
    if tta is not None:
        pipe.tta = tta
    prepare_output_folder(out, files, run, overwrite,
                          {"tta": pipe.tta, "precision": precision, "overlays": overlays})
    keys = [file_key(Path(f)) for f in files]
    failures: list[tuple[str, str, str]] = []
    t0 = time.perf_counter()
    with PredictionJournal(out / JOURNAL) as journal, _StopRequest() as stop:
        todo = [i for i, k in enumerate(keys) if k not in journal.done]
        skipped = len(files) - len(todo)
        settings = _RunSettings(pipe, "32" if precision == "32-true" else precision, batch_size,
                                out / "overlays" if overlays else None)
        _predict_loop(settings, files, keys, todo, journal, failures, stop,
                      _loader(files, todo, batch_size, workers), progress)
        done = list(journal.in_order(keys))
    assemble_outputs(out, done, pipe.schema)
    write_failures(out, failures)
    _summary(done, skipped, failures, len(todo), time.perf_counter() - t0)
    if stop.requested:
        raise KeyboardInterrupt(f"{len(done)} of {len(files)} images done in {out}; run the "
                                "same command again to predict the rest")
    return [(f, reason) for f, _, reason in failures]


@dataclass
class _RunSettings:
    pipe: SpineLandmarkPipeline
    precision: str
    batch_size: int
    overlays: Path | None


def _loader(files: Sequence[Path], todo: Sequence[int], batch_size: int, workers: int
            ) -> DataLoader[Any]:
    subset = _Decode([files[i] for i in todo])
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=_as_list, prefetch_factor=2 if workers > 0 else None,
                      persistent_workers=False)


def _predict_loop(st: _RunSettings, files: Sequence[Path], keys: Sequence[str],
                  todo: Sequence[int], journal: PredictionJournal,
                  failures: list[tuple[str, str, str]], stop: _StopRequest,
                  loader: DataLoader[Any], progress: bool) -> None:
    """Decode, predict, journal and draw batch after batch until done or asked to stop."""
    with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress) as bar:
        for batch in loader:
            items = [(todo[j], x) for j, x in batch]
            failures += [(str(files[i]), "read", x) for i, x in items if isinstance(x, str)]
            good = [(i, x) for i, x in items if not isinstance(x, str)]
            entries = _predict_batch(st, good, failures)
            journal.append([(keys[i], res) for i, res, _ in entries])
            if st.overlays is not None:
                st.overlays.mkdir(exist_ok=True)
                for i, res, rad in entries:
                    name = Path(rad.source).stem or "image"
                    save_png(st.overlays / f"{i + 1:05d}_{name}.png",
                             draw_overlay(rad, res, st.pipe))
            bar.update(len(items))
            if stop.requested:
                break


def _predict_batch(st: _RunSettings, good: list[tuple[int, Radiograph]],
                   failures: list[tuple[str, str, str]]
                   ) -> list[tuple[int, SpineResult, Radiograph]]:
    if not good:
        return []
    try:
        results = st.pipe.predict([r for _, r in good], batch_size=st.batch_size,
                                  precision=st.precision)
    except (RuntimeError, ValueError) as exc:  # one bad batch must not stop the rest
        failures += [(r.source, "predict", str(exc)) for _, r in good]
        return []
    entries = []
    for (i, rad), res in zip(good, results, strict=True):
        if res.error is not None:
            failures.append((rad.source, "predict", res.error))
        else:
            entries.append((i, res, rad))
    return entries


def _summary(done: Sequence[SpineResult], skipped: int,
             failures: Sequence[tuple[str, str, str]], attempted: int, seconds: float) -> None:
    review = sum(r.needs_review for r in done)
    _log.info("%d of %d image(s) need review (needs_review in predictions.json, qc column in "
              "measurements.csv)", review, len(done))
    rate = (attempted - len(failures)) / seconds if seconds > 0 else float("nan")
    _log.info("done %d, skipped as already done %d, failed %d, %.2f images/s", len(done),
              skipped, len(failures), rate)
