"""Synthetic datasets on disk, in the dataset layout of the conventions."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from ...schema import LUMBAR_SAGITTAL, LandmarkSchema
from ..annotations import ImageRecord, write_coco
from .config import PhantomConfig
from .phantom import check_schema, generate_phantom

__all__ = ["generate_dataset"]


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
    (root / "images").mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(num_images)
    jobs = [(i, children[i], cfg, str(root), fmt, seed, sch) for i in range(num_images)]
    if workers > 1 and num_images > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            records = list(ex.map(_one, jobs, chunksize=max(1, num_images // (4 * workers))))
    else:
        records = [_one(j) for j in jobs]
    write_coco(records, sch, root / "annotations.json")
    return root
