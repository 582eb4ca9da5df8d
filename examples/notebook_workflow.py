"""The notebook workflow: load a trained pipeline, predict, plot, measure.

Run: python examples/notebook_workflow.py RUN_OR_PIPELINE_DIR IMAGE [IMAGE ...] [--out overlay.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from spinelandmarks.data.io import read_image
from spinelandmarks.data.plot import draw_points, save_png
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.predict import resolve_pipeline_dir


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out", default="overlay.png", help="overlay of the first image")
    args = ap.parse_args(argv)

    pipe = SpineLandmarkPipeline.load(resolve_pipeline_dir(args.run))
    results = pipe.predict(args.images, batch_size=4)
    for path, r in zip(args.images, results, strict=True):
        angles = ", ".join(f"{k} {v:.1f} deg" for k, v in r.parameters.items())
        print(f"{path}: {angles}; missing levels: {r.missing_levels or 'none'}")

    first = read_image(args.images[0])
    ok = np.isfinite(results[0].points).all(-1)
    rgb = draw_points(first.pixels, np.nan_to_num(results[0].points), pipe.schema,
                      visibility=ok.astype(np.int64) * 2)
    save_png(args.out, rgb)
    print(f"overlay: {args.out}")
    return [r.parameters for r in results]


if __name__ == "__main__":
    main()
