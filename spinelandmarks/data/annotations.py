"""Annotation records and the file formats of the conventions (COCO keypoints, flat CSV).

Intensity and coordinate conventions: points are continuous pixel coordinates (x right,
y down, origin at the top-left corner of the top-left pixel), ordered (x, y).

Formats
-------
COCO keypoints (:func:`read_coco`, :func:`write_coco`)
    One category per level (name = level, keypoints = its point names) or a single category
    whose keypoint names are ``<LEVEL>_<point>``; one annotation per labelled vertebra (or, in
    the single-category form, one per image). ``v = 0`` points are absent: NaN coordinates
    and visibility 0. Predictions add ``score`` per annotation and ``keypoint_scores``.
Flat CSV (:func:`read_csv`, :func:`write_csv`)
    ``file_name,level,point,x,y``, one row per labelled point.

Problems with a file (unknown level or point names, duplicate vertebrae, missing images,
points outside the image, ...) are collected, never reported one at a time:
:func:`validate` returns every :class:`AnnotationProblem`, and readers raise one
:class:`AnnotationError` that lists them all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from .._atomic import atomic_write, atomic_write_text
from .._types import StrPath
from ..schema import LUMBAR_SAGITTAL, LandmarkSchema
from .io import ImageReadError, read_image_size
from .masks import check_segmentation

__all__ = [
    "CSV_COLUMNS",
    "AnnotationError",
    "AnnotationProblem",
    "ImageRecord",
    "read_coco",
    "read_coco_problems",
    "read_csv",
    "validate",
    "write_coco",
    "write_csv",
]

#: Header of the flat CSV format.
CSV_COLUMNS: tuple[str, ...] = ("file_name", "level", "point", "x", "y")


@dataclass
class ImageRecord:
    """All annotations of one image, in the flat point order of a schema.

    Attributes
    ----------
    file_name : str
        Path relative to the dataset root (as in COCO ``images[].file_name``).
    width, height : int
        Image size in pixels.
    points : np.ndarray
        (P, 2) float64 pixel coordinates (x, y); rows of absent points are NaN.
    visibility : np.ndarray
        (P,) int8: 0 absent, 1 labelled but occluded, 2 labelled and visible.
    image_id : int
        COCO image id.
    pixel_spacing : tuple of float or None
        (row_mm, col_mm) when known.
    patient_id : str or None
        Patient identifier used by splits.
    scores : np.ndarray or None
        (P,) per-point confidence for predictions, NaN where unknown.
    level_scores : np.ndarray or None
        (num_levels,) per-vertebra score for predictions (detector score).
    meta : dict
        Free-form extra fields (e.g. the synthetic generator's parameters).
    masks : dict
        Level name -> COCO segmentation of the vertebral body (polygons or RLE,
        :mod:`spinelandmarks.data.masks`), for the levels that have one.
    """

    file_name: str
    width: int
    height: int
    points: np.ndarray
    visibility: np.ndarray
    image_id: int = 0
    pixel_spacing: tuple[float, float] | None = None
    patient_id: str | None = None
    scores: np.ndarray | None = None
    level_scores: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, schema: LandmarkSchema, file_name: str, width: int, height: int,
              **kwargs: Any) -> ImageRecord:
        """A record with every point absent."""
        return cls(file_name, width, height,
                   np.full((schema.num_points, 2), np.nan), np.zeros(schema.num_points, np.int8),
                   **kwargs)

    def levels_present(self, schema: LandmarkSchema) -> list[str]:
        """Levels with at least one labelled point."""
        return [lv for lv in schema.level_names
                if (self.visibility[schema.level_indices(lv)] > 0).any()]


# ---------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------
ProblemKind = Literal[
    "malformed", "missing_image", "unknown_level", "unknown_point", "out_of_bounds",
    "nan_labelled", "duplicate_level", "duplicate_point", "duplicate_image", "size_mismatch",
    "bad_visibility",
]


@dataclass(frozen=True)
class AnnotationProblem:
    """One problem found in an annotation file.

    Attributes
    ----------
    source : str
        The annotation file (or ``"<records>"`` for in-memory records).
    kind : str
        One of ``malformed``, ``missing_image``, ``unknown_level``, ``unknown_point``,
        ``out_of_bounds``, ``nan_labelled``, ``duplicate_level``, ``duplicate_point``,
        ``duplicate_image``, ``size_mismatch``, ``bad_visibility``.
    message : str
        What is wrong.
    image_id, file_name, annotation_id : optional
        The record concerned, as far as known.
    level, point : str or None
        The landmark concerned, when there is one.
    line : int or None
        1-based line of a CSV file.
    """

    source: str
    kind: ProblemKind
    message: str
    image_id: int | None = None
    file_name: str | None = None
    annotation_id: int | None = None
    level: str | None = None
    point: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}{self._where()}: {self.message}"

    def _where(self) -> str:
        where: list[str] = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.image_id is not None:
            where.append(f"image id {self.image_id}")
        if self.file_name is not None:
            where.append(f"file {self.file_name!r}")
        if self.annotation_id is not None:
            where.append(f"annotation id {self.annotation_id}")
        return f" [{', '.join(where)}]" if where else ""

    def describe(self, source: str | None = None) -> str:
        """The problem without its source when that is ``source`` (named once, above)."""
        if source is not None and self.source == source:
            return f"{self._where().strip() or 'file'}: {self.message}"
        return str(self)


class AnnotationError(ValueError):
    """Annotations with problems; ``problems`` lists every one of them.

    Attributes
    ----------
    problems : list of AnnotationProblem
    """

    def __init__(self, problems: Sequence[AnnotationProblem], source: str = "") -> None:
        self.problems = list(problems)
        src = source or None
        if len(self.problems) == 1 and src is not None and self.problems[0].source == src:
            super().__init__(f"{src}: {self.problems[0].describe(src)}")  # one line
            return
        head = f"{len(self.problems)} annotation problem(s)" + (f" in {source}" if source else "")
        super().__init__(head + ":\n" + "\n".join(f"  - {p.describe(src)}"
                                                  for p in self.problems))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _num(v: Any) -> float:
    """JSON number (or null) to float; null -> NaN."""
    return math.nan if v is None else float(v)


def _json_float(v: float) -> float | None:
    """float to JSON; NaN -> null."""
    f = float(v)
    return None if math.isnan(f) else f


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _skeleton(n: int, offset: int = 0) -> list[list[int]]:
    """1-based COCO skeleton: a ring for 3+ points, a segment for 2."""
    if n >= 3:
        return [[offset + i + 1, offset + (i + 1) % n + 1] for i in range(n)]
    if n == 2:
        return [[offset + 1, offset + 2]]
    return []


_STANDARD_IMAGE_KEYS = frozenset({"id", "file_name", "width", "height", "pixel_spacing",
                                  "patient_id"})


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------
@dataclass
class _Category:
    """How one COCO category maps to the schema."""

    id: int
    name: str
    level: str | None  # the level of a per-level category; None for the flat form / unknown
    known: bool  # False: the category name is no level and no keypoint is a flat name
    indices: list[int | None]  # flat index of each keypoint, None when unknown
    names: list[tuple[str, str]]  # (level, point) as written, for messages


def _parse_category(cat: Mapping[str, Any], schema: LandmarkSchema) -> _Category:
    name = str(cat.get("name", ""))
    kp_names = [str(k) for k in cat.get("keypoints", [])]
    cid = int(cat["id"])
    if name in schema.level_names:
        indices: list[int | None] = []
        for k in kp_names:
            try:
                indices.append(schema.index(name, k))
            except KeyError:
                indices.append(None)
        return _Category(cid, name, name, True, indices, [(name, k) for k in kp_names])
    split = [k.partition("_") for k in kp_names]
    names = [(lv, pt) for (lv, _, pt) in split]
    if any(lv in schema.level_names for (lv, _) in names):
        indices = []
        for lv, pt in names:
            try:
                indices.append(schema.index(lv, pt))
            except KeyError:
                indices.append(None)
        return _Category(cid, name, None, True, indices, names)
    return _Category(cid, name, None, False, [None] * len(kp_names), [(name, k) for k in kp_names])


def read_coco(path: StrPath, schema: LandmarkSchema = LUMBAR_SAGITTAL, *,
              validate: bool = False, root: StrPath | None = None) -> list[ImageRecord]:
    """Read a COCO keypoints file (annotations or predictions) into records.

    Parameters
    ----------
    path : str or PathLike
        The JSON file.
    schema : LandmarkSchema
        Points are stored in its flat order (``schema.index(level, point)``).
    validate : bool
        Also run :func:`validate` (image files exist and have the stated size, labelled points
        finite and inside the image) and raise if it finds anything.
    root : str or PathLike, optional
        Dataset root that ``file_name`` is relative to; default: the folder of ``path``.

    Returns
    -------
    list of ImageRecord
        One per ``images`` entry, in file order. ``points`` (P, 2) float64 pixels, NaN where
        ``v = 0``; ``visibility`` (P,) int8; ``level_scores`` (num_levels,) from each
        annotation's ``score`` and ``scores`` (P,) from ``keypoint_scores`` when present (NaN
        where absent); unknown image fields go to ``meta``.

    Raises
    ------
    AnnotationError
        Listing every problem at once: malformed entries, unknown levels (categories) or point
        names on labelled points, duplicate vertebrae or points in one image, annotations of
        unknown images; with ``validate`` also the problems :func:`validate` reports.
    """
    records, problems = read_coco_problems(path, schema, validate=validate, root=root)
    if problems:
        raise AnnotationError(problems, str(Path(path)))
    return records


def read_coco_problems(path: StrPath, schema: LandmarkSchema = LUMBAR_SAGITTAL, *,
                       validate: bool = False, root: StrPath | None = None,
                       prepare: Callable[[list[ImageRecord]], object] | None = None
                       ) -> tuple[list[ImageRecord], list[AnnotationProblem]]:
    """As :func:`read_coco`, returning the problems instead of raising them.

    Parameters
    ----------
    path, schema, validate, root
        As for :func:`read_coco`.
    prepare : callable, optional
        Called with the records before they are validated (e.g.
        :func:`~spinelandmarks.data.lenient.clip_to_border`).

    Returns
    -------
    records : list of ImageRecord
        Every record that could be read (those with problems included).
    problems : list of AnnotationProblem
        Every problem; each one of a record names its ``image_id``.

    Raises
    ------
    AnnotationError
        The file cannot be read at all (missing, not JSON, not an object).
    """
    p = Path(path)
    reader = _CocoReader(str(p), schema)
    data = reader.load(p)
    records = reader.images(data.get("images", []))
    cats = reader.categories(data.get("categories", []))
    for n, ann in enumerate(data.get("annotations", [])):
        reader.annotation(n, ann, cats)
    if prepare is not None:
        prepare(records)
    if validate:
        reader.problems.extend(_validate(records, schema,
                                         Path(root) if root is not None else p.parent,
                                         reader.src, reader.ann_ids))
    return records, reader.problems


class _CocoReader:
    """The steps of :func:`read_coco`, collecting every problem instead of stopping."""

    def __init__(self, src: str, schema: LandmarkSchema) -> None:
        self.src, self.schema = src, schema
        self.problems: list[AnnotationProblem] = []
        self.by_id: dict[int, ImageRecord] = {}
        self.ann_ids: dict[tuple[int, str], int] = {}  # (image id, level) -> annotation id
        self.point_owner: dict[tuple[int, int], int] = {}  # (image id, point) -> annotation id

    def load(self, p: Path) -> dict[str, Any]:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AnnotationError([AnnotationProblem(
                self.src, "malformed", f"cannot read the file: {exc.strerror or exc}")],
                self.src) from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnotationError([AnnotationProblem(self.src, "malformed",
                                                     f"cannot read JSON: {exc}")],
                                  self.src) from exc
        if not isinstance(data, dict):
            raise AnnotationError([AnnotationProblem(self.src, "malformed",
                                                     "top level is not an object")], self.src)
        return data

    def _add(self, kind: ProblemKind, msg: str, **where: Any) -> None:
        self.problems.append(AnnotationProblem(self.src, kind, msg, **where))

    # -- images ---------------------------------------------------------------------------
    def images(self, entries: Sequence[Any]) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for n, img in enumerate(entries):
            rec = self._image(n, img)
            if rec is None:
                continue
            if rec.image_id in self.by_id:
                self._add("duplicate_image", f"duplicate image id {rec.image_id}",
                          image_id=rec.image_id, file_name=rec.file_name)
                continue
            self.by_id[rec.image_id] = rec
            records.append(rec)
        return records

    def _image(self, n: int, img: Any) -> ImageRecord | None:
        try:
            iid = int(img["id"])
            fname = str(img["file_name"])
        except (KeyError, TypeError, ValueError) as exc:
            self._add("malformed", f"images[{n}] lacks a valid id/file_name: {exc}")
            return None
        try:
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError):
            self._add("malformed", "missing or invalid width/height", image_id=iid,
                      file_name=fname)
            width, height = 0, 0
        spacing: tuple[float, float] | None = None
        if img.get("pixel_spacing") is not None:
            try:
                ps = img["pixel_spacing"]
                if len(ps) != 2:
                    raise ValueError(f"expected [row_mm, col_mm], got {ps!r}")
                spacing = (float(ps[0]), float(ps[1]))
            except (TypeError, ValueError) as exc:
                self._add("malformed", f"invalid pixel_spacing: {exc}", image_id=iid,
                          file_name=fname)
        pid = img.get("patient_id")
        meta = {k: v for k, v in img.items() if k not in _STANDARD_IMAGE_KEYS}
        return ImageRecord.empty(self.schema, fname, width, height, image_id=iid,
                                 pixel_spacing=spacing,
                                 patient_id=None if pid is None else str(pid), meta=meta)

    # -- categories -----------------------------------------------------------------------
    def categories(self, entries: Sequence[Any]) -> dict[int, _Category]:
        cats: dict[int, _Category] = {}
        for n, cat in enumerate(entries):
            try:
                c = _parse_category(cat, self.schema)
            except (KeyError, TypeError, ValueError) as exc:
                self._add("malformed", f"categories[{n}] is malformed: {exc}")
                continue
            cats[c.id] = c
        return cats

    # -- annotations ----------------------------------------------------------------------
    def annotation(self, n: int, ann: Any, cats: Mapping[int, _Category]) -> None:
        try:
            aid = int(ann.get("id", n + 1))
            iid = int(ann["image_id"])
            cid = int(ann["category_id"])
            kps = list(ann["keypoints"])
        except (KeyError, TypeError, ValueError) as exc:
            self._add("malformed", f"annotations[{n}] is malformed: {exc}")
            return
        rec = self.by_id.get(iid)
        where: dict[str, Any] = {"image_id": iid, "annotation_id": aid,
                                 "file_name": rec.file_name if rec is not None else None}
        if rec is None:
            self._add("malformed", f"annotation refers to image id {iid}, which is not in "
                                   "images", **where)
            return
        cat = self._category_of(cid, kps, cats, where)
        if cat is None:
            return
        kp_scores = ann.get("keypoint_scores")
        if kp_scores is not None and len(kp_scores) != len(cat.indices):
            self._add("malformed", f"{len(kp_scores)} keypoint_scores for "
                                   f"{len(cat.indices)} keypoints", **where)
            kp_scores = None
        labelled = self._keypoints(rec, cat, kps, kp_scores, where)
        self._scores(rec, cat, ann, labelled)
        if ann.get("segmentation") and cat.level is not None:
            try:
                rec.masks[cat.level] = check_segmentation(ann["segmentation"])
            except ValueError as exc:
                self._add("malformed", f"segmentation of {cat.level}: {exc}",
                          level=cat.level, **where)

    def _category_of(self, cid: int, kps: list[Any], cats: Mapping[int, _Category],
                     where: dict[str, Any]) -> _Category | None:
        """The annotation's category, when its points can be read into the schema."""
        cat = cats.get(cid)
        if cat is None:
            self._add("unknown_level", f"unknown category id {cid}", **where)
            return None
        if len(kps) != 3 * len(cat.indices):
            self._add("malformed", f"{len(kps)} keypoint values for the {len(cat.indices)} "
                                   f"keypoints of category {cat.name!r} (expected "
                                   f"{3 * len(cat.indices)})", **where)
            return None
        if not cat.known:
            if any(v not in (0, None) for v in kps[2::3]):
                self._add("unknown_level", f"unknown level (category) {cat.name!r} (id {cid}); "
                                           f"schema {self.schema.name!r} has "
                                           f"{list(self.schema.level_names)}",
                          level=cat.name, **where)
            return None
        if cat.level is not None:
            key = (where["image_id"], cat.level)
            if key in self.ann_ids:
                self._add("duplicate_level", f"duplicate vertebra {cat.level}: also annotation "
                                             f"id {self.ann_ids[key]}", level=cat.level, **where)
                return None
            self.ann_ids[key] = where["annotation_id"]
        return cat

    def _keypoints(self, rec: ImageRecord, cat: _Category, kps: list[Any],
                   kp_scores: list[Any] | None, where: dict[str, Any]) -> list[str]:
        """Read the annotation's points into ``rec``; the levels with a labelled point."""
        labelled: list[str] = []
        reported: set[str] = set()
        for k, idx in enumerate(cat.indices):
            x, y, v_raw = kps[3 * k: 3 * k + 3]
            lv, pt = cat.names[k]
            v = _visibility(v_raw)
            if v is None:
                self._add("bad_visibility", f"visibility {v_raw!r} of {lv} {pt} is not 0, 1 "
                                            "or 2", level=lv, point=pt, **where)
                continue
            if idx is None:
                if v > 0 and f"{lv}_{pt}" not in reported:
                    reported.add(f"{lv}_{pt}")
                    self._unknown_point(lv, pt, where)
                continue
            if kp_scores is not None:
                if rec.scores is None:
                    rec.scores = np.full(self.schema.num_points, np.nan)
                rec.scores[idx] = _num(kp_scores[k])
            if v > 0 and self._point(rec, idx, x, y, v, (lv, pt), where):
                if lv not in labelled:
                    labelled.append(lv)
                if cat.level is None:
                    self.ann_ids.setdefault((where["image_id"], lv), where["annotation_id"])
        return labelled

    def _unknown_point(self, lv: str, pt: str, where: dict[str, Any]) -> None:
        if lv in self.schema.level_names:
            self._add("unknown_point", f"unknown point {pt!r} of level {lv}; known: "
                                       f"{list(self.schema.level(lv).points)}",
                      level=lv, point=pt, **where)
        else:
            self._add("unknown_level", f"unknown level {lv!r} (keypoint {lv}_{pt}); schema "
                                       f"{self.schema.name!r} has "
                                       f"{list(self.schema.level_names)}",
                      level=lv, point=pt, **where)

    def _point(self, rec: ImageRecord, idx: int, x: Any, y: Any, v: int,
               name: tuple[str, str], where: dict[str, Any]) -> bool:
        """Store one labelled point; False (and a problem) when it cannot be."""
        lv, pt = name
        owner = self.point_owner.get((where["image_id"], idx))
        if owner is not None:
            first = rec.points[idx]
            self._add("duplicate_point", f"{lv} {pt} is labelled twice: at ({first[0]:.6g}, "
                                         f"{first[1]:.6g}) in annotation id {owner} and at "
                                         f"({x}, {y}) here; keep one", level=lv, point=pt,
                      **where)
            return False
        self.point_owner[(where["image_id"], idx)] = where["annotation_id"]
        try:
            rec.points[idx] = (_num(x), _num(y))
        except (TypeError, ValueError):
            self._add("malformed", f"non-numeric coordinates ({x!r}, {y!r}) of {lv} {pt}",
                      level=lv, point=pt, **where)
            return False
        rec.visibility[idx] = v
        return True

    def _scores(self, rec: ImageRecord, cat: _Category, ann: Any, labelled: list[str]) -> None:
        """Level scores: a per-level annotation's ``score``, or a single-category one's
        ``level_scores`` (else its ``score`` for every labelled level)."""
        if cat.level is not None:
            if "score" in ann:
                _set_level_score(rec, self.schema, cat.level, ann["score"])
            return
        lscores = ann.get("level_scores")
        if lscores is not None and len(lscores) == self.schema.num_levels:
            for lv, sc in zip(self.schema.level_names, lscores, strict=True):
                _set_level_score(rec, self.schema, lv, sc)
        elif "score" in ann:
            for lv in labelled:
                _set_level_score(rec, self.schema, lv, ann["score"])


def _visibility(v_raw: Any) -> int | None:
    """A COCO visibility flag as 0, 1 or 2; None when it is anything else."""
    try:
        v = int(v_raw)
    except (TypeError, ValueError):
        return None
    return v if v in (0, 1, 2) else None


def _set_level_score(rec: ImageRecord, schema: LandmarkSchema, level: str, score: Any) -> None:
    if rec.level_scores is None:
        rec.level_scores = np.full(schema.num_levels, np.nan)
    rec.level_scores[schema.level_index(level)] = _num(score)


def _image_entry(rec: ImageRecord, iid: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": iid, "file_name": rec.file_name, "width": int(rec.width),
                             "height": int(rec.height)}
    if rec.pixel_spacing is not None:
        entry["pixel_spacing"] = [float(rec.pixel_spacing[0]), float(rec.pixel_spacing[1])]
    if rec.patient_id is not None:
        entry["patient_id"] = str(rec.patient_id)
    for k, v in rec.meta.items():
        if k in _STANDARD_IMAGE_KEYS:
            raise ValueError(f"record {rec.file_name!r}: meta key {k!r} collides with a COCO "
                             "image field")
        entry[k] = v
    return entry


def _keypoints(rec: ImageRecord, idx: Sequence[int]) -> tuple[list[float | int | None], int,
                                                                list[float]]:
    """COCO ``[x, y, v, ...]`` of flat indices, number labelled, and the tight bbox."""
    kps: list[float | int | None] = []
    xs: list[float] = []
    ys: list[float] = []
    for i in idx:
        v = int(rec.visibility[i])
        if v == 0:
            kps += [0, 0, 0]
            continue
        x, y = float(rec.points[i, 0]), float(rec.points[i, 1])
        kps += [_json_float(x), _json_float(y), v]
        if not (math.isnan(x) or math.isnan(y)):
            xs.append(x)
            ys.append(y)
    n = sum(1 for i in idx if rec.visibility[i] > 0)
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)] if xs else [0.0] * 4
    return kps, n, bbox


def write_coco(records: Iterable[ImageRecord], schema: LandmarkSchema, path: StrPath, *,
               categories: Literal["per_level", "single"] = "per_level") -> None:
    """Write records as a COCO keypoints file (annotations or predictions), atomically.

    Parameters
    ----------
    records : iterable of ImageRecord
        Points in the flat order of ``schema``. Image ids are kept when unique, else the
        images are numbered 1..N in order. A re-iterable collection (a list, or a view that
        reads records from disk each time it is iterated) is streamed: the file is written
        entry by entry, in memory independent of the number of records; a one-shot iterator
        is read into a list first.
    schema : LandmarkSchema
    path : str or PathLike
        Destination JSON file (written to a temp file, then moved into place).
    categories : {"per_level", "single"}
        ``"per_level"``: one category per level and one annotation per level with at least one
        labelled point. ``"single"``: one category with ``<LEVEL>_<point>`` keypoints and one
        annotation per image with a labelled point (its per-level scores go to a
        ``level_scores`` list, and ``score`` is their mean).

    Notes
    -----
    ``v = 0`` points are written as ``0, 0, 0``; NaN values (coordinates of a labelled point,
    scores) as ``null``. ``masks`` go to each level's ``segmentation`` (``"per_level"`` only).
    ``meta`` entries become image fields and must be JSON-serializable (tuples come back as
    lists). :func:`read_coco` reads the file back to equal records. The text is that of
    ``json.dumps(document, indent=1)``.
    """
    if categories not in ("per_level", "single"):
        raise ValueError(f"categories must be 'per_level' or 'single', got {categories!r}")
    recs: Iterable[ImageRecord] = list(records) if iter(records) is records else records

    def write(tmp: str) -> None:
        # One pass over the records; a second, numbering the images, only if an id repeats.
        if not _write_document(tmp, recs, schema, categories, renumber=False):
            _write_document(tmp, recs, schema, categories, renumber=True)

    atomic_write(Path(path), write)


def _check_record(r: ImageRecord, schema: LandmarkSchema) -> None:
    if r.points.shape != (schema.num_points, 2) or r.visibility.shape != (schema.num_points,):
        raise ValueError(f"record {r.file_name!r}: points {r.points.shape} / visibility "
                         f"{r.visibility.shape} do not match schema {schema.name!r} with "
                         f"{schema.num_points} points")


def _write_document(tmp: str, recs: Iterable[ImageRecord], schema: LandmarkSchema,
                    categories: str, *, renumber: bool) -> bool:
    """Write the COCO document in one pass over ``recs``: images into ``tmp``, annotations
    spooled to a temporary file beside it and appended after them. Image ids are the
    records' own, or 1..N with ``renumber``; returns False (``tmp`` incomplete) when an own
    id repeats."""
    seen: set[int] = set()
    with open(tmp, "w", encoding="utf-8") as f, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=Path(tmp).parent) as spool:
        f.write('{\n "info": ' + _dumps({"description": "spinelandmarks annotations",
                                          "schema": schema.to_dict()}, 1) + ',\n "images": [')
        n_ann = 0
        for i, r in enumerate(recs):
            _check_record(r, schema)
            iid = i + 1 if renumber else int(r.image_id)
            if iid in seen:
                return False
            seen.add(iid)
            f.write(("\n  " if i == 0 else ",\n  ") + _dumps(_image_entry(r, iid), 2))
            for ann in _annotations(r, iid, schema, categories):
                n_ann += 1
                spool.write(("\n  " if n_ann == 1 else ",\n  ")
                            + _dumps({"id": n_ann, **ann}, 2))
        f.write("\n ]" if seen else "]")
        f.write(',\n "annotations": [')
        spool.seek(0)
        shutil.copyfileobj(spool, f)
        f.write("\n ]" if n_ann else "]")
        f.write(",\n")
        _write_array(f, "categories", iter(_categories(schema, categories)))
        f.write("\n}\n")
    return True


def _dumps(value: Any, depth: int) -> str:
    """``json.dumps(value, indent=1)`` as it appears ``depth`` levels deep in a document."""
    text = json.dumps(value, indent=1, allow_nan=False, default=_json_default)
    return text.replace("\n", "\n" + " " * depth)


def _write_array(f: IO[str], key: str, items: Iterator[Any]) -> None:
    """`` "key": [ ... ]`` of the top-level object, one item at a time."""
    first = next(items, _END)
    if first is _END:
        f.write(f' "{key}": []')
        return
    f.write(f' "{key}": [\n  ' + _dumps(first, 2))
    for item in items:
        f.write(",\n  " + _dumps(item, 2))
    f.write("\n ]")


_END = object()


def _categories(schema: LandmarkSchema, categories: str) -> list[dict[str, Any]]:
    if categories == "per_level":
        return [{"id": c + 1, "name": lv.name, "supercategory": "vertebra",
                 "keypoints": list(lv.points), "skeleton": _skeleton(len(lv.points))}
                for c, lv in enumerate(schema.levels)]
    skeleton: list[list[int]] = []
    for lv in schema.levels:
        skeleton += _skeleton(len(lv.points), schema.level_offset(lv.name))
    return [{"id": 1, "name": schema.name, "supercategory": "spine",
             "keypoints": list(schema.point_names), "skeleton": skeleton}]


def _annotations(r: ImageRecord, iid: int, schema: LandmarkSchema, categories: str
                 ) -> Iterator[dict[str, Any]]:
    """The annotations of one record (without their ``id``)."""
    if categories == "per_level":
        for c, lv in enumerate(schema.levels):
            idx = schema.level_indices(lv.name)
            kps, n, bbox = _keypoints(r, idx)
            if n == 0 and lv.name not in r.masks:
                continue
            ann: dict[str, Any] = {"image_id": iid, "category_id": c + 1, "keypoints": kps,
                                   "num_keypoints": n, "bbox": bbox,
                                   "area": bbox[2] * bbox[3], "iscrowd": 0}
            if lv.name in r.masks:
                ann["segmentation"] = r.masks[lv.name]
            if r.level_scores is not None:
                ann["score"] = _json_float(r.level_scores[c])
            if r.scores is not None:
                ann["keypoint_scores"] = [_json_float(r.scores[i]) for i in idx]
            yield ann
        return
    kps, n, bbox = _keypoints(r, range(schema.num_points))
    if n == 0:
        return
    ann = {"image_id": iid, "category_id": 1, "keypoints": kps, "num_keypoints": n,
           "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
    if r.level_scores is not None:
        finite = r.level_scores[np.isfinite(r.level_scores)]
        ann["score"] = float(finite.mean()) if finite.size else None
        ann["level_scores"] = [_json_float(s) for s in r.level_scores]
    if r.scores is not None:
        ann["keypoint_scores"] = [_json_float(s) for s in r.scores]
    yield ann


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def read_csv(path: StrPath, schema: LandmarkSchema = LUMBAR_SAGITTAL,
             images_root: StrPath | None = None) -> list[ImageRecord]:
    """Read the flat CSV ``file_name,level,point,x,y`` (one row per labelled point).

    Parameters
    ----------
    path : str or PathLike
    schema : LandmarkSchema
    images_root : str or PathLike, optional
        Folder that ``file_name`` is relative to; when given, width and height are read from
        each image's header, else they are 0.

    Returns
    -------
    list of ImageRecord
        One per distinct ``file_name``, in order of first appearance, ``image_id`` 1..N; every
        listed point has visibility 2 (the format has no visibility column).

    Raises
    ------
    AnnotationError
        Listing every problem: missing columns, unknown levels or points, duplicate points,
        non-numeric coordinates, unreadable images (with ``images_root``).
    """
    p = Path(path)
    src = str(p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError([AnnotationProblem(src, "malformed", f"cannot read: {exc}")],
                              src) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationError([AnnotationProblem(
            src, "malformed", f"missing column(s) {missing}; expected header "
                              f"{','.join(CSV_COLUMNS)}", line=1)], src)
    problems: list[AnnotationProblem] = []
    records: dict[str, ImageRecord] = {}
    seen: dict[tuple[str, int], int] = {}
    for row in reader:
        line = reader.line_num
        fname = (row["file_name"] or "").strip()
        lv, pt = (row["level"] or "").strip(), (row["point"] or "").strip()
        if fname not in records:
            records[fname] = ImageRecord.empty(schema, fname, 0, 0, image_id=len(records) + 1)
        rec = records[fname]

        def problem(kind: ProblemKind, msg: str, _line: int = line, _rec: ImageRecord = rec,
                    _lv: str = lv, _pt: str = pt) -> None:
            problems.append(AnnotationProblem(src, kind, msg, image_id=_rec.image_id,
                                              file_name=_rec.file_name, level=_lv or None,
                                              point=_pt or None, line=_line))

        try:
            idx = schema.index(lv, pt)
        except KeyError as exc:
            kind: ProblemKind = "unknown_level" if lv not in schema.level_names else "unknown_point"
            problem(kind, str(exc.args[0]))
            continue
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            problem("malformed", f"non-numeric coordinates ({row['x']!r}, {row['y']!r})")
            continue
        if (fname, idx) in seen:
            problem("duplicate_point", f"{lv} {pt} listed twice (also line {seen[(fname, idx)]})")
            continue
        seen[(fname, idx)] = line
        rec.points[idx] = (x, y)
        rec.visibility[idx] = 2
    if images_root is not None:
        for rec in records.values():
            try:
                rec.height, rec.width = read_image_size(Path(images_root) / rec.file_name)
            except (FileNotFoundError, ImageReadError) as exc:
                problems.append(AnnotationProblem(src, "missing_image", str(exc),
                                                  image_id=rec.image_id, file_name=rec.file_name))
    if problems:
        raise AnnotationError(problems, src)
    return list(records.values())


def write_csv(records: Iterable[ImageRecord], schema: LandmarkSchema, path: StrPath) -> None:
    """Write the flat CSV ``file_name,level,point,x,y``, atomically.

    One row per labelled point (visibility > 0), records in order, points in schema order.
    Visibility, sizes, scores and metadata are not part of the format.
    """
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        for i in np.flatnonzero(rec.visibility > 0):
            lv, pt = schema.level_point(int(i))
            writer.writerow([rec.file_name, lv, pt, repr(float(rec.points[i, 0])),
                             repr(float(rec.points[i, 1]))])
    atomic_write_text(Path(path), buf.getvalue())


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def validate(records: Sequence[ImageRecord], schema: LandmarkSchema, root: StrPath | None, *,
             source: str = "<records>") -> list[AnnotationProblem]:
    """Every problem of a set of records, at once.

    Parameters
    ----------
    records : sequence of ImageRecord
    schema : LandmarkSchema
    root : str or PathLike or None
        Dataset root that ``file_name`` is relative to; None skips the file checks.
    source : str
        Name of the annotation file, used in the messages.

    Returns
    -------
    list of AnnotationProblem
        Arrays not matching the schema, duplicate image ids or file names, missing or
        unreadable image files, width/height not matching the file header, labelled points
        with NaN coordinates, outside ``[0, width] x [0, height]``, or with visibility not in
        {0, 1, 2}. Empty when all is well.
    """
    return _validate(records, schema, Path(root) if root is not None else None, source, {})


def _validate(records: Sequence[ImageRecord], schema: LandmarkSchema, root: Path | None,
              source: str, ann_ids: Mapping[tuple[int, str], int]) -> list[AnnotationProblem]:
    problems: list[AnnotationProblem] = []
    seen_ids: dict[int, str] = {}
    seen_files: dict[str, int] = {}
    for rec in records:
        iid, fname = int(rec.image_id), rec.file_name

        def problem(kind: ProblemKind, msg: str, level: str | None = None,
                    point: str | None = None, _iid: int = iid, _fn: str = fname) -> None:
            aid = ann_ids.get((_iid, level)) if level is not None else None
            problems.append(AnnotationProblem(source, kind, msg, image_id=_iid, file_name=_fn,
                                              annotation_id=aid, level=level, point=point))

        if iid in seen_ids:
            problem("duplicate_image", f"image id {iid} also used by {seen_ids[iid]!r}")
        seen_ids.setdefault(iid, fname)
        if fname in seen_files:
            problem("duplicate_image", f"file listed twice (also image id {seen_files[fname]})")
        seen_files.setdefault(fname, iid)

        if rec.points.shape != (schema.num_points, 2) or rec.visibility.shape != (
                schema.num_points,):
            problem("malformed", f"points {rec.points.shape} / visibility {rec.visibility.shape} "
                                 f"do not match the {schema.num_points} points of schema "
                                 f"{schema.name!r}")
            continue

        if root is not None:
            fpath = root / fname
            if not fpath.is_file():
                problem("missing_image", f"image file {str(fpath)!r} does not exist")
            else:
                try:
                    h, w = read_image_size(fpath)
                except ImageReadError as exc:
                    problem("missing_image", f"image file cannot be read: {exc}")
                else:
                    if (w, h) != (rec.width, rec.height):
                        problem("size_mismatch", f"width x height {rec.width} x {rec.height} "
                                                 f"does not match the file's {w} x {h}")

        for i in range(schema.num_points):
            v = int(rec.visibility[i])
            lv, pt = schema.level_point(i)
            if v not in (0, 1, 2):
                problem("bad_visibility", f"visibility {v} of {lv} {pt} is not 0, 1 or 2", lv, pt)
                continue
            if v == 0:
                continue
            x, y = float(rec.points[i, 0]), float(rec.points[i, 1])
            if math.isnan(x) or math.isnan(y):
                problem("nan_labelled", f"{lv} {pt} is labelled (v={v}) but its coordinates "
                                        f"are NaN", lv, pt)
            elif rec.width > 0 and rec.height > 0 and not (
                    0.0 <= x <= rec.width and 0.0 <= y <= rec.height):
                problem("out_of_bounds", f"{lv} {pt} at ({x:.6g}, {y:.6g}) lies outside the "
                                         f"{rec.width} x {rec.height} image", lv, pt)
    return problems
