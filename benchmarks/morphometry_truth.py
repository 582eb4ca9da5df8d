"""How the morphometry and listhesis measurements read the phantoms' own ground truth.

Generates ``--images`` style-A phantoms with a fracture and a listhesis each, measures the
ground-truth corners with :mod:`spinelandmarks.measurements` and compares with the generator's
parameters: Genant grade by fracture shape (measured / generated), levels graded without a
generated fracture, slip percentage error and Meyerding grade agreement.

usage: python benchmarks/morphometry_truth.py [--images 40] [--schema lumbar_morphometry]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from spinelandmarks.anatomy.measurements import genant_grades, listhesis, morphometry
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.schema import resolve_schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--schema", default="lumbar_sagittal",
                    help="lumbar_morphometry adds the endplate middles (biconcave fractures)")
    args = ap.parse_args()
    S = resolve_schema(args.schema)
    cfg = PhantomConfig(long_side=256, p_fracture=1.0, p_listhesis=1.0)
    grades: collections.Counter[tuple[str, int, int]] = collections.Counter()
    slip_err, meyerding_ok = [], []
    for seed in range(args.images):
        _, rec = generate_phantom(seed, cfg, schema=S)
        syn = rec.meta["synthetic"]
        pts = torch.tensor(rec.points)[None]
        g = genant_grades(morphometry(pts, S))
        for j, lv in enumerate(S.body_levels):
            true = syn["fractures"].get(lv, 0)
            meas = int(g["grade"][0, j])
            if true or meas:
                grades[(syn["fracture_types"].get(lv, "none"), true, meas)] += 1
        for lv, info in syn["listhesis"].items():
            seg = f"{lv}-{'S1' if lv == 'L5' else 'L5'}"
            slip, grade = (float(v) for v in listhesis(pts, S)[seg][0])
            slip_err.append(abs(slip - 100 * info["slip_fraction"]))
            meyerding_ok.append(grade == info["grade"])
    print("shape, generated grade, measured grade: levels")
    for key, n in sorted(grades.items()):
        print(f"  {key[0]:9s} {key[1]} -> {key[2]}: {n}")
    print(f"slip: mean abs. error {np.mean(slip_err):.2f} percentage points over "
          f"{len(slip_err)} listheses; Meyerding grade agrees in "
          f"{100 * np.mean(meyerding_ok):.0f} %")


if __name__ == "__main__":
    main()
