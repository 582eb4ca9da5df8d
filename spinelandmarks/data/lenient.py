"""A way forward for imperfect annotations.

Real annotation sets have a few bad records: a click a pixel past the image border, an image
that went missing, a point labelled twice. Refusing the whole set for one of them leaves the
user no way on, so:

* :func:`clip_to_border` puts labelled points that lie at most a small margin outside the image
  (:data:`BORDER_MARGIN_FRAC` of its side, at least :data:`BORDER_MARGIN_PX`) onto the border,
  and says so; points further out remain problems.
* :func:`leave_out_invalid` (``--skip-invalid``) drops the records that have problems and keeps
  the others; problems that belong to no record (a malformed file) still stop.
* :func:`write_skipped` writes the list of what was left out (``skipped_records.csv``) next to
  the run or the imported data set.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._atomic import atomic_write_text
from ..schema import LandmarkSchema
from .annotations import AnnotationError, AnnotationProblem, ImageRecord

__all__ = ["BORDER_MARGIN_FRAC", "BORDER_MARGIN_PX", "SKIPPED_FILE", "clip_to_border",
           "leave_out_invalid", "skipped_summary", "write_skipped"]

_log = logging.getLogger(__name__)
_warned: set[str] = set()

#: Points at most this share of the image side outside it are clipped onto the border (a
#: click on the border: Label Studio reports x = 100.8 %).
BORDER_MARGIN_FRAC = 0.01
#: ... and at least this many pixels outside it.
BORDER_MARGIN_PX = 2.0
#: The list of the records left out, next to the run or the imported data set.
SKIPPED_FILE = "skipped_records.csv"


def clip_to_border(records: Sequence[ImageRecord], schema: LandmarkSchema,
                   source: str = "<records>") -> int:
    """Clip labelled points lying just outside their image onto its border, in place.

    A point is clipped when it lies at most ``max(BORDER_MARGIN_PX, BORDER_MARGIN_FRAC *
    side)`` outside ``[0, width] x [0, height]``; points further out are left for validation
    to report. Records without a size are left alone.

    Parameters
    ----------
    records : sequence of ImageRecord
        Changed in place.
    schema : LandmarkSchema
        Names the points in the warning.
    source : str
        The annotation file, named in the warning.

    Returns
    -------
    int
        How many points were clipped (a warning lists the first ones).
    """
    clipped: list[str] = []
    for rec in records:
        if rec.width <= 0 or rec.height <= 0 or rec.points.shape != (schema.num_points, 2):
            continue
        size = np.array([rec.width, rec.height], dtype=np.float64)
        margin = np.maximum(BORDER_MARGIN_PX, BORDER_MARGIN_FRAC * size)
        labelled = (rec.visibility > 0) & np.isfinite(rec.points).all(axis=1)
        outside = labelled & ((rec.points < 0) | (rec.points > size)).any(axis=1)
        near = outside & ((rec.points >= -margin) & (rec.points <= size + margin)).all(axis=1)
        for i in np.flatnonzero(near):
            before = rec.points[i].copy()
            rec.points[i] = np.clip(rec.points[i], 0.0, size)
            lv, pt = schema.level_point(int(i))
            clipped.append(f"{rec.file_name!r} {lv} {pt} ({before[0]:.6g}, {before[1]:.6g}) -> "
                           f"({rec.points[i, 0]:.6g}, {rec.points[i, 1]:.6g})")
    if clipped:
        message = (f"{source}: {len(clipped)} point(s) just outside the image clipped onto its "
                   f"border: {'; '.join(clipped[:3])}{' ...' if len(clipped) > 3 else ''}")
        if message not in _warned:  # each stage of a run reads the data again: say it once
            _warned.add(message)
            _log.warning("%s", message)
    return len(clipped)


def leave_out_invalid(records: Sequence[ImageRecord], problems: Sequence[AnnotationProblem],
                      source: str) -> tuple[list[ImageRecord], list[AnnotationProblem]]:
    """The records without problems, and the problems of the records left out.

    Raises
    ------
    AnnotationError
        A problem belongs to no record (a malformed file or entry): nothing can be kept safely.
    """
    fatal = [p for p in problems if p.image_id is None]
    if fatal:
        raise AnnotationError(fatal, source)
    bad = {p.image_id for p in problems}
    kept = [r for r in records if int(r.image_id) not in bad]
    return kept, list(problems)


def write_skipped(path: Path, problems: Sequence[AnnotationProblem]) -> None:
    """``skipped_records.csv``: ``source,image_id,file_name,kind,message`` per problem of a
    record left out (header only when none)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source", "image_id", "file_name", "kind", "message"])
    writer.writerows([p.source, p.image_id, p.file_name or "", p.kind, p.message]
                     for p in problems)
    atomic_write_text(path, buf.getvalue())


def skipped_summary(problems: Sequence[AnnotationProblem], total: int, where: Path) -> str:
    """``left out 2 of 10 image(s) with annotation problems (listed in WHERE)``."""
    n = len({(p.source, p.image_id) for p in problems})
    return f"left out {n} of {total} image(s) with annotation problems (listed in {where})"
