"""Synthetic datasets on disk, in the dataset layout of the conventions.

:func:`write_phantom_dataset` is the writer every phantom style shares (this package,
:mod:`spinelandmarks.phantoms.projection` and :mod:`spinelandmarks.phantoms.outline`): one job per
image, its seed spawned from the dataset's, in worker processes, then the annotation file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..data.annotations import ImageRecord, write_coco
from ..schema import LUMBAR_SAGITTAL, WHOLE_SPINE_SAGITTAL, LandmarkSchema, resolve_schema
from .config import PhantomConfig
from .phantom import check_schema, generate_phantom

__all__ = ["PhantomJob", "generate_dataset", "write_phantom_dataset"]


#: One image's job: its index, its seed sequence (child ``index`` of the dataset seed), the
#: dataset seed (for patient ids), the dataset root and the generator's settings.
PhantomJob = tuple[int, np.random.SeedSequence, int, str, Any]


def write_phantom_dataset(out_dir: str | os.PathLike[str], one: Callable[[PhantomJob], ImageRecord],
                          num_images: int, seed: int, settings: Any, schema: LandmarkSchema,
                          workers: int = 1) -> Path:
    """Write ``num_images`` phantoms and their annotation file.

    Image ``i`` gets the job ``(i, child i of np.random.SeedSequence(seed), seed, root,
    settings)``, so the dataset is the same for any ``workers``; ``one(job)`` writes the image
    under ``root/images`` and returns its record. The records are written to
    ``root/annotations.json`` in image order. ``one`` must be a module-level function (it is
    pickled to the worker processes).
    """
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(num_images)
    jobs: list[PhantomJob] = [(i, children[i], seed, str(root), settings)
                              for i in range(num_images)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            records = list(ex.map(one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        records = [one(j) for j in jobs]
    write_coco(records, schema, root / "annotations.json")
    return root


def _one(job: PhantomJob) -> ImageRecord:
    """Draw, write and return image ``index`` of a data set (run in a worker process)."""
    from ..data.io import write_dicom, write_png16

    index, ss, seed, out_dir, (cfg, fmt, schema) = job
    name = f"images/{index:05d}.{'dcm' if fmt == 'dicom' else 'png'}"
    rng, patient = np.random.default_rng(ss), f"synth-{seed}-{index:06d}"
    if schema == WHOLE_SPINE_SAGITTAL:  # full-length films: their own style
        from .whole_spine import generate_whole_spine_phantom

        img, rec = generate_whole_spine_phantom(rng, cfg, file_name=name, image_id=index + 1,
                                                patient_id=patient)
    else:
        img, rec = generate_phantom(rng, cfg, file_name=name, image_id=index + 1,
                                    patient_id=patient, schema=schema)
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
    sch = (WHOLE_SPINE_SAGITTAL if resolve_schema(schema) == WHOLE_SPINE_SAGITTAL
           else check_schema(schema))
    return write_phantom_dataset(out_dir, _one, num_images, seed, (cfg, fmt, sch), sch, workers)
