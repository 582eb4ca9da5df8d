"""Is an adapted model's angle error a constant offset or a pull towards the source's mean?

For cells of ``benchmarks/adapt.py`` this prints, per angle (L1-L5, L1-S1, SS), the mean and
median signed error (prediction - truth, deg), its spread, and the line ``error = slope x
truth + offset`` fitted on the images with an error under 8 deg: a slope near 0 is a constant
offset (the model places a landmark by another convention than the target's annotation), a
negative slope a shrinkage towards the source's mean angle. It also prints the median signed
offset of each S1 corner in mm, the points the sacral slope is measured from.

Usage
-----
    python benchmarks/probes/angle_bias.py --bench OUT A_B/k10_select0_plain A_B/k10_select0_unlabeled
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt import S  # the benchmark's schema

from spinelandmarks.anatomy.angles import lumbar_parameters_or_nan
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.evaluation.errors import pair_records


def cell_report(bench: Path, cell: str, n_test: int, pred_dir: Path | None = None
                ) -> list[str]:
    """The lines of one cell (``PAIR/CELL``, e.g. ``A_B/k10_select0_plain``); its predictions
    from ``pred_dir`` when given, else from the cell's ``predictions``."""
    pair, name = cell.split("/")
    test = bench / "data" / pair.split("_")[1] / "test"
    gt = read_coco(test / "annotations.json", S)[:n_test]
    for r in gt:  # predictions name files by the path given to predict
        r.file_name = str(test / r.file_name)
    pred_dir = pred_dir or bench / "cells" / pair / name / "predictions"
    pred = read_coco(pred_dir / "predictions.json", S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paired = pair_records(pred, gt, S)
    p = lumbar_parameters_or_nan(paired.pred.double(), S)
    g = lumbar_parameters_or_nan(paired.gt.double(), S)
    lines = []
    for key in p:
        err, truth = (p[key] - g[key]).numpy(), g[key].numpy()
        ok = np.isfinite(err)
        fit = ok & (np.abs(err) < 8)
        slope, offset = np.polyfit(truth[fit], err[fit], 1)
        lines.append(f"{cell} {key}: n {ok.sum()}, signed mean {err[ok].mean():+.2f} median "
                     f"{np.median(err[ok]):+.2f} sd {err[ok].std():.2f} deg; error = "
                     f"{slope:+.3f} x truth {offset:+.2f} (n {fit.sum()})")
    mm = paired.spacing.numpy()[:, None, ::-1]  # (row, col) spacing -> (x, y)
    s1 = ((paired.pred - paired.gt).numpy() * mm)[:, S.level_indices("S1"), :]
    med = np.nanmedian(s1, axis=0)
    lines.append(f"{cell} S1 corner offsets (median, mm, x right / y down): anterior-superior "
                 f"{med[0, 0]:+.2f} / {med[0, 1]:+.2f}, posterior-superior "
                 f"{med[1, 0]:+.2f} / {med[1, 1]:+.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the adapt benchmark's OUT")
    ap.add_argument("cells", nargs="+", help="PAIR/CELL, e.g. A_B/k10_select0_plain")
    ap.add_argument("--test-images", type=int, default=50)
    args = ap.parse_args()
    for cell in args.cells:
        print("\n".join(cell_report(Path(args.bench), cell, args.test_images)))


if __name__ == "__main__":
    main()
