"""The measurement table: the clinical parameters of every image of an annotation or
prediction file, as rows and as CSV (``spinelandmarks measure`` and the ``measurements.csv``
that ``predict`` writes)."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._atomic import atomic_write
from ._types import StrPath
from .anatomy.angles import (
    LUMBAR_PARAMETERS,
    defined_parameters,
    facing,
    schema_parameters,
    segmental_angle_names,
    segmental_angles,
)
from .anatomy.measurements import clinical_columns
from .data.annotations import ImageRecord
from .schema import LandmarkSchema

__all__ = ["ANGLE_COLUMNS", "ANGLE_LABELS", "angle_columns", "measure_records",
           "record_points", "write_measurements_csv"]

#: CSV column of each clinical parameter, in the order they follow ``file_name``.
ANGLE_COLUMNS: dict[str, str] = {name: f"{name}_deg" for name in LUMBAR_PARAMETERS}



def angle_columns(schema: LandmarkSchema) -> dict[str, str]:
    """The :data:`ANGLE_COLUMNS` of the parameters ``schema`` defines
    (:func:`~spinelandmarks.anatomy.angles.defined_parameters`): none for a schema without the
    lumbar endplates."""
    return {name: ANGLE_COLUMNS[name] for name in defined_parameters(schema)}


#: Human-readable names of the clinical parameters.
ANGLE_LABELS: dict[str, str] = {"l1_l5_lordosis": "L1-L5 lordosis",
                                "l1_s1_lordosis": "L1-S1 lordosis",
                                "sacral_slope": "Sacral slope"}

_DT = torch.float64


def _check_record(rec: ImageRecord, schema: LandmarkSchema) -> None:
    if rec.points.shape != (schema.num_points, 2) or rec.visibility.shape != (schema.num_points,):
        raise ValueError(f"record {rec.file_name!r}: points {rec.points.shape} / visibility "
                         f"{rec.visibility.shape} do not match schema {schema.name!r} with "
                         f"{schema.num_points} points")


def record_points(records: Sequence[ImageRecord | None], schema: LandmarkSchema) -> Tensor:
    """(B, P, 2) float64 points of ``records`` in the order of ``schema``; NaN where
    absent (visibility 0) or where the record is None.

    Raises
    ------
    ValueError
        A record's points do not match the schema (the message names the file).
    """
    out = torch.full((len(records), schema.num_points, 2), math.nan, dtype=_DT)
    for i, rec in enumerate(records):
        if rec is None:
            continue
        _check_record(rec, schema)
        pts = torch.as_tensor(np.asarray(rec.points, dtype=np.float64))
        vis = torch.as_tensor(np.asarray(rec.visibility) > 0)
        out[i] = torch.where(vis[:, None], pts, torch.full_like(pts, math.nan))
    return out


def _f(t: Tensor | float) -> float:
    return float(t)


def measure_records(records: Sequence[ImageRecord],
                    schema: LandmarkSchema) -> list[dict[str, Any]]:
    """Clinical parameters of every record (annotations or predictions).

    Parameters
    ----------
    records : sequence of ImageRecord
        Points in the flat order of ``schema``; points with visibility 0 are absent.
    schema : LandmarkSchema

    Returns
    -------
    list of dict
        One row per record, keys in column order: ``file_name``; those of
        ``l1_l5_lordosis_deg``, ``l1_s1_lordosis_deg``, ``sacral_slope_deg`` the schema
        defines (:func:`angle_columns`; degrees, signed, conventions section 4);
        the segmental angles ``<upper>-<lower>_deg`` (e.g. ``L1-L2_deg``); ``facing`` (+1 when
        the anterior side is to the right of the image, -1 to the left, NaN when no endplate
        is complete; schemas with endplates only); ``missing_levels`` (space-separated levels without any point); for
        predictions of the pipeline (records with ``meta["needs_review"]``) also
        ``needs_review`` (1 / 0), ``qc`` (the raised quality-control flags, e.g.
        ``overlap: L5 S1; angle_range: l1_l5_lordosis``, see :mod:`spinelandmarks.qc`) and
        ``suspected_fractures`` (space-separated levels,
        ``SpineResult.suspected_fractures``), ``shift_score`` and ``shifted`` (1 / 0; empty
        when the pipeline has no shift model); then
        the clinical measurements of
        :func:`~spinelandmarks.anatomy.measurements.clinical_columns` (pelvic parameters, body
        heights and Genant grades, disc heights, slips; lengths in mm where the pixel spacing
        is known, ``length_unit_mm``). Angles are floats, NaN where a needed point is absent.
    """
    recs = list(records)
    with_qc = any("needs_review" in r.meta for r in recs)
    pts = record_points(recs, schema)
    params = schema_parameters(pts, schema)
    seg_names = segmental_angle_names(schema)
    seg = segmental_angles(pts, schema) if seg_names else pts.new_empty((len(recs), 0))
    face = facing(pts, schema)
    eps = schema.endplates()
    complete = torch.zeros(len(recs), dtype=torch.bool)
    for e in eps:
        complete |= torch.isfinite(pts[:, [e.posterior, e.anterior]]).all(dim=-1).all(dim=-1)
    spacing = torch.tensor([r.pixel_spacing if r.pixel_spacing is not None
                            else (math.nan, math.nan) for r in recs],
                           dtype=torch.float64).reshape(-1, 2)
    clinical = clinical_columns(pts, schema, spacing)
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(recs):
        row: dict[str, Any] = {"file_name": rec.file_name}
        for name, col in angle_columns(schema).items():
            row[col] = _f(params[name][i])
        for j, name in enumerate(seg_names):
            row[f"{name}_deg"] = _f(seg[i, j])
        if eps:
            row["facing"] = _f(face[i]) if bool(complete[i]) else math.nan
        found = torch.isfinite(pts[i]).all(dim=-1)
        row["missing_levels"] = " ".join(
            lv for lv in schema.level_names if not bool(found[schema.level_indices(lv)].any()))
        row.update({k: _f(v[i]) for k, v in clinical.items()})
        if with_qc:
            row["needs_review"] = int(bool(rec.meta.get("needs_review", False)))
            row["qc"] = "; ".join(f"{k}: {' '.join(v)}"
                                  for k, v in rec.meta.get("qc", {}).items())
            row["suspected_fractures"] = " ".join(rec.meta.get("suspected_fractures", ()))
            row["shift_score"] = rec.meta.get("shift_score")
            shifted = rec.meta.get("shifted")
            row["shifted"] = None if shifted is None else int(bool(shifted))
        rows.append(row)
    return rows


def _csv_cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return ""
        if column in ("facing", "needs_review", "length_unit_mm") or column.endswith(
                ("_genant_grade", "_meyerding")):
            return str(int(v))
        return f"{v:.4f}"
    return str(value)


def write_measurements_csv(records: Iterable[ImageRecord], schema: LandmarkSchema,
                           path: StrPath, *, chunk: int = 256) -> Path:
    """Write :func:`measure_records` as CSV, atomically; NaN as empty cells.

    Parameters
    ----------
    records : iterable of ImageRecord
        Measured ``chunk`` records at a time (memory independent of their number).
    schema : LandmarkSchema
    path : str or PathLike
        Destination CSV (written to a temp file next to it, then moved into place).

    Returns
    -------
    Path
        ``path``. Columns: ``file_name``, those of ``l1_l5_lordosis_deg,l1_s1_lordosis_deg,
        sacral_slope_deg`` the schema defines, then the segmental angles, ``facing`` (schemas
        with endplates), ``missing_levels``, the
        clinical measurements (:func:`~spinelandmarks.anatomy.measurements.clinical_columns`) and,
        for pipeline predictions (the first record has ``meta["needs_review"]``),
        ``needs_review``, ``qc``, ``suspected_fractures``, ``shift_score`` and ``shifted``;
        values with 4 decimals.
    """
    columns = ["file_name", *angle_columns(schema).values(),
               *[f"{n}_deg" for n in segmental_angle_names(schema)],
               *(["facing"] if schema.endplates() else []), "missing_levels",
               *clinical_columns(torch.full((1, schema.num_points, 2), math.nan), schema)]
    it = iter(records)
    first = next(it, None)
    if first is not None and "needs_review" in first.meta:
        columns += ["needs_review", "qc", "suspected_fractures", "shift_score", "shifted"]
    rest = it if first is None else itertools.chain([first], it)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            while batch := list(itertools.islice(rest, chunk)):
                for row in measure_records(batch, schema):
                    writer.writerow([_csv_cell(row.get(c), c) for c in columns])

    out = Path(path)
    atomic_write(out, write)
    return out
