"""Does a source model fail on a new style because of scale? Predict zoomed out, see.

A style-C radiograph shows its vertebrae larger, relative to the film, than the style-A films
a source model was trained on. This probe predicts each target image padded to 1/z of its
size (z < 1 zooms out; the padding is the median of the image's border), maps the points back
and reports, per zoom and for a per-image choice among the zooms (the QC-clean view with the
highest mean point score), the images with every level right and those QC passes.

Usage
-----
    python benchmarks/probes/zoom_search.py --pipeline RUN/pipeline --data TARGET/test \
        [--images 50] [--zooms 1,0.8,0.65,0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from spinelandmarks.data.annotations import read_coco
from spinelandmarks.data.io import Radiograph, read_image
from spinelandmarks.inference import SpineLandmarkPipeline, SpineResult
from spinelandmarks.metrics import level_identification


def zoomed_out(rad: Radiograph, zoom: float) -> tuple[Radiograph, np.ndarray]:
    """The image centred on a canvas 1/zoom its size, and the (x, y) offset of its origin."""
    h, w = rad.pixels.shape
    hh, ww = round(h / zoom), round(w / zoom)
    border = np.concatenate([rad.pixels[0], rad.pixels[-1], rad.pixels[:, 0], rad.pixels[:, -1]])
    canvas = np.full((hh, ww), float(np.median(border)), np.float32)
    y0, x0 = (hh - h) // 2, (ww - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = rad.pixels
    return Radiograph(canvas, rad.pixel_spacing, rad.source, dict(rad.meta)), np.array([x0, y0])


def every_level_right(result: SpineResult, truth: np.ndarray, schema) -> bool:
    st = level_identification(torch.from_numpy(result.points)[None].double(),
                              torch.from_numpy(truth)[None].double(), schema)
    return bool(torch.nan_to_num(st, nan=1.0).eq(1.0).all())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--data", required=True, help="annotated target images (COCO layout)")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--zooms", default="1,0.8,0.65,0.5")
    args = ap.parse_args()
    pipe = SpineLandmarkPipeline.load(args.pipeline)
    zooms = [float(z) for z in args.zooms.split(",")]
    recs = read_coco(Path(args.data) / "annotations.json", pipe.schema)[:args.images]
    truths = [np.where(r.visibility[:, None] > 0, r.points, np.nan) for r in recs]
    per_zoom: dict[float, list[SpineResult]] = {}
    for z in zooms:
        out = []
        for r in recs:
            rad, off = zoomed_out(read_image(Path(args.data) / r.file_name), z)
            res = pipe.predict(rad)[0]
            out.append(dataclasses.replace(res, points=res.points - off))
        per_zoom[z] = out
        right = [every_level_right(x, t, pipe.schema) for x, t in zip(out, truths, strict=True)]
        clean = [not x.needs_review for x in out]
        print(f"zoom {z:.2f}: every level right {sum(right)}/{len(recs)}, QC-clean {sum(clean)}, "
              f"clean and right {sum(a and b for a, b in zip(right, clean, strict=True))}",
              flush=True)
    chosen, right = 0, 0
    for i, t in enumerate(truths):
        clean = [per_zoom[z][i] for z in zooms if not per_zoom[z][i].needs_review]
        if clean:
            best = max(clean, key=lambda x: float(np.nanmean(x.point_scores)))
            chosen += 1
            right += every_level_right(best, t, pipe.schema)
    print(f"chosen per image (QC-clean, highest mean point score): {chosen} images, "
          f"{right} with every level right")


if __name__ == "__main__":
    main()
