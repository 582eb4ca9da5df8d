"""Does more weight on the annotated images remove the teacher's bias from self-training?

On A -> B with K = 10 images chosen by ``select`` plus the archive, the sacral slope came out
biased (mean signed error -1.8 deg, against -1.0 without the archive): the pseudo-labels
(147 of them) carry the teacher's sacral plate and outweigh the 10 annotated images, each
repeated ``annotated_repeats`` (4) times. This probe reruns that cell of
``benchmarks/adapt.py`` with another repeat count and prints the cell's row.

Usage
-----
    python benchmarks/probes/annotated_weight.py --bench OUT --cell OUT/cells/A_B/k10_select0_unlabeled \
        --repeats 16 --out PROBE_OUT [--budget 300] [--test-images 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt import _ANGLES, _evaluate, _recipe  # the benchmark's recipe and metrics

from spinelandmarks.adaptation.self_training import SelfTrainingConfig, train_with_unlabeled
from spinelandmarks.training import TrainConfig, split_time_budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the adapt benchmark's OUT (data, source)")
    ap.add_argument("--cell", required=True, help="a cell with K > 0 and the archive")
    ap.add_argument("--repeats", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--test-images", type=int, default=50)
    ap.add_argument("--source", default="A")
    ap.add_argument("--target", default="B")
    args = ap.parse_args()
    bench, cell, out = Path(args.bench), Path(args.cell), Path(args.out)
    recipe = {**_recipe(False, "cpu"), "time_budget_s": split_time_budget(args.budget)}
    cfg = TrainConfig(**recipe,
                      init_from=str(bench / "source" / args.source / "run" / "pipeline"),
                      unlabeled=str(cell / "unlabeled.txt"),
                      val_dir=str(bench / "data" / args.target / "val"))
    run = train_with_unlabeled(cell / "data", out / "run", cfg,
                               SelfTrainingConfig(annotated_repeats=args.repeats))
    row = _evaluate(bench, run.parent, args.target, out / "predictions", args.test_images, "cpu")
    print(f"annotated_repeats {args.repeats}: levels right {row['levels_identified_images']:.1f} %, "
          "mean abs. " + " / ".join(f"{row[f'{a}_mean_abs']:.2f}" for a in _ANGLES)
          + ", Pearson r " + " / ".join(f"{row[f'{a}_pearson_r']:.3f}" for a in _ANGLES)
          + f", median NLE {row['median_nle_x']:.2f} / {row['median_nle_y']:.2f} %, "
          f"p95 {row['p95_mm']:.2f} mm, failures {row['failures']}")


if __name__ == "__main__":
    main()
