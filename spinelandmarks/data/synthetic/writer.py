"""Synthetic datasets on disk, in the dataset layout of the conventions.

:func:`write_phantom_dataset` is the writer both phantom styles share (this package and
:mod:`spinelandmarks.data.projection`): one job per image, in worker processes, then the
annotation file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...schema import LUMBAR_SAGITTAL, LandmarkSchema
from ..annotations import ImageRecord, write_coco
from .config import PhantomConfig
from .phantom import check_schema, generate_phantom

__all__ = ["generate_dataset", "write_phantom_dataset"]


def write_phantom_dataset(root: Path, one: Callable[[Any], ImageRecord], jobs: Sequence[Any],
                          schema: LandmarkSchema, workers: int = 1) -> Path:
    """Run ``one(job)`` for every job (each writes its image under ``root/images`` and returns
    its record), in ``workers`` processes, then write ``root/annotations.json`` in job order.

    ``one`` must be a module-level function (it is pickled to the workers).
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            records = list(ex.map(one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        records = [one(j) for j in jobs]
    write_coco(records, schema, root / "annotations.json")
    return root


def _one(args: tuple[int, np.random.SeedSequence, PhantomConfig, str, str, int,
                     LandmarkSchema]) -> ImageRecord:
    from ..io import write_dicom, write_png16

    index, ss, cfg, out_dir, fmt, seed, schema = args
    ext = "dcm" if fmt == "dicom" else "png"
    name = f"images/{index:05d}.{ext}"
    img, rec = generate_phantom(np.random.default_rng(ss), cfg, file_name=name,
                                image_id=index + 1, patient_id=f"synth-{seed}-{index:06d}",
                                schema=schema)
    path = Path(out_dir) / name
    if fmt == "dicom":
        write_dicom(path, img, pixel_spacing=rec.pixel_spacing, patient_id=rec.patient_id)
    else:
        write_png16(path, img)
    return rec


def generate_dataset(out_dir: str | os.PathLike[str], num_images: int, seed: int = 0,
                     config: PhantomConfig | None = None,
                     fmt: Literal["png", "dicom"] = "png", workers: int = 1,
                     schema: LandmarkSchema | str = LUMBAR_SAGITTAL) -> Path:
    """Write a synthetic dataset in the layout of the conventions.

    Parameters
    ----------
    out_dir : str or PathLike
        Dataset root; ``images/NNNNN.png`` (16-bit) or ``.dcm`` and ``annotations.json``
        (COCO keypoints of ``schema``) are written inside.
    num_images : int
        Number of images.
    seed : int
        Image ``i`` uses child ``i`` of ``np.random.SeedSequence(seed)``, so the dataset is
        identical for any ``workers``. Patient ids are ``synth-<seed>-<i:06d>``.
    config : PhantomConfig, optional
        Generator settings.
    fmt : {"png", "dicom"}
        Image file format.
    workers : int
        Worker processes (1: in-process).
    schema : LandmarkSchema or str
        The annotated points (see :func:`~.phantom.generate_phantom`); the images are the
        same for every schema.

    Returns
    -------
    Path
        ``out_dir``.
    """

    if fmt not in ("png", "dicom"):
        raise ValueError(f"fmt must be 'png' or 'dicom', got {fmt!r}")
    cfg = config or PhantomConfig()
    sch = check_schema(schema)
    root = Path(out_dir)
    children = np.random.SeedSequence(seed).spawn(num_images)
    jobs = [(i, children[i], cfg, str(root), fmt, seed, sch) for i in range(num_images)]
    return write_phantom_dataset(root, _one, jobs, sch, workers)
