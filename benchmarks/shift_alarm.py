"""Shift score benchmark: does a pipeline's shift score separate in-style from cross-style
test images, and does the run-level alarm fire on the cross-style sets only?

Fits the shift model of ``--pipeline`` on the training images of ``--data`` (the split
``train`` uses: 90 / 10 by patient, seed 0, or ``--val``), then scores the test images of
each phantom style (A: :mod:`spinelandmarks.phantoms`, B:
:mod:`spinelandmarks.phantoms.projection`, C: :mod:`spinelandmarks.phantoms.outline`; generated under
``OUT/data/<style>`` with seed 10000 unless ``--test-A`` etc. name existing sets) and writes
``OUT/shift_results.json`` and ``OUT/shift_results.md``: the AUROC of the shift score between
the in-style set and each other style (and of each descriptor alone), the fraction of each
set above the per-image threshold, and whether ``archive_alarm`` fires on it (the rule
``predict`` applies to ``summary.json``).

    python benchmarks/shift_alarm.py --pipeline RUN/pipeline --data TRAIN_DIR --out OUT \\
        [--in-style A] [--test-images 40]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from spinelandmarks.adaptation.features import image_descriptors
from spinelandmarks.adaptation.shift import archive_alarm, fit_shift_model
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.phantoms.outline import generate_outline_dataset
from spinelandmarks.phantoms.projection import generate_projection_dataset

STYLES = ("A", "B", "C")
TEST_SEED = 10_000


def _test_set(out: Path, style: str, n: int, given: str | None) -> Path:
    if given:
        return Path(given)
    d = out / "data" / style
    if (d / "annotations.json").is_file():
        return d
    if style == "A":
        return generate_dataset(d, n, seed=TEST_SEED, config=PhantomConfig(long_side=512),
                                workers=1)
    if style == "B":
        return generate_projection_dataset(d, n, seed=TEST_SEED, workers=1)
    return generate_outline_dataset(d, n, seed=TEST_SEED, workers=1)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an outside image > score of an inside image), ties counting half."""
    u = mannwhitneyu(outside, inside, alternative="two-sided").statistic
    return float(u) / (len(inside) * len(outside))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True)
    p.add_argument("--data", required=True, help="the pipeline's training dataset")
    p.add_argument("--val", default=None, help="its separate validation dataset, if any")
    p.add_argument("--out", required=True)
    p.add_argument("--in-style", default="A", choices=STYLES)
    p.add_argument("--test-images", type=int, default=40)
    for s in STYLES:
        p.add_argument(f"--test-{s}", default=None, help=f"existing style-{s} test set")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    pipe = SpineLandmarkPipeline.load(args.pipeline)
    dm = SpineDataModule(args.data, split=(0.9, 0.1, 0.0), val_dir=args.val, seed=0)
    dm.setup("fit")
    model = fit_shift_model(pipe, dm.image_paths("train"), dm.image_paths("val"))
    scores: dict[str, dict[str, np.ndarray]] = {}
    for style in STYLES:
        d = _test_set(out, style, args.test_images, getattr(args, f"test_{style}"))
        files = sorted((d / "images").iterdir())
        desc = image_descriptors(pipe, files)
        scores[style] = {
            "score": model.score(desc["pooled"], desc["intensity"]).numpy(),
            "features": (model.features.distance(desc["pooled"]) / model.feature_scale).numpy(),
            "intensity": (model.intensity.distance(desc["intensity"])
                          / model.intensity_scale).numpy()}
    inside = args.in_style
    results: dict[str, Any] = {
        "pipeline": args.pipeline, "data": args.data, "in_style": inside,
        "num_train": model.num_train, "num_val": model.num_val, "threshold": model.threshold,
        "val_shifted_fraction": model.val_shifted_fraction, "seconds":
        round(time.perf_counter() - t0, 1), "styles": {}}
    for style in STYLES:
        s = scores[style]
        shifted = int((s["score"] > model.threshold).sum())
        row: dict[str, Any] = {"images": len(s["score"]), "shifted": shifted,
                               "shifted_fraction": shifted / len(s["score"]),
                               "alarm": archive_alarm(shifted, len(s["score"])),
                               "median_score": float(np.median(s["score"]))}
        if style != inside:
            for key in ("score", "features", "intensity"):
                row[f"auroc_{key}"] = auroc(scores[inside][key], s[key])
        results["styles"][style] = row
    (out / "shift_results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"Shift model of `{args.pipeline}` fitted on {model.num_train} training and "
             f"{model.num_val} validation images; threshold {model.threshold:.2f}.", "",
             "| test style | images | median score | shifted | alarm | AUROC vs "
             f"{inside} (score / features / intensity) |", "|---|---|---|---|---|---|"]
    for style, r in results["styles"].items():
        au = ("-" if style == inside else " / ".join(
            f"{r[f'auroc_{k}']:.3f}" for k in ("score", "features", "intensity")))
        lines.append(f"| {style} | {r['images']} | {r['median_score']:.2f} | {r['shifted']} "
                     f"({r['shifted_fraction']:.0%}) | {'yes' if r['alarm'] else 'no'} | "
                     f"{au} |")
    (out / "shift_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
