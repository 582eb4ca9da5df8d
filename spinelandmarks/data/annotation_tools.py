"""Files for the annotation tools readers correct predictions in: CVAT and Label Studio.

The correction loop: ``predict`` -> :func:`export_cvat` / :func:`export_coco` /
:func:`export_label_studio` -> a reader moves the points in the tool -> the tool's export ->
:func:`read_cvat` / :func:`read_label_studio` -> :func:`write_dataset` -> ``train`` on the
corrected set.

* **CVAT**: its native *CVAT for images 1.1* XML (:mod:`spinelandmarks.data.cvat_xml`: one
  skeleton per level, a point per corner), or *COCO Keypoints 1.0* (a zip holding
  ``annotations/person_keypoints_default.json``, one skeleton category per level: the
  library's COCO layout with every section CVAT's COCO importer expects).
  ``cvat_labels.json`` holds the skeleton labels (points and edges per level) for the
  project's *Raw* label editor, so the task's labels match the file.
* **Label Studio** takes a JSON list of tasks (``data.image`` the image URL) with the points
  as ``keypointlabels`` results in percent of the image, named ``"<LEVEL> <point>"``; the
  points go in as ``predictions`` (pre-annotations a reader corrects) and come back in its
  JSON export as ``annotations``. ``label_studio_config.xml`` is the labelling interface
  (``KeyPointLabels`` over ``Image``).

Images are named by their paths relative to the folder they all share (both tools keep the
sub-folders of an uploaded folder), so ``patient1/lateral.png`` and ``patient2/lateral.png``
stay apart. On the way back, problems are headed with the export file; Label Studio's upload
names (``5f2e1a9b-00000.png``) find their files (``00000.png``); a point labelled twice is
refused with both positions; ``skip_invalid`` leaves the records with problems out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from .._atomic import atomic_write_text
from .._types import StrPath
from ..schema import LandmarkSchema
from .annotations import (
    AnnotationError,
    AnnotationProblem,
    ImageRecord,
    ProblemKind,
    read_coco_problems,
    validate,
    write_coco,
)
from .cvat_xml import CVAT_XML, read_cvat_xml, write_cvat_xml
from .io import read_image_size
from .lenient import SKIPPED_FILE, clip_to_border, leave_out_invalid, skipped_summary, write_skipped

__all__ = ["LABEL_STUDIO_FROM", "LABEL_STUDIO_TO", "export_coco", "export_cvat",
           "export_label_studio", "read_cvat", "read_cvat_problems", "read_label_studio",
           "read_label_studio_problems", "tool_names", "write_dataset"]

_log = logging.getLogger(__name__)

#: Names of the keypoint control and the image object in the Label Studio interface.
LABEL_STUDIO_FROM, LABEL_STUDIO_TO = "keypoints", "image"
_CVAT_JSON = "annotations/person_keypoints_default.json"


def tool_names(file_names: Sequence[str]) -> list[str]:
    """The names an annotation tool knows the images by: the paths relative to the folder they
    all share (``/data/x/images/patient1/lateral.png`` and ``.../patient2/lateral.png`` ->
    ``patient1/lateral.png``, ``patient2/lateral.png``; files of one folder -> their names).

    CVAT and Label Studio keep the sub-folders of an uploaded folder or zip in the image names,
    so images that share a base name stay apart.
    """
    paths = [PurePosixPath(Path(f).as_posix()) for f in file_names]
    n = min((len(p.parent.parts) for p in paths), default=0)
    while n and len({p.parts[:n] for p in paths}) > 1:
        n -= 1  # the folders all the images share
    return [PurePosixPath(*p.parts[n:]).as_posix() for p in paths]


def _tool_records(records: Sequence[ImageRecord], source: str = "<records>"
                  ) -> list[ImageRecord]:
    """Copies named as the annotation tool knows the images (:func:`tool_names`).

    Raises
    ------
    ValueError
        The same image is listed twice (nothing has been written).
    """
    names = tool_names([r.file_name for r in records])
    seen: dict[str, str] = {}
    for r, n in zip(records, names, strict=True):
        if n in seen:
            raise ValueError(f"{source}: {r.file_name!r} and {seen[n]!r} are the same image "
                             f"for an annotation tool ({n!r}); list each image once. Nothing "
                             "was written")
        seen[n] = r.file_name
    return [dataclasses.replace(r, file_name=n, meta={})
            for r, n in zip(records, names, strict=True)]


# -- CVAT ----------------------------------------------------------------------------------------
def _cvat_svg(points: Sequence[str]) -> str:
    """The skeleton drawing of one level for CVAT's label editor: nodes on a square, edges
    around it in point order."""
    n = len(points)
    xy = [(50 + 30 * math.cos(2 * math.pi * k / n), 50 + 30 * math.sin(2 * math.pi * k / n))
          for k in range(n)]
    lines = "".join(
        f'<line x1="{xy[k][0]:.1f}" y1="{xy[k][1]:.1f}" x2="{xy[(k + 1) % n][0]:.1f}" '
        f'y2="{xy[(k + 1) % n][1]:.1f}" stroke="black" data-type="edge" '
        f'data-node-from="{k + 1}" data-node-to="{(k + 1) % n + 1}"></line>'
        for k in range(n if n > 2 else n - 1))
    nodes = "".join(
        f'<circle r="1.5" cx="{x:.1f}" cy="{y:.1f}" data-type="element node" '
        f'data-element-id="{k + 1}" data-node-id="{k + 1}" data-label-name="{name}"></circle>'
        for k, ((x, y), name) in enumerate(zip(xy, points, strict=True)))
    return lines + nodes


def _cvat_labels(schema: LandmarkSchema) -> list[dict[str, Any]]:
    """The skeleton labels of the project's *Raw* label editor, one per level."""
    return [{"name": lv.name, "type": "skeleton", "attributes": [],
             "sublabels": [{"name": p, "type": "points", "attributes": []} for p in lv.points],
             "svg": _cvat_svg(lv.points)} for lv in schema.levels]


def _cvat_prologue(records: Sequence[ImageRecord], schema: LandmarkSchema, out: StrPath
                   ) -> tuple[list[ImageRecord], Path]:
    """What both CVAT exports start with: the records named as CVAT knows the images (a
    duplicate refused before anything is written), the output folder and
    ``cvat_labels.json`` in it."""
    named = _tool_records(records)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "cvat_labels.json", json.dumps(_cvat_labels(schema), indent=2) + "\n")
    return named, d


def export_cvat(records: Sequence[ImageRecord], schema: LandmarkSchema, out: StrPath) -> Path:
    """Write ``out/annotations.xml`` (*CVAT for images 1.1*, one skeleton per level) and
    ``out/cvat_labels.json`` (the skeleton labels for the project's *Raw* label editor).

    Parameters
    ----------
    records : sequence of ImageRecord
        Points to correct (predictions or annotations); images are named by their paths
        relative to the folder they share (:func:`tool_names`).
    schema : LandmarkSchema
    out : str or PathLike
        Output folder.

    Returns
    -------
    Path
        The XML to upload in CVAT (Upload annotations, format *CVAT 1.1*).

    Raises
    ------
    ValueError
        An image is listed twice; nothing is written.
    """
    named, d = _cvat_prologue(records, schema, out)
    return write_cvat_xml(named, schema, d / CVAT_XML,
                          svgs={lv.name: _cvat_svg(lv.points) for lv in schema.levels})


def export_coco(records: Sequence[ImageRecord], schema: LandmarkSchema, out: StrPath) -> Path:
    """Write ``out/coco_keypoints.zip`` (*COCO Keypoints 1.0*, as CVAT imports it) and
    ``out/cvat_labels.json``.

    The zip holds ``annotations/person_keypoints_default.json`` with every section CVAT's COCO
    importer (datumaro) expects: ``info``, ``licenses``, ``images`` (with ``license``,
    ``date_captured``, ...), ``annotations`` (``segmentation``, ``area``, ``bbox``,
    ``iscrowd``, ``attributes``) and ``categories`` (``supercategory``, ``keypoints``,
    ``skeleton``).

    Raises
    ------
    ValueError
        An image is listed twice; nothing is written.
    """
    named, d = _cvat_prologue(records, schema, out)
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp) / "ann.json"
        write_coco(named, schema, ann)
        doc = _coco_sections(json.loads(ann.read_text(encoding="utf-8")))
        ann.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
        part = d / "coco_keypoints.zip.part"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(ann, _CVAT_JSON)
        os.replace(part, d / "coco_keypoints.zip")
    return d / "coco_keypoints.zip"


def _coco_sections(doc: dict[str, Any]) -> dict[str, Any]:
    """A COCO document with every section and field COCO readers require (CVAT's datumaro
    refuses a file without ``licenses`` in released versions, annotations without
    ``segmentation``, ``iscrowd`` or ``bbox``, and a ``score`` that is not a number)."""
    info = {"contributor": "", "date_created": "", "description": "", "url": "",
            "version": "", "year": "", **doc.get("info", {})}
    images = [{"license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0, **im}
              for im in doc.get("images", [])]
    anns = [{"segmentation": [], "iscrowd": 0, "attributes": {"occluded": False},
             **{k: v for k, v in a.items() if not (k == "score" and v is None)}}
            for a in doc.get("annotations", [])]  # datumaro refuses a null score
    cats = [{"supercategory": "", **c} for c in doc.get("categories", [])]
    return {"licenses": [{"name": "", "id": 0, "url": ""}], "info": info, "categories": cats,
            "images": images, "annotations": anns}


def read_cvat(path: StrPath, schema: LandmarkSchema) -> list[ImageRecord]:
    """Records from a CVAT export: *CVAT for images 1.1* (``annotations.xml``, or its zip) or
    *COCO Keypoints 1.0* (the zip or its JSON); the format is recognized from the file.

    Raises
    ------
    AnnotationError
        The file is not a keypoints export of this schema (every problem listed).
    """
    records, problems = read_cvat_problems(path, schema)
    if problems:
        raise AnnotationError(problems, str(Path(path)))
    return records


def read_cvat_problems(path: StrPath, schema: LandmarkSchema
                       ) -> tuple[list[ImageRecord], list[AnnotationProblem]]:
    """As :func:`read_cvat`, returning the problems (each naming its image) instead of
    raising them."""
    p = Path(path)
    if _is_cvat_xml(p):
        return read_cvat_xml(p, schema)
    if not zipfile.is_zipfile(p):
        return read_coco_problems(p, schema)
    with zipfile.ZipFile(p) as z:
        names = [n for n in z.namelist()
                 if n.startswith("annotations/") and n.endswith(".json")]
        if not names:
            raise ValueError(f"{p}: neither {CVAT_XML} nor annotations/*.json in the archive "
                             "(export the task as CVAT for images 1.1 or COCO Keypoints 1.0)")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "annotations.json"
            target.write_bytes(z.read(sorted(names)[0]))
            records, problems = read_coco_problems(target, schema)
    return records, [dataclasses.replace(q, source=str(p)) for q in problems]


def _is_cvat_xml(p: Path) -> bool:
    """A CVAT XML file, or a zip holding one."""
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            return any(Path(n).name == CVAT_XML for n in z.namelist())
    try:
        with p.open("rb") as fh:
            head = fh.read(512).lstrip()
    except OSError:
        return False
    return head.startswith(b"<")


# -- Label Studio --------------------------------------------------------------------------------
def _ls_label(level: str, point: str) -> str:
    return f"{level} {point}"


def label_studio_config(schema: LandmarkSchema) -> str:
    """The labelling interface: one keypoint label per schema point."""
    labels = "\n".join(f'    <Label value="{_ls_label(lv, pt)}"/>'
                       for lv, pt in (schema.level_point(i) for i in range(schema.num_points)))
    return (f'<View>\n  <KeyPointLabels name="{LABEL_STUDIO_FROM}" toName="{LABEL_STUDIO_TO}" '
            f'smart="false">\n{labels}\n  </KeyPointLabels>\n  <Image name="{LABEL_STUDIO_TO}" '
            f'value="$image" zoom="true"/>\n</View>\n')


def _ls_results(rec: ImageRecord, schema: LandmarkSchema) -> list[dict[str, Any]]:
    res = []
    for i in range(schema.num_points):
        x, y = rec.points[i]
        if rec.visibility[i] == 0 or not (math.isfinite(x) and math.isfinite(y)):
            continue
        lv, pt = schema.level_point(i)
        res.append({"id": f"p{i}", "type": "keypointlabels", "from_name": LABEL_STUDIO_FROM,
                    "to_name": LABEL_STUDIO_TO, "original_width": int(rec.width),
                    "original_height": int(rec.height), "image_rotation": 0,
                    "value": {"x": 100.0 * float(x) / rec.width,
                              "y": 100.0 * float(y) / rec.height, "width": 0.5,
                              "keypointlabels": [_ls_label(lv, pt)]}})
    return res


def export_label_studio(records: Sequence[ImageRecord], schema: LandmarkSchema, out: StrPath,
                        *, image_url: str = "/data/local-files/?d=") -> Path:
    """Write ``out/label_studio_tasks.json`` (points as predictions) and the interface.

    Parameters
    ----------
    records : sequence of ImageRecord
    schema : LandmarkSchema
    out : str or PathLike
        Output folder; also gets ``label_studio_config.xml``.
    image_url : str
        Prefix of each task's image URL before the file name (default: Label Studio's local
        files storage; use your storage's URL prefix).

    Returns
    -------
    Path
        The tasks file to import in Label Studio.
    """
    named = _tool_records(records)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tasks = [{"id": k + 1, "data": {"image": image_url + r.file_name, "file_name": r.file_name},
              "predictions": [{"model_version": "spinelandmarks",
                               "result": _ls_results(r, schema)}]}
             for k, r in enumerate(named)]
    atomic_write_text(d / "label_studio_config.xml", label_studio_config(schema))
    atomic_write_text(d / "label_studio_tasks.json", json.dumps(tasks, indent=1) + "\n")
    return d / "label_studio_tasks.json"


def _task_results(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest completed annotation of a task, else its first prediction."""
    done = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
    if done:
        return list(done[-1].get("result", []))
    preds = task.get("predictions", [])
    return list(preds[0].get("result", [])) if preds else []


def _task_name(task: dict[str, Any]) -> str:
    """The image a task names: its ``file_name``, the ``d=`` path of a local-storage URL, else
    the URL's last part (an upload name such as ``5f2e1a9b-00000.png``)."""
    data = task.get("data", {})
    if data.get("file_name"):
        return str(data["file_name"])
    url = unquote(str(data.get("image", "")))
    local = parse_qs(urlparse(url).query).get("d")
    return local[0] if local else Path(url).name


def _task_record(task: dict[str, Any], schema: LandmarkSchema, k: int, src: Path,
                 problems: list[AnnotationProblem]) -> ImageRecord:
    name = _task_name(task)
    tid = int(task.get("id", k))

    def problem(kind: ProblemKind, msg: str, lv: str | None = None,
                pt: str | None = None) -> None:
        problems.append(AnnotationProblem(str(src), kind, f"task {tid}: {msg}", image_id=tid,
                                          file_name=name or None, level=lv, point=pt))

    if not name:
        problem("malformed", "names no image")
    index = {_ls_label(*schema.level_point(i)): i for i in range(schema.num_points)}
    rec = ImageRecord(file_name=str(name), width=0, height=0,
                      points=np.full((schema.num_points, 2), np.nan),
                      visibility=np.zeros(schema.num_points, np.int8), image_id=tid)
    for r in _task_results(task):
        if r.get("type") != "keypointlabels":
            continue
        value = r["value"]
        for label in value.get("keypointlabels", []):
            if label not in index:
                problem("unknown_point", f"unknown keypoint label {label!r} (schema "
                                         f"{schema.name!r})")
                continue
            rec.width, rec.height = int(r["original_width"]), int(r["original_height"])
            xy = (value["x"] * rec.width / 100.0, value["y"] * rec.height / 100.0)
            i = index[label]
            if rec.visibility[i]:
                first = rec.points[i]
                problem("duplicate_point", f"{label} is labelled twice: at ({first[0]:.1f}, "
                                           f"{first[1]:.1f}) and at ({xy[0]:.1f}, {xy[1]:.1f}) "
                                           "px; delete one in Label Studio",
                        *schema.level_point(i))
                continue
            rec.points[i] = xy
            rec.visibility[i] = 2
    return rec


def read_label_studio(path: StrPath, schema: LandmarkSchema) -> list[ImageRecord]:
    """Records from a Label Studio JSON export (or from the tasks file written above).

    Each task gives its newest completed annotation (else its prediction). Images without a
    point have width and height 0 until :func:`write_dataset` reads them from the files.

    Raises
    ------
    AnnotationError
        Every problem (unknown labels, a label placed twice), headed with ``path``.
    """
    records, problems = read_label_studio_problems(path, schema)
    if problems:
        raise AnnotationError(problems, str(Path(path)))
    return records


def read_label_studio_problems(path: StrPath, schema: LandmarkSchema
                               ) -> tuple[list[ImageRecord], list[AnnotationProblem]]:
    """As :func:`read_label_studio`, returning the problems (each naming its task's
    ``image_id``) instead of raising them."""
    p = Path(path)
    try:
        tasks = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a Label Studio JSON export ({exc})") from exc
    if not isinstance(tasks, list):
        raise ValueError(f"{p}: not a Label Studio JSON export (expected a list of tasks)")
    problems: list[AnnotationProblem] = []
    return [_task_record(t, schema, k + 1, p, problems) for k, t in enumerate(tasks)], problems


# -- into the dataset layout ---------------------------------------------------------------------
def write_dataset(records: Sequence[ImageRecord], schema: LandmarkSchema, images: StrPath,
                  out: StrPath, *, copy: bool = False, source: str | None = None,
                  problems: Sequence[AnnotationProblem] = (), skip_invalid: bool = False
                  ) -> list[ImageRecord]:
    """Write corrected records as a dataset: ``out/images/`` (links or copies of the files in
    ``images`` named by the records) and ``out/annotations.json``, validated first.

    Images uploaded through Label Studio's interface (``5f2e1a9b-00000.png``) are found under
    their own names (``00000.png``); labelled points just outside their image are clipped onto
    its border (:func:`~spinelandmarks.data.lenient.clip_to_border`).

    Parameters
    ----------
    records : sequence of ImageRecord
    schema : LandmarkSchema
    images : str or PathLike
        Folder holding the images the records name (sub-folders kept).
    out : str or PathLike
        Dataset folder to write.
    copy : bool
        Copy the images instead of linking them.
    source : str, optional
        The export file the records come from: it heads every problem.
    problems : sequence of AnnotationProblem
        Problems found while reading the export (reported with the others).
    skip_invalid : bool
        Leave out the records with problems (listed in ``out/skipped_records.csv``) instead of
        writing nothing.

    Returns
    -------
    list of ImageRecord
        The records as written (``file_name`` under ``images/``; sizes read from the files
        where the records had none).

    Raises
    ------
    AnnotationError
        Every problem at once (an image not found in ``images``, a size that does not match,
        points outside the image, a point labelled twice); nothing is written then.
    """
    src, root = Path(images), Path(out)
    where = source or str(src)
    recs = []
    for r in records:
        c = dataclasses.replace(r, file_name=_local_name(src, r.file_name))
        f = src / c.file_name
        if (c.width == 0 or c.height == 0) and f.is_file():
            c.height, c.width = read_image_size(f)
        recs.append(c)
    clip_to_border(recs, schema, where)
    found = [*problems, *validate(recs, schema, src, source=where)]
    skipped: list[AnnotationProblem] = []
    if found and not skip_invalid:
        raise AnnotationError(found, where)
    if found:
        recs, skipped = leave_out_invalid(recs, found, where)
    for c in recs:
        dst = root / "images" / c.file_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        if copy:
            shutil.copy2(src / c.file_name, dst)
        else:
            os.symlink((src / c.file_name).resolve(), dst)
        c.file_name = f"images/{c.file_name}"
    write_coco(recs, schema, root / "annotations.json")
    if skip_invalid:
        write_skipped(root / SKIPPED_FILE, skipped)
        if skipped:
            _log.warning("%s (--skip-invalid)", skipped_summary(skipped, len(records),
                                                                root / SKIPPED_FILE))
    return recs


#: Label Studio names an image uploaded through its interface ``<8 hex digits>-<name>``.
_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(.+)")


def _local_name(images: Path, name: str) -> str:
    """The path under ``images`` of the image a tool names ``name``: ``name`` itself, else its
    longest tail that is a file there (a storage URL's ``d=mydata/images/p1/a.png`` ->
    ``p1/a.png``), each also without a Label Studio upload prefix (``5f2e1a9b-00000.png`` ->
    ``00000.png``); ``name`` when none is (validation then reports it)."""
    parts = PurePosixPath(Path(name).as_posix()).parts
    for k in range(len(parts)):
        tail = PurePosixPath(*parts[k:])
        m = _UPLOAD_PREFIX.fullmatch(tail.name)
        for candidate in (tail, *([tail.parent / m.group(1)] if m else [])):
            if (images / candidate).is_file():
                return candidate.as_posix()
    return name
