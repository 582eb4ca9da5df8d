"""CVAT's native format, *CVAT for images 1.1* (``annotations.xml``), for the correction loop.

One ``<image>`` per radiograph (``name`` as the task knows it, ``width``, ``height``) holds one
``<skeleton label="LEVEL">`` per labelled level, whose elements are ``<points
label="POINT" points="x,y" outside="0|1" occluded="0|1">`` in the level's point order (an
absent point is ``outside="1"``). ``<meta>`` declares each level as a skeleton label and its
points as sub-labels (``<parent>LEVEL</parent>``), as CVAT writes them, so the file can be
uploaded to a task whose labels are the project's skeletons (``cvat_labels.json``).

The reader also accepts levels drawn as plain ``<points label="LEVEL" points="x1,y1;...">``
shapes with exactly the level's points in order, and single points labelled ``LEVEL POINT``
or ``LEVEL_POINT``; the XML alone or in a zip (CVAT's export: ``annotations.xml`` at the top).
Coordinates are written with full precision, so a round trip returns the same points.

Specification: https://docs.cvat.ai/docs/other/xml_format (version 1.1, annotation mode).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from .._atomic import atomic_write_text
from ..schema import LandmarkSchema
from .annotations import AnnotationProblem, ImageRecord, ProblemKind

__all__ = ["CVAT_XML", "read_cvat_xml", "write_cvat_xml"]

#: The name CVAT gives the XML in its exports (and looks for in an uploaded zip).
CVAT_XML = "annotations.xml"


def _coord(v: float) -> str:
    return repr(float(v))  # shortest text that reads back as the same float


def cvat_xml_text(records: Sequence[ImageRecord], schema: LandmarkSchema,
                  svgs: dict[str, str] | None = None) -> str:
    """The ``annotations.xml`` of ``records`` (named as the task knows its images)."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = "spinelandmarks"
    ET.SubElement(task, "size").text = str(len(records))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for lv in schema.levels:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = lv.name
        ET.SubElement(label, "type").text = "skeleton"
        ET.SubElement(label, "attributes")
        if svgs and lv.name in svgs:
            ET.SubElement(label, "svg").text = svgs[lv.name]
        for pt in lv.points:
            sub = ET.SubElement(labels, "label")
            ET.SubElement(sub, "name").text = pt
            ET.SubElement(sub, "type").text = "points"
            ET.SubElement(sub, "attributes")
            ET.SubElement(sub, "parent").text = lv.name
    for k, rec in enumerate(records):
        image = ET.SubElement(root, "image", {"id": str(k), "name": rec.file_name,
                                              "width": str(int(rec.width)),
                                              "height": str(int(rec.height))})
        for lv in schema.levels:
            idx = schema.level_indices(lv.name)
            labelled = [bool(rec.visibility[i] > 0 and np.isfinite(rec.points[i]).all())
                        for i in idx]
            if not any(labelled):
                continue
            skel = ET.SubElement(image, "skeleton", {"label": lv.name, "source": "manual",
                                                     "z_order": "0"})
            for i, pt, on in zip(idx, lv.points, labelled, strict=True):
                x, y = (rec.points[i] if on else (0.0, 0.0))
                ET.SubElement(skel, "points", {
                    "label": pt, "source": "manual", "outside": "0" if on else "1",
                    "occluded": "1" if on and rec.visibility[i] == 1 else "0",
                    "points": f"{_coord(x)},{_coord(y)}"})
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def write_cvat_xml(records: Sequence[ImageRecord], schema: LandmarkSchema,
                   path: str | os.PathLike[str], svgs: dict[str, str] | None = None) -> Path:
    """Write ``records`` as *CVAT for images 1.1* XML (atomically) and return the path."""
    p = Path(path)
    atomic_write_text(p, cvat_xml_text(records, schema, svgs))
    return p


def _xml_bytes(p: Path) -> bytes:
    if not zipfile.is_zipfile(p):
        return p.read_bytes()
    with zipfile.ZipFile(p) as z:
        names = [n for n in z.namelist() if Path(n).name == CVAT_XML]
        if not names:
            raise ValueError(f"{p}: no {CVAT_XML} in the archive (export the task as CVAT for "
                             "images 1.1)")
        return z.read(min(names, key=len))


def read_cvat_xml(path: str | os.PathLike[str], schema: LandmarkSchema
                  ) -> tuple[list[ImageRecord], list[AnnotationProblem]]:
    """Records and problems from a *CVAT for images 1.1* export (the XML or its zip).

    Returns
    -------
    records : list of ImageRecord
        One per ``<image>``, ``image_id`` = its ``id`` + 1, points in the schema's order.
    problems : list of AnnotationProblem
        Unknown labels, points labelled twice (both positions named), malformed shapes; each
        names its image.

    Raises
    ------
    ValueError
        The file is not XML of that format.
    """
    p = Path(path)
    try:
        root = ET.fromstring(_xml_bytes(p))
    except ET.ParseError as exc:
        raise ValueError(f"{p}: not CVAT XML ({exc})") from exc
    if root.tag != "annotations":
        raise ValueError(f"{p}: not CVAT for images XML (top element <{root.tag}>, expected "
                         "<annotations>)")
    records: list[ImageRecord] = []
    problems: list[AnnotationProblem] = []
    for n, image in enumerate(root.iter("image")):
        records.append(_ImageReader(str(p), schema, n, image, problems).read())
    return records, problems


class _ImageReader:
    """One ``<image>`` into a record, its problems appended to ``problems``."""

    def __init__(self, src: str, schema: LandmarkSchema, n: int, image: ET.Element,
                 problems: list[AnnotationProblem]) -> None:
        self.src, self.schema, self.image, self.problems = src, schema, image, problems
        self.iid = int(image.get("id", n)) + 1
        self.name = image.get("name", "")
        self.rec = ImageRecord.empty(schema, self.name, int(float(image.get("width", 0))),
                                     int(float(image.get("height", 0))), image_id=self.iid)
        self.names = {f"{lv} {pt}": i for i, (lv, pt) in
                      enumerate(schema.level_point(i) for i in range(schema.num_points))}
        self.names.update({f"{lv}_{pt}": i for i, (lv, pt) in
                           enumerate(schema.level_point(i) for i in range(schema.num_points))})

    def problem(self, kind: ProblemKind, msg: str, level: str | None = None,
                point: str | None = None) -> None:
        self.problems.append(AnnotationProblem(self.src, kind, msg, image_id=self.iid,
                                               file_name=self.name or None, level=level,
                                               point=point))

    def read(self) -> ImageRecord:
        if not self.name:
            self.problem("malformed", "<image> without a name")
        for shape in self.image:
            label = shape.get("label", "")
            if shape.tag == "skeleton":
                self._skeleton(shape, label)
            elif shape.tag == "points":
                self._points(shape, label)
        return self.rec

    def _skeleton(self, shape: ET.Element, level: str) -> None:
        if level not in self.schema.level_names:
            self.problem("unknown_level", f"unknown skeleton label {level!r}; schema "
                                          f"{self.schema.name!r} has "
                                          f"{list(self.schema.level_names)}", level=level)
            return
        points = self.schema.level(level).points
        for el in shape.iter("points"):
            pt = el.get("label", "")
            if pt not in points:
                self.problem("unknown_point", f"unknown point {pt!r} of {level}; known: "
                                              f"{list(points)}", level, pt)
            elif el.get("outside", "0") not in ("1", "true", "True"):
                xy = self._xy(el.get("points", ""), 1, level, pt)
                if xy is not None:
                    self._set(self.schema.index(level, pt), xy[0],
                              1 if el.get("occluded", "0") in ("1", "true", "True") else 2)

    def _points(self, shape: ET.Element, label: str) -> None:
        if label in self.names:
            xy = self._xy(shape.get("points", ""), 1, label, None)
            if xy is not None:
                self._set(self.names[label], xy[0], 2)
            return
        if label not in self.schema.level_names:
            self.problem("unknown_level", f"unknown points label {label!r} (use LEVEL with its "
                                          f"{'/'.join(map(str, self._counts()))} points in "
                                          "order, or 'LEVEL POINT')", level=label)
            return
        idx = self.schema.level_indices(label)
        xy = self._xy(shape.get("points", ""), len(idx), label, None)
        if xy is not None:
            for i, p in zip(idx, xy, strict=True):
                self._set(i, p, 2)

    def _counts(self) -> list[int]:
        return sorted({len(lv.points) for lv in self.schema.levels})

    def _xy(self, text: str, count: int, level: str, point: str | None
            ) -> list[tuple[float, float]] | None:
        try:
            pts = [tuple(float(v) for v in pair.split(",")) for pair in text.split(";") if pair]
        except ValueError:
            pts = []
        if len(pts) != count or any(len(p) != 2 or not all(map(math.isfinite, p)) for p in pts):
            self.problem("malformed", f"points {text!r} of {level}"
                                      f"{' ' + point if point else ''}: expected {count} "
                                      "finite x,y pair(s)", level, point)
            return None
        return [(p[0], p[1]) for p in pts]

    def _set(self, i: int, xy: tuple[float, float], v: int) -> None:
        lv, pt = self.schema.level_point(i)
        if self.rec.visibility[i] > 0:
            first = self.rec.points[i]
            self.problem("duplicate_point", f"{lv} {pt} is labelled twice: at ({first[0]:.6g}, "
                                            f"{first[1]:.6g}) and at ({xy[0]:.6g}, "
                                            f"{xy[1]:.6g}); delete one in CVAT", lv, pt)
            return
        self.rec.points[i] = xy
        self.rec.visibility[i] = v
