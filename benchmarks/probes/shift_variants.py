"""Probe: how the two descriptors of the shift score are best combined.

Computes the descriptors of a pipeline's training / validation images and of the test sets
written by ``benchmarks/shift_alarm.py`` (``OUT/data/<style>``, or ``--test-A``), caches
them in ``OUT/descriptors.pt``, and for each way of combining the two distances (the
larger ratio, as the library does; the features alone; the intensity alone; the root mean
square and the mean of the two ratios) prints the AUROC between the in-style set and each
other style, the threshold (1.25 x the validation 99th percentile) and the fraction of each
test set above it.

    python benchmarks/probes/shift_variants.py --pipeline RUN/pipeline --data TRAIN_DIR \\
        --out OUT [--test-A DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.shift_alarm import STYLES, auroc
from spinelandmarks.adaptation.features import image_descriptors
from spinelandmarks.adaptation.shift import archive_alarm
from spinelandmarks.adaptation.shift_model import SHIFT_MARGIN, SHIFT_QUANTILE, ShiftModel
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.inference import SpineLandmarkPipeline

COMBINE = {
    "max (library)": lambda f, i: torch.maximum(f, i),
    "features only": lambda f, i: f,
    "intensity only": lambda f, i: i,
    "rms": lambda f, i: ((f ** 2 + i ** 2) / 2).sqrt(),
    "mean": lambda f, i: (f + i) / 2,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pipeline", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--test-A", default=None)
    args = p.parse_args()
    out = Path(args.out)
    cache = out / "descriptors.pt"
    if cache.is_file():
        desc = torch.load(cache, weights_only=True)
    else:
        pipe = SpineLandmarkPipeline.load(args.pipeline)
        dm = SpineDataModule(args.data, split=(0.9, 0.1, 0.0), seed=0)
        dm.setup("fit")
        sets = {"train": dm.image_paths("train"), "val": dm.image_paths("val")}
        for s in STYLES:
            d = Path(args.test_A) if s == "A" and args.test_A else out / "data" / s
            sets[s] = sorted((d / "images").iterdir())
        desc = {k: image_descriptors(pipe, v) for k, v in sets.items()}
        torch.save(desc, cache)
    m = ShiftModel.fit(desc["train"]["pooled"], desc["train"]["intensity"],
                       desc["val"]["pooled"], desc["val"]["intensity"])

    def ratios(k: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (m.features.distance(desc[k]["pooled"]) / m.feature_scale,
                m.intensity.distance(desc[k]["intensity"]) / m.intensity_scale)

    print("| combination | threshold | shifted A / B / C | alarm A / B / C | AUROC A-B | "
          "AUROC A-C |")
    print("|---|---|---|---|---|---|")
    for name, fn in COMBINE.items():
        score = {k: fn(*ratios(k)) for k in ("val", *STYLES)}
        th = SHIFT_MARGIN * float(torch.quantile(score["val"], SHIFT_QUANTILE))
        n = {s: int((score[s] > th).sum()) for s in STYLES}
        frac = " / ".join(f"{n[s] / len(score[s]):.0%}" for s in STYLES)
        alarm = " / ".join("yes" if archive_alarm(n[s], len(score[s])) else "no"
                           for s in STYLES)
        au = [auroc(score["A"].numpy(), score[s].numpy()) for s in ("B", "C")]
        print(f"| {name} | {th:.2f} | {frac} | {alarm} | {au[0]:.3f} | {au[1]:.3f} |")


if __name__ == "__main__":
    main()
