"""Files for the annotation tools readers correct predictions in: CVAT and Label Studio.

The correction loop: ``predict`` -> :func:`export_cvat` / :func:`export_label_studio` -> a
reader moves the points in the tool -> the tool's export -> :func:`read_cvat` /
:func:`read_label_studio` -> :func:`write_dataset` -> ``train`` on the corrected set.

* **CVAT** imports and exports *COCO Keypoints 1.0*: a zip holding
  ``annotations/person_keypoints_default.json`` (or the JSON alone), one skeleton category
  per level whose keypoints are the level's point names. That is exactly
  :func:`~spinelandmarks.data.annotations.write_coco`'s per-level layout, so both directions
  go through the library's COCO reader and writer. ``cvat_labels.json`` holds the skeleton
  labels (points and edges per level) for the project's *Raw* label editor, so the task's
  labels match the file.
* **Label Studio** takes a JSON list of tasks (``data.image`` the image URL) with the points
  as ``keypointlabels`` results in percent of the image, named ``"<LEVEL> <point>"``; the
  points go in as ``predictions`` (pre-annotations a reader corrects) and come back in its
  JSON export as ``annotations``. ``label_studio_config.xml`` is the labelling interface
  (``KeyPointLabels`` over ``Image``).

Both tools are driven by plain JSON; neither ships a converter for writing these files, so
they are written here from the tools' documented formats.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from .._atomic import atomic_write_text
from .._types import StrPath
from ..schema import LandmarkSchema
from .annotations import AnnotationError, ImageRecord, read_coco, validate, write_coco
from .io import read_image_size

__all__ = ["LABEL_STUDIO_FROM", "LABEL_STUDIO_TO", "export_cvat", "export_label_studio",
           "read_cvat", "read_label_studio", "write_dataset"]

#: Names of the keypoint control and the image object in the Label Studio interface.
LABEL_STUDIO_FROM, LABEL_STUDIO_TO = "keypoints", "image"
_CVAT_JSON = "annotations/person_keypoints_default.json"


def _basename_records(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Copies named by file name only (annotation tools know images by their upload name)."""
    out = []
    for r in records:
        out.append(dataclasses.replace(r, file_name=Path(r.file_name).name, meta={}))
    names = [r.file_name for r in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"file names must be unique for an annotation tool; repeated: {dup[:5]}")
    return out


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


def export_cvat(records: Sequence[ImageRecord], schema: LandmarkSchema, out: StrPath) -> Path:
    """Write ``out/cvat_annotations.zip`` (COCO Keypoints 1.0) and ``out/cvat_labels.json``.

    Parameters
    ----------
    records : sequence of ImageRecord
        Points to correct (predictions or annotations); images are named by file name only.
    schema : LandmarkSchema
    out : str or PathLike
        Output folder.

    Returns
    -------
    Path
        The zip to upload in CVAT (Upload annotations, format *COCO Keypoints 1.0*).
    """
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    labels = [{"name": lv.name, "type": "skeleton", "attributes": [],
               "sublabels": [{"name": p, "type": "points", "attributes": []} for p in lv.points],
               "svg": _cvat_svg(lv.points)} for lv in schema.levels]
    atomic_write_text(d / "cvat_labels.json", json.dumps(labels, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        ann = Path(tmp) / "ann.json"
        write_coco(_basename_records(records), schema, ann)
        part = d / "cvat_annotations.zip.part"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(ann, _CVAT_JSON)
        os.replace(part, d / "cvat_annotations.zip")
    return d / "cvat_annotations.zip"


def read_cvat(path: StrPath, schema: LandmarkSchema) -> list[ImageRecord]:
    """Records from CVAT's *COCO Keypoints 1.0* export (the zip or its JSON).

    Raises
    ------
    AnnotationError
        The file is not a keypoints export of this schema (every problem listed).
    """
    p = Path(path)
    if not zipfile.is_zipfile(p):
        return read_coco(p, schema)
    with zipfile.ZipFile(p) as z:
        names = [n for n in z.namelist()
                 if n.startswith("annotations/") and n.endswith(".json")]
        if not names:
            raise ValueError(f"{p}: no annotations/*.json in the archive (export the task as "
                             "COCO Keypoints 1.0)")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "annotations.json"
            target.write_bytes(z.read(sorted(names)[0]))
            return read_coco(target, schema)


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
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tasks = [{"id": k + 1, "data": {"image": image_url + r.file_name, "file_name": r.file_name},
              "predictions": [{"model_version": "spinelandmarks",
                               "result": _ls_results(r, schema)}]}
             for k, r in enumerate(_basename_records(records))]
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


def _task_record(task: dict[str, Any], schema: LandmarkSchema, k: int, src: Path
                 ) -> ImageRecord:
    data = task.get("data", {})
    name = data.get("file_name") or Path(unquote(str(data.get("image", "")))).name
    if not name:
        raise ValueError(f"{src}: task {task.get('id', k)} names no image")
    index = {_ls_label(*schema.level_point(i)): i for i in range(schema.num_points)}
    rec = ImageRecord(file_name=str(name), width=0, height=0,
                      points=np.full((schema.num_points, 2), np.nan),
                      visibility=np.zeros(schema.num_points, np.int8),
                      image_id=int(task.get("id", k)))
    for r in _task_results(task):
        if r.get("type") != "keypointlabels":
            continue
        value = r["value"]
        for label in value.get("keypointlabels", []):
            if label not in index:
                raise ValueError(f"{src}: task {rec.image_id}: unknown keypoint label "
                                 f"{label!r} (schema {schema.name!r})")
            rec.width, rec.height = int(r["original_width"]), int(r["original_height"])
            rec.points[index[label]] = (value["x"] * rec.width / 100.0,
                                        value["y"] * rec.height / 100.0)
            rec.visibility[index[label]] = 2
    return rec


def read_label_studio(path: StrPath, schema: LandmarkSchema) -> list[ImageRecord]:
    """Records from a Label Studio JSON export (or from the tasks file written above).

    Each task gives its newest completed annotation (else its prediction). Images without a
    point have width and height 0 until :func:`write_dataset` reads them from the files.
    """
    p = Path(path)
    try:
        tasks = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a Label Studio JSON export ({exc})") from exc
    if not isinstance(tasks, list):
        raise ValueError(f"{p}: not a Label Studio JSON export (expected a list of tasks)")
    return [_task_record(t, schema, k + 1, p) for k, t in enumerate(tasks)]


# -- into the dataset layout ---------------------------------------------------------------------
def write_dataset(records: Sequence[ImageRecord], schema: LandmarkSchema, images: StrPath,
                  out: StrPath, *, copy: bool = False) -> list[ImageRecord]:
    """Write corrected records as a dataset: ``out/images/`` (links or copies of the files in
    ``images`` named by the records) and ``out/annotations.json``, validated first.

    Returns
    -------
    list of ImageRecord
        The records as written (``file_name`` under ``images/``; sizes read from the files
        where the records had none).

    Raises
    ------
    AnnotationError
        Every problem at once (an image not found in ``images``, a size that does not match,
        points outside the image); nothing is written then.
    """
    src, root = Path(images), Path(out)
    recs = []
    for r in records:
        c = dataclasses.replace(r)
        f = src / c.file_name
        if (c.width == 0 or c.height == 0) and f.is_file():
            c.height, c.width = read_image_size(f)
        recs.append(c)
    problems = validate(recs, schema, src, source=str(src))
    if problems:
        raise AnnotationError(problems, str(src))
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
    return recs
