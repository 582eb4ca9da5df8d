"""The output folder of ``predict``: what makes a run over an archive safe to stop and resume.

* ``predict.json`` names the inputs the folder holds (a digest of their paths), the pipeline
  that predicted them (a digest of its weights and options, not its path) and the settings,
  so a folder with other files, or with the predictions of other inputs or of another
  pipeline, is refused unless told (``overwrite``).
* ``predictions.jsonl`` is a journal: one line per finished image (its key, file and result),
  appended, flushed and fsynced after every batch. A crash, a full disk or Ctrl-C loses at most
  the batch in flight; rerunning the same command skips the images already in the journal.
  An image is keyed by its resolved path, size and modification time and by the pipeline's
  digest, so a file replaced in place, or a pipeline saved anew, is predicted again.
* ``predictions.json``, ``predictions_step1.json`` and ``measurements.csv`` are assembled from
  the journal, in input order, atomically, at the end of every run (also an interrupted one):
  a resumed run yields the same files as an uninterrupted one.
* ``failures.csv`` lists the files that could not be predicted (file, stage, reason).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._atomic import atomic_write_text
from .content_digest import short
from .data.annotations import ImageRecord, write_coco
from .inference import SpineResult
from .measurement_table import write_measurements_csv
from .schema import LandmarkSchema

__all__ = ["FINAL_OUTPUTS", "JOURNAL", "PredictionJournal", "assemble_outputs", "file_key",
           "prepare_output_folder", "write_failures"]

#: Files assembled at the end of a run (and cleared before the next one).
FINAL_OUTPUTS = ("predictions.json", "predictions_step1.json", "measurements.csv",
                 "failures.csv", "summary.json")
JOURNAL = "predictions.jsonl"
_MARKER = "predict.json"


def file_key(path: Path, pipeline_sha256: str | None = None) -> str:
    """``resolved path|size|mtime_ns`` (and ``|pipeline=DIGEST`` when given): the identity of
    an input, predicted by that pipeline, for resuming."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return key if pipeline_sha256 is None else f"{key}|pipeline={short(pipeline_sha256)}"


def _inputs_digest(files: Sequence[Path]) -> str:
    names = "\n".join(sorted(str(Path(f).resolve()) for f in files))
    return hashlib.sha256(names.encode()).hexdigest()


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def prepare_output_folder(out: Path, files: Sequence[Path], run: str | os.PathLike[str],
                          overwrite: bool, settings: dict[str, Any] | None = None, *,
                          pipeline_sha256: str | None = None) -> None:
    """Make ``out`` ready for ``files`` predicted by ``run`` with ``settings``.

    The same inputs, pipeline (by content: ``pipeline_sha256``, see
    :func:`~spinelandmarks.content_digest.pipeline_digest`) and settings as before: the journal
    and overlays are kept (the run resumes), the assembled files are cleared. Anything else in
    the folder: refused, or with ``overwrite`` the outputs of ``predict`` are removed (other
    files are left alone).

    Raises
    ------
    ValueError
        ``out`` is not empty and not the output of ``predict`` on these inputs with this
        pipeline and these settings; the message names what differs (for another pipeline,
        both digests) and the way forward.
    """
    marker = out / _MARKER
    now = {"inputs": _inputs_digest(files),
           "settings": hashlib.sha256(json.dumps(settings or {}, sort_keys=True,
                                                 default=str).encode()).hexdigest(),
           "pipeline_sha256": pipeline_sha256}
    if out.is_dir() and any(out.iterdir()):
        stored = _read_marker(marker)
        why = _difference(out, stored, now, run)
        if why is not None and not overwrite:
            raise ValueError(why)
        stale = FINAL_OUTPUTS if why is None else (*FINAL_OUTPUTS, JOURNAL, "overlays",
                                                   "shards", _MARKER)
        for name in stale:
            _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({**now, "images": len(files), "run": str(run)},
                                         indent=2) + "\n")


def _read_marker(marker: Path) -> dict[str, Any] | None:
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _difference(out: Path, stored: dict[str, Any] | None, now: dict[str, Any],
                run: str | os.PathLike[str]) -> str | None:
    """Why the non-empty folder ``out`` cannot be resumed for ``now`` (None: it can)."""
    fix = "choose another --out, or --overwrite to replace the predictions there"
    if stored is None:
        return f"{out}: the folder is not empty and holds files not written by predict; {fix}"
    if stored.get("inputs") != now["inputs"]:
        return (f"{out}: the folder is not empty and holds the output of predict on other "
                f"inputs; {fix}")
    if stored.get("pipeline_sha256") != now["pipeline_sha256"]:
        return (f"{out}: holds predictions of pipeline {short(stored.get('pipeline_sha256'))} "
                f"({stored.get('run', '?')}), but {run} is now pipeline "
                f"{short(now['pipeline_sha256'])} (its weights or options changed, e.g. saved "
                f"anew); they are not reused: --overwrite to predict again with this pipeline, "
                f"or choose another --out")
    if stored.get("settings") != now["settings"]:
        return (f"{out}: the folder is not empty and holds the output of predict with other "
                f"settings (tta, precision, overlays); {fix}")
    return None


# -- the journal -----------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def result_to_json(res: SpineResult) -> dict[str, Any]:
    """A result as plain JSON values (NaN as null)."""
    return {k: _jsonable(getattr(res, k)) for k in SpineResult.__dataclass_fields__}


def result_from_json(d: dict[str, Any]) -> SpineResult:
    """Inverse of :func:`result_to_json`."""
    shapes = {"points": (-1, 2), "points_step1": (-1, 2), "point_scores": (-1,),
              "level_scores": (-1,), "level_boxes": (-1, 4)}
    kw: dict[str, Any] = {k: np.array(v, dtype=np.float64).reshape(shapes[k])
                          if k in shapes else v for k, v in d.items()}  # null -> NaN
    kw["image_size"] = tuple(kw["image_size"])
    if kw.get("pixel_spacing") is not None:
        kw["pixel_spacing"] = tuple(kw["pixel_spacing"])
    kw["parameters"] = {k: math.nan if v is None else v for k, v in kw["parameters"].items()}
    kw["parameters_step1"] = {k: math.nan if v is None else v
                              for k, v in kw["parameters_step1"].items()}
    return SpineResult(**kw)


class PredictionJournal:
    """``predictions.jsonl``: the finished images of a run, appended durably per batch.

    Only each key's byte offset is held in memory; results are read back from the file when
    asked for, so a journal of 10^5 images costs a few megabytes.
    """

    def __init__(self, path: Path, load: bool = True) -> None:
        self.path = path
        self._offsets: dict[str, int] = {}
        if load and path.is_file():
            with path.open("rb") as fh:
                offset = 0
                for line in fh:
                    key = _line_key(line)  # None: a line cut short by a crash, predicted again
                    if key is not None:
                        self._offsets[key] = offset
                    offset += len(line)
        self._fh: IO[bytes] | None = None

    @property
    def done(self) -> set[str]:
        """Keys of the finished images."""
        return set(self._offsets)

    def __enter__(self) -> PredictionJournal:
        self._fh = self.path.open("ab")
        # A line cut short by a crash must not swallow the first line appended after it.
        if self._fh.tell() > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._fh.write(b"\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()

    def append(self, entries: Sequence[tuple[str, SpineResult]]) -> None:
        """Record a batch of ``(key, result)`` and make it durable (flush + fsync)."""
        self._write([(key, (json.dumps({"key": key, "result": result_to_json(res)})
                            + "\n").encode("utf-8")) for key, res in entries])

    def append_lines(self, text: str) -> None:
        """Append journal lines written elsewhere (a rank's shard), durably."""
        if text and not text.endswith("\n"):
            text += "\n"
        lines = text.encode("utf-8").splitlines(keepends=True)
        self._write([(_line_key(line), line) for line in lines])

    def _write(self, lines: Sequence[tuple[str | None, bytes]]) -> None:
        """Append ``(key, line)``, flush and fsync, and remember where each keyed line is."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: the journal is not open; use it as a context "
                               "manager (with PredictionJournal(path) as journal: ...)")
        offset = self._fh.tell()
        self._fh.write(b"".join(line for _, line in lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        for key, line in lines:
            if key is not None:
                self._offsets[key] = offset
            offset += len(line)

    def in_order(self, keys: Sequence[str]) -> Iterator[SpineResult]:
        """The finished results of ``keys``, in that order, read from the file one by one."""
        with self.path.open("rb") as fh:
            for k in keys:
                if k in self._offsets:
                    fh.seek(self._offsets[k])
                    yield result_from_json(json.loads(fh.readline())["result"])


def _line_key(line: bytes) -> str | None:
    """The key of a journal line, or None for a line that is not one (cut short by a crash)."""
    try:
        key = json.loads(line)["key"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


class _Records:
    """The journal's results of ``keys`` as records, read anew on each iteration (so that
    writers stream them instead of holding them)."""

    def __init__(self, journal: PredictionJournal, keys: Sequence[str], schema: LandmarkSchema,
                 step: int) -> None:
        self.journal, self.keys, self.schema, self.step = journal, keys, schema, step

    def __iter__(self) -> Iterator[ImageRecord]:
        for i, res in enumerate(self.journal.in_order(self.keys)):
            yield res.to_record(self.schema, step=self.step, image_id=i + 1)


def assemble_outputs(out: Path, journal: PredictionJournal, keys: Sequence[str],
                     schema: LandmarkSchema) -> None:
    """``predictions.json``, ``predictions_step1.json`` and ``measurements.csv`` from the
    journal, in the order of ``keys``, atomically, streamed (memory independent of the number
    of images)."""
    step2, step1 = _Records(journal, keys, schema, 2), _Records(journal, keys, schema, 1)
    write_coco(step2, schema, out / "predictions.json")
    write_coco(step1, schema, out / "predictions_step1.json")
    write_measurements_csv(step2, schema, out / "measurements.csv")


def write_failures(out: Path, failures: Sequence[tuple[str, str, str]]) -> None:
    """``failures.csv``: ``file,stage,reason`` per failed input (header only when none)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "stage", "reason"])
    writer.writerows(failures)
    atomic_write_text(out / "failures.csv", buf.getvalue())
