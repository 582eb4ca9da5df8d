"""CPU time of one overlay (draw + encode) at full resolution against the reduced size.

Usage: python benchmarks/probes/overlay_cost.py [--size 2560x2048] [--repeats 3]

One phantom radiograph of ``--size`` (16-bit), its reference points as the result (the
overlay's cost does not depend on the networks); measured in CPU time of this process
(``time.process_time``), so other jobs on a shared machine barely change it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spinelandmarks.data.io import Radiograph
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.overlay import draw_overlay, save_overlay
from spinelandmarks.phantoms import PhantomConfig, generate_phantom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2560x2048")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    image, rec = generate_phantom(0, PhantomConfig(long_side=max(h, w), aspect=w / h))
    image = np.ascontiguousarray(image[:h, :w])
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)),
                                 CropRefiner(backbone="resnet_lite", input_size=(48, 48)),
                                 tta=False)
    res = pipe.predict(np.zeros((256, 200), np.float32) + 0.5)[0]
    res.points = rec.points.astype(np.float64)
    rad = Radiograph(pixels=image, pixel_spacing=None, source="x")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for label, side, suffix in (("full resolution, PNG", None, ".png"),
                                    ("1024 px, PNG", 1024, ".png"),
                                    ("1024 px, JPEG", 1024, ".jpg")):
            c0 = time.process_time()
            for k in range(args.repeats):
                rgb = draw_overlay(rad, res, pipe, side)
                save_overlay(Path(tmp) / f"{k}{suffix}", rgb)
            cpu = (time.process_time() - c0) / args.repeats
            size = (Path(tmp) / f"0{suffix}").stat().st_size
            print(f"{label:22s}: {cpu:.3f} CPU-s per overlay, {rgb.shape[1]}x{rgb.shape[0]}, "
                  f"{size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
