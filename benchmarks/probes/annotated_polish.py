"""Does a short last fine-tuning on the annotated images alone remove the pseudo-labels' bias?

On A -> B with K = 10 images chosen by ``select`` plus the archive, the sacral slope came out
with a constant offset (mean signed error -1.8 deg whatever the true slope, against -1.0 with
the 10 images alone; ``benchmarks/probes/angle_bias.py``): the student learns the teacher's
sacral plate from the pseudo-labels. This probe takes such a cell's student and fine-tunes it
for ``--budget`` more seconds on the cell's annotated images alone (``train --init-from``,
validated on the target's validation images), then prints the cell's row and the angle bias.

Usage
-----
    python benchmarks/probes/annotated_polish.py --bench OUT --cell A_B/k10_select0_unlabeled \
        --budget 60 --out PROBE_OUT [--test-images 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt import _ANGLES, _evaluate, _recipe  # the benchmark's recipe and metrics
from angle_bias import cell_report

from spinelandmarks.training import TrainConfig, split_time_budget, train_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the adapt benchmark's OUT (data, cells)")
    ap.add_argument("--cell", required=True, help="PAIR/CELL with K > 0 and the archive")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds, all stages together")
    ap.add_argument("--out", required=True)
    ap.add_argument("--test-images", type=int, default=50)
    args = ap.parse_args()
    bench, out = Path(args.bench), Path(args.out)
    pair, name = args.cell.split("/")
    target = pair.split("_")[1]
    cell = bench / "cells" / pair / name
    cfg = TrainConfig(**{**_recipe(False, "cpu"), "time_budget_s": split_time_budget(args.budget)},
                      init_from=str(cell / "run" / "pipeline"),
                      val_dir=str(bench / "data" / target / "val"))
    run = out / "cells" / pair / f"{name}_polish"
    train_pipeline(cell / "data", run / "run", cfg)
    row = _evaluate(bench, run / "run", target, run / "predictions", args.test_images, "cpu")
    print(f"{args.cell} + {args.budget:.0f} s on the annotated images alone: levels right "
          f"{row['levels_identified_images']:.1f} %, mean abs. "
          + " / ".join(f"{row[f'{a}_mean_abs']:.2f}" for a in _ANGLES)
          + ", Pearson r " + " / ".join(f"{row[f'{a}_pearson_r']:.3f}" for a in _ANGLES)
          + f", median NLE {row['median_nle_x']:.2f} / {row['median_nle_y']:.2f} %, "
          f"p95 {row['p95_mm']:.2f} mm, failures {row['failures']}")
    print("\n".join(cell_report(bench, args.cell, args.test_images, run / "predictions")))


if __name__ == "__main__":
    main()
