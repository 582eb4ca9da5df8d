"""BUU-LSPINE lateral lumbar annotations read directly into the dataset layout.

BUU-LSPINE (Burapha University lumbar spine radiographs; research licence, so nothing of it
is shipped) keeps one CSV per lateral image, next to it with the same stem: 11 rows
``x1,y1,x2,y2,label`` in image pixels. Rows 0-9 are the superior and inferior endplates of
L1..L5 in that order, row 10 the superior endplate of S1; ``(x1, y1)`` is the endplate's
anterior corner, ``(x2, y2)`` its posterior one, and ``label`` a per-endplate diagnosis code
(0 normal, non-zero on endplates with listhesis). These are the 22 points of
:data:`~spinelandmarks.schema.LUMBAR_SAGITTAL`, so :func:`import_buu_lspine` writes a dataset
(``images/`` + ``annotations.json``, CONVENTIONS section 3) that ``train`` reads as is; the
labels are kept per image in ``meta["buu_lspine_labels"]`` (``"L4_inferior": 1``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .._types import StrPath
from ..schema import LUMBAR_SAGITTAL, LandmarkSchema
from .annotation_tools import write_dataset
from .annotations import AnnotationError, AnnotationProblem, ImageRecord, validate
from .io import read_image_size

__all__ = ["ENDPLATE_ROWS", "import_buu_lspine", "read_buu_lspine_csv"]

#: (level, side) of each CSV row, in row order.
ENDPLATE_ROWS: tuple[tuple[str, str], ...] = (
    *((f"L{k}", side) for k in range(1, 6) for side in ("superior", "inferior")),
    ("S1", "superior"),
)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm", ".bmp")


def _rows(path: Path) -> list[list[str]]:
    """The CSV's data rows (a header row, if any, is skipped)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if rows:
        try:
            float(rows[0][0])
        except ValueError:
            rows = rows[1:]  # a header
    return rows


def read_buu_lspine_csv(path: StrPath, schema: LandmarkSchema = LUMBAR_SAGITTAL
                        ) -> tuple[np.ndarray, dict[str, int]]:
    """The 22 corners and the endplate labels of one BUU-LSPINE CSV.

    Parameters
    ----------
    path : str or PathLike
        The CSV (11 rows ``x1,y1,x2,y2,label``).
    schema : LandmarkSchema
        Must name the BUU endplate corners (``lumbar_sagittal`` does).

    Returns
    -------
    points : np.ndarray
        (P, 2) float64 pixels in the schema's order.
    labels : dict of str to int
        ``"<level>_<side>" -> label`` per endplate.

    Raises
    ------
    ValueError
        Not 11 rows of 5 numbers, or a coordinate that is not finite (the file and row named).
    """
    p = Path(path)
    rows = _rows(p)
    if len(rows) != len(ENDPLATE_ROWS):
        raise ValueError(f"{p}: expected {len(ENDPLATE_ROWS)} rows x1,y1,x2,y2,label, "
                         f"found {len(rows)}")
    points = np.full((schema.num_points, 2), np.nan)
    labels: dict[str, int] = {}
    for i, ((level, side), row) in enumerate(zip(ENDPLATE_ROWS, rows, strict=True)):
        try:
            x1, y1, x2, y2, label = (float(v) for v in row[:5])
        except ValueError:
            raise ValueError(f"{p}: row {i + 1} is not five numbers: {row}") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError(f"{p}: row {i + 1} ({level} {side}) has a coordinate that is "
                             "not a finite number")
        points[schema.index(level, f"anterior_{side}")] = (x1, y1)
        points[schema.index(level, f"posterior_{side}")] = (x2, y2)
        labels[f"{level}_{side}"] = int(label)
    return points, labels


def _image_for(csv_path: Path) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        for cand in (csv_path.with_suffix(suffix), csv_path.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    return None


def import_buu_lspine(source: StrPath, out: StrPath, *, copy: bool = False,
                      schema: LandmarkSchema = LUMBAR_SAGITTAL) -> list[ImageRecord]:
    """Write a dataset from a BUU-LSPINE folder (searched recursively for CSV + image pairs).

    Parameters
    ----------
    source : str or PathLike
        The data set's folder (or the lateral-view part of it).
    out : str or PathLike
        Dataset root to write: ``images/<path relative to source>`` (symbolic links, or
        copies with ``copy``) and ``annotations.json``.
    copy : bool
        Copy the images instead of linking them.
    schema : LandmarkSchema

    Returns
    -------
    list of ImageRecord
        The records written, every one validated (image readable, size, points inside).

    Raises
    ------
    AnnotationError
        Every problem at once: CSVs without an image, unreadable CSVs, points outside their
        image; nothing is written then.
    """
    src = Path(source)
    problems: list[AnnotationProblem] = []
    pairs: list[tuple[Path, Path, np.ndarray, dict[str, int]]] = []
    for csv_path in sorted(src.rglob("*.csv")):
        image = _image_for(csv_path)
        if image is None:
            problems.append(AnnotationProblem(str(csv_path), "missing_image",
                                              "no image with the same name next to it"))
            continue
        try:
            pts, labels = read_buu_lspine_csv(csv_path, schema)
        except (ValueError, OSError) as exc:
            problems.append(AnnotationProblem(str(csv_path), "malformed", str(exc)))
            continue
        pairs.append((csv_path, image, pts, labels))
    records = [_record(i, src, image, pts, labels)
               for i, (_, image, pts, labels) in enumerate(pairs, start=1)]
    if not records and not problems:
        problems.append(AnnotationProblem(str(src), "missing_image",
                                          "no BUU-LSPINE CSV with an image found"))
    if problems:  # with the records' own problems, all at once
        raise AnnotationError(problems + validate(records, schema, src, source=str(src)),
                              str(src))
    return write_dataset(records, schema, src, out, copy=copy)


def _record(image_id: int, src: Path, image: Path, points: np.ndarray,
            labels: dict[str, int]) -> ImageRecord:
    height, width = read_image_size(image)
    return ImageRecord(file_name=image.relative_to(src).as_posix(), width=width, height=height,
                       points=points, visibility=np.full(len(points), 2, np.int8),
                       image_id=image_id, meta={"buu_lspine_labels": labels})
