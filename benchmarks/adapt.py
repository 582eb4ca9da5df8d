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
import dataclasses
import json
import math
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import MODES, _commit, _time_budget  # the CPU recipe
from cross_style import _fmt, _qc_analysis, _row, _style_data  # data and metrics

from spinelandmarks.data.annotations import ImageRecord, read_coco, write_coco
from spinelandmarks.evaluation import evaluate
from spinelandmarks.predict import predict_files
from spinelandmarks.schema import LUMBAR_SAGITTAL as S
from spinelandmarks.training import TrainConfig, split_time_budget, train_pipeline

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


def select_available() -> bool:
    """Whether this tree's command line has ``spinelandmarks select``."""
    proc = subprocess.run([sys.executable, "-m", "spinelandmarks.cli", "select", "--help"],
                          capture_output=True, text=True)
    return proc.returncode == 0


def _archive(out: Path, target: str, size: int) -> list[ImageRecord]:
    """The target's archive: the first ``size`` images of its training split."""
    return read_coco(out / "data" / target / "train" / "annotations.json", S)[:size]


def _annotated(out: Path, cell: Cell, source: Path, cell_dir: Path, size: int
               ) -> list[ImageRecord]:
    """The K archive records of a cell: a seeded random draw, or ``spinelandmarks select``'s
    K most informative images (ranked by the source pipeline)."""
    archive = out / "data" / cell.target / "train"
    records = _archive(out, cell.target, size)
    if cell.k == 0:
        return []
    if cell.how == "random":
        return random.Random(1000 * cell.draw + cell.k).sample(records, cell.k)
    listing = cell_dir / "selected.txt"
    if not listing.is_file():
        cell_dir.mkdir(parents=True, exist_ok=True)
        files = [str(archive / r.file_name) for r in records]
        subprocess.run([sys.executable, "-m", "spinelandmarks.cli", "select", str(source),
                        *files, "--n", str(cell.k), "--out", str(listing)], check=True)
    chosen = [Path(line).resolve() for line in listing.read_text().split()]
    by_path = {(archive / r.file_name).resolve(): r for r in records}
    return [by_path[p] for p in chosen]


def _fine_tune(out: Path, cell: Cell, source: Path, cfg: dict[str, Any],
               budget_s: float | None, size: int) -> tuple[Path, float]:
    """Train a cell's pipeline (skipped when it exists); its run directory and the training
    seconds (pseudo-labelling included; NaN when resumed)."""
    cell_dir = out / "cells" / f"{cell.source}_{cell.target}" / cell.name
    run = cell_dir / "run"
    seconds_file = cell_dir / "train_seconds.txt"
    if (run / "pipeline" / "pipeline.json").is_file():  # resumed: the seconds it took then
        return run, float(seconds_file.read_text()) if seconds_file.is_file() else math.nan
    archive = out / "data" / cell.target / "train"
    records = _annotated(out, cell, source, cell_dir, size)
    data = _subset(archive, cell_dir / "data", records) if records else None
    unlabeled = cell_dir / "unlabeled.txt"  # the whole archive; the annotated K are left out
    cell_dir.mkdir(parents=True, exist_ok=True)
    unlabeled.write_text("".join(f"{(archive / r.file_name).resolve()}\n"
                                 for r in _archive(out, cell.target, size)))
    settings = dict(cfg)
    if budget_s is not None:  # else the recipe's epochs (smoke)
        settings["time_budget_s"] = split_time_budget(budget_s)
    t0 = time.perf_counter()
    train_pipeline(data, run, TrainConfig(
        **settings, init_from=str(source),
        unlabeled=str(unlabeled) if cell.unlabeled else None,
        # K > 0: validation on the target's validation images, as in the fine-tuning rows of
        # BENCHMARKS.md; K = 0: on pseudo-labels (no annotated image at all)
        val_dir=str(out / "data" / cell.target / "val") if records else None))
    seconds = time.perf_counter() - t0
    seconds_file.write_text(f"{seconds:.1f}\n")
    return run, seconds


def _evaluate(out: Path, run: Path, target: str, pred_dir: Path, n_test: int,
              accelerator: str) -> dict[str, Any]:
    test = out / "data" / target / "test"
    gt = read_coco(test / "annotations.json", S)[:n_test]
    files = [test / r.file_name for r in gt]
    if not (pred_dir / "predictions.json").is_file():
        predict_files(run, files, pred_dir, accelerator=accelerator, overlays=False,
                      progress=False, overwrite=True)
    for r in gt:  # predictions name files by the path given to predict
        r.file_name = str(test / r.file_name)
    pred = read_coco(pred_dir / "predictions.json", S)
    step1 = read_coco(pred_dir / "predictions_step1.json", S)
    metrics = evaluate(pred, gt, S, step1_records=step1)
    return _row(metrics, _qc_analysis(pred, gt, metrics), pred)


def run_cell(out: Path, cell: Cell, source: Path, cfg: dict[str, Any],
             budget_s: float | None, n_test: int, size: int) -> dict[str, Any]:
    """Fine-tune (or, for K = 0 without unlabeled images, take the source model) and test."""
    cell_dir = out / "cells" / f"{cell.source}_{cell.target}" / cell.name
    refused = None
    if cell.k == 0 and not cell.unlabeled:
        run, seconds = source.parent, 0.0
    else:
        try:
            run, seconds = _fine_tune(out, cell, source, cfg, budget_s, size)
        except ValueError as exc:  # no pseudo-label passed: the user keeps the source model
            if "no pseudo-label" not in str(exc):
                raise
            refused = str(exc)
            run, seconds = source.parent, math.nan
            report = cell_dir / "run" / "pseudo_labels" / "report.json"
    pred_dir = cell_dir / "predictions"
    if refused is not None:  # the source model's predictions, made for the K = 0 row
        pred_dir = cell_dir.parent / dataclasses.replace(cell, unlabeled=False).name / pred_dir.name
    row = _evaluate(out, run, cell.target, pred_dir, n_test, cfg["accelerator"])
    if refused is None:
        report = run / "pseudo_labels" / "report.json"
    row["refused"] = refused
    if report.is_file():
        rep = json.loads(report.read_text())
        row["pseudo_kept"], row["pseudo_images"] = rep["kept"], rep["images"]
        row["pseudo_dropped"] = rep["dropped"]
    row.update({"source": cell.source, "target": cell.target, "k": cell.k, "how": cell.how,
                "draw": cell.draw, "unlabeled": cell.unlabeled, "train_s": seconds,
                "unlabeled_rounds": cfg.get("unlabeled_rounds", 1) if cell.unlabeled else 0})
    return row


def cells(pairs: list[tuple[str, str]], ks: list[int], draws: int, hows: list[str],
          unlabeled: list[bool]) -> list[Cell]:
    """The grid, in the order that answers the main question first: per pair and K, each
    draw without and then with the unlabeled images."""
    grid: list[Cell] = []
    for src, tgt in pairs:
        for k in ks:
            for how in (["random"] if k == 0 else hows):
                for draw in range(1 if k == 0 or how == "select" else draws):
                    grid += [Cell(src, tgt, k, how, draw, u) for u in unlabeled]
    return grid


_ANGLES = ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope")


def _markdown(res: dict[str, Any]) -> str:
    rounds = res.get("unlabeled_rounds", 1)
    budgets = ("the smoke recipe's epochs" if res["smoke"] else
               f"source {res['source_budget']} s per stage, fine-tuning {res['budget_s']:g} s"
               + (f", {rounds} self-training rounds" if rounds > 1 else ""))
    lines = [f"commit {res['commit']}, {res['date']}, {res['machine']}, training {budgets}, "
             f"{res['n_test']} test images, {res['minutes']:.1f} min", "",
             "| source -> target | K | chosen | draw | unlabeled | levels right (images %) | "
             "mean abs. L1-L5 / L1-S1 / SS (deg) | median abs. L1-L5 / L1-S1 / SS (deg) | "
             "Pearson r L1-L5 / L1-S1 / SS | median NLE x / y (%) | p95 point error (mm) | "
             "failures | pseudo-labels kept | training (s) |",
             "|" + "---|" * 14]
    for r in res["rows"]:
        kept = (f"{r['pseudo_kept']} of {r['pseudo_images']}" if "pseudo_kept" in r else "-")
        if r.get("refused"):
            kept += " (refused: the source model's figures)"
        lines.append(
            f"| {r['source']} -> {r['target']} | {r['k']} | {r['how']} | {r['draw']} | "
            f"{'with' if r['unlabeled'] else 'without'} | "
            f"{_fmt(r['levels_identified_images'], 1)} | "
            + " / ".join(_fmt(r[f"{a}_mean_abs"]) for a in _ANGLES) + " | "
            + " / ".join(_fmt(r[f"{a}_median_abs"]) for a in _ANGLES) + " | "
            + " / ".join(_fmt(r[f"{a}_pearson_r"], 3) for a in _ANGLES) + " | "
            + f"{_fmt(r['median_nle_x'])} / {_fmt(r['median_nle_y'])} | {_fmt(r['p95_mm'])} | "
            + f"{r['failures']} | {kept} | {_fmt(r['train_s'], 0)} |")
    lines += ["", "Targets (K = 10 chosen by select, with the unlabeled images): levels right "
              ">= 99 %; mean abs. angle errors <= 1.5 deg and Pearson r >= 0.95; median NLE "
              "<= 1.0 %; p95 point error <= 3 mm. K = 0 with the unlabeled images: levels "
              "right >= 90 %. A failure is an image with a level not identified or an angle "
              "error > 5 deg."]
    if res.get("select_note"):
        lines += ["", res["select_note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_adapt")
    ap.add_argument("--pairs", default="A:B,A:C,B:A,B:C,C:A,C:B",
                    help="source:target pairs, comma-separated")
    ap.add_argument("--k", default="0,5,10,20", help="annotated target images, comma-separated")
    ap.add_argument("--draws", type=int, default=3, help="random draws per K > 0")
    ap.add_argument("--how", default="random,select",
                    help="how the K images are chosen: random, select (comma-separated)")
    ap.add_argument("--unlabeled", default="without,with",
                    help="fine-tune without and/or with the target's unlabeled images")
    ap.add_argument("--budget", type=float, default=600.0,
                    help="fine-tuning training seconds per run, all stages together")
    ap.add_argument("--source-budget", default="240,480,540", metavar="D,L,R",
                    help="training seconds per stage of the source models (the CPU recipe's)")
    ap.add_argument("--test-images", type=int, default=None,
                    help="test on the first N of the target's test images (default all)")
    ap.add_argument("--only-source", action="store_true",
                    help="generate the data and train the source models, then stop")
    ap.add_argument("--smoke", action="store_true", help="tiny images and sizes, 1 epoch")
    ap.add_argument("--unlabeled-rounds", type=int, default=1,
                    help="rounds of self-training in the cells with unlabeled images")
    ap.add_argument("--accelerator", default="cpu")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    pairs = [(p.split(":")[0], p.split(":")[1]) for p in args.pairs.split(",")]
    _data(out, {s for p in pairs for s in p}, sizes, args.smoke)
    cfg = {**_recipe(args.smoke, args.accelerator), "unlabeled_rounds": args.unlabeled_rounds}
    source_budget = None if args.smoke else _time_budget(args.source_budget)
    sources = {src: _source(out, src, sizes, cfg, source_budget)
               for src in sorted({p[0] for p in pairs})}
    if args.only_source:
        return
    hows = args.how.split(",")
    note = None
    if "select" in hows and not select_available():
        hows.remove("select")
        note = ("`spinelandmarks select` is not available in this tree: the select rows were "
                "skipped.")
        print(note)
    grid = cells(pairs, [int(k) for k in args.k.split(",")], args.draws, hows,
                 [u == "with" for u in args.unlabeled.split(",")])
    res: dict[str, Any] = {
        "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU ({torch.get_num_threads()} threads)",
        "source_budget": args.source_budget, "budget_s": args.budget, "smoke": args.smoke,
        "unlabeled_rounds": args.unlabeled_rounds,
        "n_test": args.test_images or sizes["test"], "select_note": note, "rows": []}
    for cell in grid:
        print(f"[adapt] {cell.key}", flush=True)
        res["rows"].append(run_cell(out, cell, sources[cell.source], cfg,
                                    None if args.smoke else args.budget, res["n_test"],
                                    sizes["archive"]))
        res["minutes"] = (time.perf_counter() - t0) / 60
        (out / "results.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
        (out / "results.md").write_text(_markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    main()
