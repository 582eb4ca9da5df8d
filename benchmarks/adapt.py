"""Adaptation benchmark: a source model brought to a new phantom style with few annotations.

For each source -> target pair of the three phantom styles (A, B, C; benchmarks/cross_style.py
describes them), a source model is trained with the CPU recipe of ``benchmarks/accuracy.py``
(``--source-budget`` seconds per stage), then fine-tuned (``train --init-from``) on K annotated
target images chosen at random (``--draws`` seeds) or by ``spinelandmarks select`` (when that
command exists), without and with the target's unlabeled images (``--unlabeled``,
:mod:`spinelandmarks.adaptation.self_training`), within ``--budget`` seconds of training, and
tested on the target's held-out test images with the cross-style metrics (levels right, mean
and median angle errors, Pearson r, median NLE, p95 point error, failures).

Usage
-----
    python benchmarks/adapt.py --out BENCH --pairs A:C --k 0,10 --draws 3
    python benchmarks/adapt.py --out BENCH --smoke        # tiny; checks that every step runs

Layout of ``OUT`` (every step is skipped when its output exists, so a run resumes)::

    data/{A,B,C}/{train,val,test}/      (the target's ``train`` split is its archive: K
                                         annotated images are drawn from it, the rest of it
                                         is the unlabeled pool)
    source/<style>/run/pipeline/         the source models
    cells/<src>_<tgt>/k<K>_<how><draw>_<unlabeled|plain>/{data,run,predictions}/

K = 0 without unlabeled images is the source model itself. Results: ``OUT/results.json`` and
``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import MODES, _commit  # noqa: E402  (the CPU recipe)
from cross_style import _qc_analysis, _row, _style_data  # noqa: E402  (data and metrics)

from spinelandmarks.data.annotations import ImageRecord, read_coco, write_coco  # noqa: E402
from spinelandmarks.evaluation import evaluate  # noqa: E402
from spinelandmarks.predict import predict_files  # noqa: E402
from spinelandmarks.schema import LUMBAR_SAGITTAL as S  # noqa: E402
from spinelandmarks.training import TrainConfig, split_time_budget, train_pipeline  # noqa: E402

#: Images per split: source training and validation, the target's archive (annotated draws +
#: unlabeled pool), validation (used by the fine-tuning runs with K > 0) and test.
SIZES = {"source_train": 400, "source_val": 40, "archive": 220, "target_val": 20, "test": 100}
SMOKE_SIZES = {"source_train": 8, "source_val": 2, "archive": 10, "target_val": 2, "test": 3}


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the grid."""

    source: str
    target: str
    k: int
    how: str  # "random" or "select"
    draw: int
    unlabeled: bool

    @property
    def name(self) -> str:
        return (f"k{self.k}_{self.how}{self.draw}_"
                f"{'unlabeled' if self.unlabeled else 'plain'}")

    @property
    def key(self) -> str:
        return (f"{self.source} -> {self.target}, K={self.k}, {self.how} {self.draw}, "
                f"{'with' if self.unlabeled else 'without'} unlabeled")


def _data(out: Path, styles: set[str], sizes: dict[str, int], smoke: bool) -> None:
    for style in sorted(styles):
        _style_data(out, style, "train", max(sizes["source_train"], sizes["archive"]), smoke)
        _style_data(out, style, "val", max(sizes["source_val"], sizes["target_val"]), smoke)
        _style_data(out, style, "test", sizes["test"], smoke)


def _recipe(smoke: bool, accelerator: str) -> dict[str, Any]:
    cfg = dict(MODES["smoke" if smoke else "cpu"]["cfg"])
    cfg["accelerator"] = accelerator
    cfg["progress"] = False
    return cfg


def _subset(src: Path, out: Path, records: list[ImageRecord]) -> Path:
    """A dataset of some of ``src``'s records, its images through a link (no copies)."""
    if (out / "annotations.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    link = out / "src"
    if not link.exists():
        link.symlink_to(src.resolve(), target_is_directory=True)
    recs = []
    for i, r in enumerate(records):
        r.file_name = f"src/{r.file_name}"
        r.image_id = i + 1
        recs.append(r)
    write_coco(recs, S, out / "annotations.json")
    return out


def _source(out: Path, style: str, sizes: dict[str, int], cfg: dict[str, Any],
            budget: dict[str, float] | None) -> Path:
    run = out / "source" / style / "run"
    if (run / "pipeline" / "pipeline.json").is_file():
        return run / "pipeline"
    data = out / "data" / style
    train = read_coco(data / "train" / "annotations.json", S)[: sizes["source_train"]]
    val = read_coco(data / "val" / "annotations.json", S)[: sizes["source_val"]]
    tdir = _subset(data / "train", out / "source" / style / "train", train)
    vdir = _subset(data / "val", out / "source" / style / "val", val)
    settings = dict(cfg)
    if budget:
        settings["time_budget_s"] = budget
    train_pipeline(tdir, run, TrainConfig(val_dir=str(vdir), **settings))
    return run / "pipeline"


def _parse_budget(text: str) -> dict[str, float]:
    from accuracy import _time_budget

    return _time_budget(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_adapt")
    ap.add_argument("--pairs", default="A:B,A:C,B:A,B:C,C:A,C:B",
                    help="source:target pairs, comma-separated")
    ap.add_argument("--source-budget", default="240,480,540", metavar="D,L,R",
                    help="training seconds per stage of the source models (the CPU recipe's)")
    ap.add_argument("--only-source", action="store_true",
                    help="generate the data and train the source models, then stop")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--accelerator", default="cpu")
    args = ap.parse_args()
    out = Path(args.out)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    _data(out, {s for p in pairs for s in p}, sizes, args.smoke)
    cfg = _recipe(args.smoke, args.accelerator)
    budget = None if args.smoke else _parse_budget(args.source_budget)
    for src in sorted({p[0] for p in pairs}):
        _source(out, src, sizes, cfg, budget)
    if args.only_source:
        return


if __name__ == "__main__":
    main()
