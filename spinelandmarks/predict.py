"""Batch prediction on files: the engine of ``spinelandmarks predict``.

Reads every radiograph, runs the pipeline, and writes (atomically) ``predictions.json`` (step
2, the annotation layout with scores), ``predictions_step1.json``, ``measurements.csv`` and
overlay PNGs. A file that cannot be read or predicted is reported and skipped; the others
finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ._atomic import atomic_write_text
from .data.annotations import ImageRecord, write_coco
from .data.intensity import robust_normalize
from .data.io import ImageReadError, Radiograph, read_image
from .data.plot import draw_points, save_png
from .evaluation import write_measurements_csv
from .pipeline import SpineLandmarkPipeline, SpineResult
from .qc import LEVEL_FLAGS

__all__ = ["OUTPUTS", "draw_overlay", "predict_files", "resolve_pipeline_dir"]

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


#: What ``predict`` writes into its output folder (the marker file names its inputs).
OUTPUTS = ("predictions.json", "predictions_step1.json", "measurements.csv", "overlays")
_MARKER = "predict.json"


def _inputs_digest(files: Sequence[Path]) -> str:
    names = "\n".join(sorted(str(Path(f).resolve()) for f in files))
    return hashlib.sha256(names.encode()).hexdigest()


def _prepare_out(out: Path, files: Sequence[Path], run: str | os.PathLike[str],
                 overwrite: bool) -> None:
    """Make ``out`` ready: refuse a folder holding something else, clear earlier outputs."""
    digest = _inputs_digest(files)
    marker = out / _MARKER
    if out.is_dir() and any(out.iterdir()):
        same = marker.is_file() and json.loads(marker.read_text()).get("inputs") == digest
        if not same and not overwrite:
            what = ("the output of predict on other inputs" if marker.is_file()
                    else "not the output of predict")
            raise ValueError(f"{out}: the folder is not empty and holds {what}; choose another "
                             "--out, or --overwrite to replace the predictions there")
        for name in (*OUTPUTS, _MARKER):  # never mix old and new overlays or tables
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"inputs": digest, "images": len(files),
                                          "run": str(run)}, indent=2) + "\n")


def predict_files(run: str | os.PathLike[str], files: Sequence[Path],
                  out_dir: str | os.PathLike[str], *, batch_size: int = 4,
                  accelerator: str = "auto", precision: str = "32", overlays: bool = True,
                  tta: bool | None = None, progress: bool = True,
                  overwrite: bool = False) -> list[tuple[str, str]]:
    """Predict every file; return ``(file, reason)`` for each one that failed.

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
        Write ``overlays/<name>.png``.
    tta : bool, optional
        Step-2 test-time augmentation on or off; default: as saved with the pipeline.
    progress : bool
        Show a progress bar.
    overwrite : bool
        ``out_dir`` holds other files, or the output of ``predict`` on other inputs: replace
        the outputs of ``predict`` there (other files are left alone) instead of refusing.

    Raises
    ------
    ValueError
        ``out_dir`` is not empty and not the output of ``predict`` on the same inputs (and not
        ``overwrite``).
    """
    out = Path(out_dir)
    _prepare_out(out, files, run, overwrite)
    pipe = SpineLandmarkPipeline.load(resolve_pipeline_dir(run)).to(_device(accelerator))
    if tta is not None:
        pipe.tta = tta
    precision = "32" if precision == "32-true" else precision
    failures: list[tuple[str, str]] = []
    step2: list[ImageRecord] = []
    step1: list[ImageRecord] = []
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        radiographs: list[Radiograph] = []
        for f in chunk:
            try:
                radiographs.append(read_image(f))
            except (ImageReadError, OSError, ValueError) as exc:
                failures.append((str(f), str(exc)))
        if radiographs:
            try:
                results = pipe.predict(radiographs, batch_size=batch_size, precision=precision)
            except (RuntimeError, ValueError) as exc:  # one bad batch must not stop the rest
                failures += [(r.source, f"prediction failed: {exc}") for r in radiographs]
                results = []
            for r, res in zip(radiographs, results, strict=False):
                if res.error is not None:
                    failures.append((r.source, res.error))
                    continue
                image_id = len(step2) + 1
                step2.append(res.to_record(pipe.schema, step=2, image_id=image_id))
                step1.append(res.to_record(pipe.schema, step=1, image_id=image_id))
                if overlays:
                    name = Path(r.source).stem or f"image_{image_id}"
                    save_png(out / "overlays" / f"{image_id:05d}_{name}.png",
                             draw_overlay(r, res, pipe))
        bar.update(len(chunk))
    bar.close()
    review = sum(bool(r.meta.get("needs_review")) for r in step2)
    _log.info("%d of %d image(s) need review (needs_review in predictions.json, qc column in "
              "measurements.csv)", review, len(step2))
    write_coco(step2, pipe.schema, out / "predictions.json")
    write_coco(step1, pipe.schema, out / "predictions_step1.json")
    write_measurements_csv(step2, pipe.schema, out / "measurements.csv")
    return failures
