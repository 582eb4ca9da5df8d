"""Identity by content: digests of files and of saved pipelines.

A path says where something is, not what it is: a pipeline saved anew at the same path (after
:meth:`~spinelandmarks.pipeline.SpineLandmarkPipeline.calibrate_qc`, or a new training run)
must not be answered from predictions of the old one. ``predict`` and ``train`` record these
digests and compare them on a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["file_sha256", "pipeline_digest", "short"]

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def pipeline_digest(directory: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a saved pipeline's content: ``pipeline.json`` (its options and QC
    thresholds) and the bytes of every network file it lists.

    Two directories with the same digest predict the same; the same path with another digest
    holds another pipeline.

    Raises
    ------
    FileNotFoundError
        ``directory`` holds no ``pipeline.json`` or lacks a network file it lists.
    """
    d = Path(directory)
    config = d / "pipeline.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: not a saved pipeline directory")
    h = hashlib.sha256()
    h.update(config.read_bytes())
    models = json.loads(config.read_text(encoding="utf-8")).get("models", {})
    for key in sorted(models):
        h.update(f"\n{key}:{file_sha256(d / models[key])}".encode())
    return h.hexdigest()


def short(digest: str | None) -> str:
    """The first 12 hex digits of a digest, as messages show it (``None``: ``unrecorded``)."""
    return digest[:12] if digest else "unrecorded"
