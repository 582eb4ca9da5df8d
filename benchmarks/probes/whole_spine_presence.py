"""Why whole-spine images miss "every level right": level presence (the detector) or naming?

Loads a trained whole-spine pipeline (``benchmarks/accuracy.py --schema whole_spine_sagittal``,
``OUT/run/pipeline``) and predicts the validation and test images with presence decided as
saved (the detector's scores), with lower detector thresholds, and without the detector (every
level present; the step-1 chain and the level rules alone). The variant to keep is the one best
on the *validation* images; the test figures of every variant are printed for the record.

Usage
-----
    python benchmarks/probes/whole_spine_presence.py --out OUT
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from spinelandmarks.data.annotations import read_coco
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.metrics import level_identification
from spinelandmarks.schema import WHOLE_SPINE_SAGITTAL as S


def _variants(pipe: SpineLandmarkPipeline) -> dict[str, SpineLandmarkPipeline]:
    base = pipe.options
    low = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, pipe.detector,
                                dataclasses.replace(base, min_level_score=0.1,
                                                    min_adjacent_score=0.02))
    none = SpineLandmarkPipeline(pipe.landmark_model, pipe.refiner, None, base)
    return {"as saved": pipe, "detector thresholds 0.1 / 0.02": low, "no detector": none}


def _figures(pipe: SpineLandmarkPipeline, split: Path, n: int | None) -> dict[str, float]:
    gt = read_coco(split / "annotations.json", S)[:n]
    results = pipe.predict([split / r.file_name for r in gt], batch_size=4)
    pred = torch.from_numpy(np.stack([r.points for r in results])).double()
    truth = torch.from_numpy(np.stack([np.where(r.visibility[:, None] > 0, r.points, np.nan)
                                       for r in gt])).double()
    status = level_identification(pred, truth, S)  # (B, L): 1 right, 0 wrong, NaN unlabelled
    right = torch.nan_to_num(status, nan=1.0).eq(1.0).all(dim=1)
    missing = torch.tensor([len(r.missing_levels) > 0 for r in results])
    return {"images": len(gt), "every level right %": 100 * float(right.double().mean()),
            "levels right %": 100 * float(torch.nanmean(status)),
            "images with a level reported missing %": 100 * float(missing.double().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the accuracy benchmark's output folder")
    ap.add_argument("--test-images", type=int, default=None)
    args = ap.parse_args()
    out = Path(args.out)
    pipe = SpineLandmarkPipeline.load(out / "run" / "pipeline")
    for name, variant in _variants(pipe).items():
        for split, n in (("val", None), ("test", args.test_images)):
            figs = _figures(variant, out / split, n)
            print(f"{name:32s} {split:4s} " + ", ".join(f"{k} {v:.1f}" for k, v in figs.items()),
                  flush=True)


if __name__ == "__main__":
    main()
