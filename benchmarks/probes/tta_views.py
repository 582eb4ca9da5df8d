"""Which step-2 test-time augmentation views earn their cost?

Loads a trained pipeline and predicts an annotated test split with subsets of six views (plain
and mirrored crops at side factors 1.0, 0.94 and 1.06; the default of
:data:`spinelandmarks.inference.TTA_VIEWS` before 0.3, four of them since), then prints, per subset, the refiner crops per radiograph (re-cropping and column
repair included), the median normalized error, the mean and median absolute angle errors and
the 95th percentile point error. The cost of step 2 is proportional to the crops.

Usage
-----
    python benchmarks/probes/tta_views.py --pipeline RUN/pipeline --test TEST_DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from spinelandmarks.data.annotations import read_coco
from spinelandmarks.evaluation import evaluate
from spinelandmarks.inference import SpineLandmarkPipeline, refinement

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from speed import count_crops  # benchmarks/speed.py

SUBSETS: dict[str, tuple[tuple[float, bool], ...]] = {
    "six views (1.0, 0.94, 1.06; plain + mirrored)":
        ((1.0, False), (1.0, True), (0.94, False), (0.94, True), (1.06, False), (1.06, True)),
    "four views (1.0 plain + mirrored, 0.94 plain, 1.06 mirrored)":
        ((1.0, False), (1.0, True), (0.94, False), (1.06, True)),
    "four views (0.94, 1.06; plain + mirrored)":
        ((0.94, False), (0.94, True), (1.06, False), (1.06, True)),
    "two views (1.0 plain + mirrored)": ((1.0, False), (1.0, True)),
    "two views (0.94 plain, 1.06 mirrored)": ((0.94, False), (1.06, True)),
    "one view (no TTA)": ((1.0, False),),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--test", required=True, help="split with images/ and annotations.json")
    ap.add_argument("--num", type=int, default=None, help="first N test images")
    args = ap.parse_args()
    pipe = SpineLandmarkPipeline.load(args.pipeline)
    schema, test = pipe.schema, Path(args.test)
    gt = read_coco(test / "annotations.json", schema)[:args.num]
    for r in gt:
        r.file_name = str(test / r.file_name)
    seen = count_crops(pipe)
    angles = [a for a in ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope")]
    print(f"{args.pipeline}: {len(gt)} images of {test}; angles {angles}")
    for name, views in SUBSETS.items():
        refinement.TTA_VIEWS = views  # read by StepTwo at call time
        seen[0] = 0
        t0 = time.perf_counter()
        results = pipe.predict([r.file_name for r in gt], batch_size=1)
        seconds = (time.perf_counter() - t0) / len(gt)
        pred = [res.to_record(schema, image_id=i) for i, res in enumerate(results)]
        m = evaluate(pred, gt, schema)["step2"]
        a = m["angles"]
        print(f"{name}: crops/radiograph {seen[0] / len(gt):.1f}, {seconds:.2f} s; NLE median "
              f"{m['localization']['median_x']:.2f} / "
              f"{m['localization']['median_y']:.2f} %; angle mean abs "
              + " / ".join(f"{a[k]['mean_abs']:.2f}" for k in angles if k in a)
              + "; median abs " + " / ".join(f"{a[k]['median_abs']:.2f}" for k in angles if k in a)
              + f"; p95 {m['euclidean']['p95_mm']:.2f} mm; levels right "
              f"{100 * m['identification']['image_rate']:.1f} %", flush=True)


if __name__ == "__main__":
    main()
