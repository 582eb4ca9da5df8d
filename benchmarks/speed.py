"""Inference speed of the full two-step pipeline (detector + landmark model + refiner).

Usage: python benchmarks/speed.py [--device cpu|cuda] [--precision 32|bf16-mixed]
                                  [--size 2560x2048] [--batch 1 8] [--repeats 5]
                                  [--no-tta] [--channels-last] [--compile]

Builds the pipeline at its default sizes (ResNet-18 everywhere, 512x384 input, 128x128 crops;
weights do not change the cost, so they are random), writes one 16-bit PNG radiograph of
``--size`` and reports latency per radiograph with and without decoding, per batch size.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spinelandmarks.data.io import read_image, write_png16
from spinelandmarks.data.synthetic import PhantomConfig, generate_phantom
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.models.detector import VertebraDetector
from spinelandmarks.pipeline import SpineLandmarkPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="32")
    ap.add_argument("--size", default="2560x2048", help="radiograph HxW")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-detector", action="store_true")
    ap.add_argument("--no-tta", action="store_true",
                    help="one step-2 crop per vertebra instead of the six TTA views")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    torch.manual_seed(0)
    pipe = SpineLandmarkPipeline(LandmarkModel(), CropRefiner(),
                                 None if args.no_detector else VertebraDetector(),
                                 tta=not args.no_tta, channels_last=args.channels_last,
                                 compile=args.compile).to(args.device)
    image, _ = generate_phantom(0, PhantomConfig(long_side=max(h, w), aspect=w / h))
    image = np.ascontiguousarray(image[:h, :w])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "radiograph.png"
        write_png16(path, image)
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            read_image(path)
        decode = (time.perf_counter() - t0) / args.repeats
        print(f"device={args.device} precision={args.precision} threads={torch.get_num_threads()} "
              f"input={h}x{w} detector={not args.no_detector} tta={not args.no_tta} "
              f"channels_last={args.channels_last} compile={args.compile} torch={torch.__version__} "
              f"cpu={platform.processor() or platform.machine()}")
        print(f"decode 16-bit PNG: {decode * 1e3:.0f} ms/radiograph")
        for b in args.batch:
            batch = [image] * b
            pipe.predict(batch, batch_size=b, precision=args.precision)  # warm-up
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                pipe.predict(batch, batch_size=b, precision=args.precision)
            if args.device == "cuda":
                torch.cuda.synchronize()
            per = (time.perf_counter() - t0) / (args.repeats * b)
            print(f"batch {b:3d}: {per * 1e3:7.0f} ms/radiograph excl. decode "
                  f"({1 / per:6.1f} radiographs/s), {(per + decode) * 1e3:7.0f} ms incl. decode")


if __name__ == "__main__":
    main()
