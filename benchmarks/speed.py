"""Inference speed of the full two-step pipeline (detector + landmark model + refiner).

Usage: python benchmarks/speed.py [--device cpu|cuda] [--precision 32|bf16-mixed]
                                  [--size 2560x2048] [--batch 1 8] [--repeats 5]
                                  [--no-tta] [--channels-last] [--compile]
                                  [--backend torch onnxruntime] [--flops]

Builds the pipeline at its default sizes (ResNet-18 everywhere, 512x384 input, 128x128 crops,
the detector head ``train`` picks for the device) with random weights, writes one 16-bit PNG
radiograph of
``--size`` and reports latency per radiograph with and without decoding, per batch size and
backend (several backends are timed in alternation, the median of ``--repeats`` each).
``--flops`` also counts the floating-point operations of one radiograph
(``torch.utils.flop_counter.FlopCounterMode``, eager, batch 1), measures the machine's float32
matmul rate (2048x2048 ``torch.mm`` on the same threads) and prints the fraction of that
limit each backend reaches.

Random weights cost what trained ones do per network pass, but they move every level off its
crop, so re-cropping and column repair would refine each level again (three to four refiner
passes instead of one). A trained pipeline on films like its training images refines each
level once (``benchmarks/probes/tta_views.py`` counts the crops), so both steps are off by
default; ``--every-level-again`` keeps them on: the worst case.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spinelandmarks.data.io import read_image, write_png16
from spinelandmarks.defaults import DETECTOR_HEADS, detector_head
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.models.detector import VertebraDetector
from spinelandmarks.ort_backend import use_onnxruntime
from spinelandmarks.phantoms import PhantomConfig, generate_phantom


def matmul_rate(seconds: float = 1.0, n: int = 2048) -> float:
    """float32 FLOP/s of ``torch.mm`` on ``n x n`` matrices (the best of a few runs)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_per_radiograph(pipe: SpineLandmarkPipeline, image: np.ndarray) -> float:
    """Floating-point operations of one eager prediction (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        pipe.predict([image], batch_size=1)
    return float(counter.get_total_flops())


def default_pipeline(head: str | None = "small", *, every_level_again: bool = False,
                     **kwargs: bool) -> SpineLandmarkPipeline:
    """The default networks and sizes with random weights (seed 0): the detector head
    ``head`` (None: no detector); re-cropping and column repair only with
    ``every_level_again`` (see the module docstring); ``kwargs``: pipeline options."""
    torch.manual_seed(0)
    detector = None if head is None else VertebraDetector(**DETECTOR_HEADS[head])
    return SpineLandmarkPipeline(LandmarkModel(), CropRefiner(), detector,
                                 recrop=every_level_again, column_repair=every_level_again,
                                 **kwargs)


def count_crops(pipe: SpineLandmarkPipeline) -> list[int]:
    """Wrap the eager refiner's ``predict_points``: ``[n]``, the crops it was given since (the
    FLOP count is the first prediction, so ``n`` is then one radiograph's)."""
    seen = [0]
    inner = pipe.refiner.predict_points  # type: ignore[union-attr]

    def counted(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen[0] += x.shape[0]
        return inner(x)

    object.__setattr__(pipe.refiner, "predict_points", counted)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="32")
    ap.add_argument("--size", default="2560x2048", help="radiograph HxW")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-detector", action="store_true")
    ap.add_argument("--detector-head", choices=sorted(DETECTOR_HEADS), default=None,
                    help="default: the head `train` picks for the device (small on CPU)")
    ap.add_argument("--small-detector", action="store_const", const="small",
                    dest="detector_head", help="the same as --detector-head small")
    ap.add_argument("--every-level-again", action="store_true",
                    help="keep re-cropping and column repair on: with random weights they "
                         "refine every level again (the worst case)")
    ap.add_argument("--no-tta", action="store_true",
                    help="one step-2 crop per vertebra instead of the six TTA views")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--backend", nargs="+", default=["torch"], choices=["torch", "onnxruntime"])
    ap.add_argument("--flops", action="store_true",
                    help="count FLOPs per radiograph and report the fraction of the matmul rate")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    head = args.detector_head or detector_head(args.device == "cuda")
    again = args.every_level_again
    pipe = default_pipeline(None if args.no_detector else head, every_level_again=again,
                            tta=not args.no_tta, channels_last=args.channels_last,
                            compile=args.compile).to(args.device)
    crops = count_crops(pipe)
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
              f"input={h}x{w} detector={'none' if args.no_detector else head} "
              f"tta={not args.no_tta} every_level_again={again} "
              f"channels_last={args.channels_last} compile={args.compile} torch={torch.__version__} "
              f"cpu={platform.processor() or platform.machine()}")
        print(f"decode 16-bit PNG: {decode * 1e3:.0f} ms/radiograph")
        pipes = {"torch": pipe}
        if "onnxruntime" in args.backend:
            saved = pipe.save(Path(tmp) / "pipeline")
            pipes["onnxruntime"] = use_onnxruntime(SpineLandmarkPipeline.load(saved),
                                                   Path(tmp) / "onnx")
        flops = rate = None
        if args.flops:
            flops, rate = flops_per_radiograph(pipe, image), matmul_rate()
            print(f"{flops / 1e9:.1f} GFLOP per radiograph ({crops[0]} refiner crops); "
                  f"matmul rate {rate / 1e9:.1f} GFLOP/s (float32, "
                  f"{torch.get_num_threads()} threads)")
        for b in args.batch:
            batch = [image] * b
            times: dict[str, list[float]] = {k: [] for k in args.backend}
            for k in args.backend:
                pipes[k].predict(batch, batch_size=b, precision=args.precision)  # warm-up
            for _ in range(args.repeats):
                for k in args.backend:  # alternating: both see the same machine load
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    pipes[k].predict(batch, batch_size=b, precision=args.precision)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    times[k].append((time.perf_counter() - t0) / b)
            for k, ts in times.items():
                per = statistics.median(ts)
                limit = (f", {100 * flops / (per * rate):.0f} % of the matmul limit"
                         if flops and rate else "")
                print(f"{k:11s} batch {b:3d}: {per * 1e3:7.0f} ms/radiograph excl. decode "
                      f"({1 / per:6.1f} radiographs/s), {(per + decode) * 1e3:7.0f} ms incl. "
                      f"decode{limit}")


if __name__ == "__main__":
    main()
