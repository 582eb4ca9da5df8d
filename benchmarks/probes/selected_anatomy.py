"""What did a cell's K annotated images show: the spread of their angles and their sacral plates.

For cells of ``benchmarks/adapt.py`` this reads the cell's ``selected.txt`` (``select`` cells)
and prints the ground-truth sacral slope of each chosen image, their mean and standard deviation
against the archive's, and how many show both S1 corners (a film cut above the sacrum teaches
the refiner nothing about the sacral plate).

Usage
-----
    python benchmarks/probes/selected_anatomy.py --bench OUT --pair A_B k10_select0_plain
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapt import SIZES, S  # the benchmark's schema and archive size

from spinelandmarks.anatomy.angles import lumbar_parameters_or_nan
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.measurement_table import record_points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="the adapt benchmark's OUT")
    ap.add_argument("--pair", required=True, help="SOURCE_TARGET, e.g. A_B")
    ap.add_argument("cells", nargs="+", help="cell names with a selected.txt")
    args = ap.parse_args()
    train = args.bench / "data" / args.pair.split("_")[1] / "train"
    archive = read_coco(train / "annotations.json", S)[: SIZES["archive"]]
    slope = lumbar_parameters_or_nan(record_points(archive, S).double(), S)["sacral_slope"].numpy()
    s1 = S.level_indices("S1")
    s1_seen = np.array([np.all(np.asarray(r.visibility)[s1] > 0) for r in archive])
    index = {(train / r.file_name).resolve(): i for i, r in enumerate(archive)}
    print(f"archive: {len(archive)} images, SS {np.nanmean(slope):.1f} +- {np.nanstd(slope):.1f} "
          f"deg, S1 visible on {s1_seen.sum()}")
    for cell in args.cells:
        listing = args.bench / "cells" / args.pair / cell / "selected.txt"
        chosen = [index[Path(p).resolve()] for p in listing.read_text().split()]
        ss = slope[chosen]
        print(f"{cell}: SS {np.round(ss, 1).tolist()}, {np.nanmean(ss):.1f} +- "
              f"{np.nanstd(ss):.1f} deg; S1 visible on {s1_seen[chosen].sum()} of {len(chosen)}")


if __name__ == "__main__":
    main()
