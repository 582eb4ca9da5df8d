"""Where ``predict_files`` (the engine of ``spinelandmarks predict``) spends its time, next to
the pipeline's own time on the same radiographs, in one run.

Usage: python benchmarks/probes/predict_profile.py [--num 6] [--size 2560x2048] [--rounds 2]
       [--overlay-args ...]

Default networks with random weights (the cost does not depend on the weights), TTA on, batch
1. Alternates, ``--rounds`` times: the pipeline alone (``SpineLandmarkPipeline.predict`` on
decoded radiographs) and ``predict_files`` with overlays under cProfile (a new output folder
each time). Prints seconds per radiograph of both, their ratio, and the main thread's
cumulative time in the functions that matter (decode, pipeline, overlay drawing, encoding,
waiting for overlay workers).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from archive import _default_pipeline, _films

from spinelandmarks.data.io import read_image
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.predict import predict_files

WATCH = ("read_image", "predict_step", "draw_overlay", "save_png", "save_overlay", "_encode",
         "flush", "wait")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=6)
    ap.add_argument("--size", default="2560x2048")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--overlay-size", type=int, default=None,
                    help="predict_files(overlay_size=...) where supported")
    ap.add_argument("--overlay-format", default=None)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    extra = {k: v for k, v in (("overlay_size", args.overlay_size),
                               ("overlay_format", args.overlay_format)) if v is not None}
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} {args.num} films "
          f"{h}x{w} predict_files extra={extra}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = _films(root / "films", args.num, h, w, unique=args.num)
        run = _default_pipeline(root / "pipeline")
        pipe = SpineLandmarkPipeline.load(run)
        rads = [read_image(f) for f in files]
        pipe.predict(rads[:1], batch_size=1)  # warm-up
        for r in range(args.rounds):
            t0 = time.perf_counter()
            for rad in rads:
                pipe.predict([rad], batch_size=1)
            alone = (time.perf_counter() - t0) / len(rads)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            predict_files(run, files, root / f"out{r}", batch_size=1, accelerator="cpu",
                          progress=False, **extra)  # type: ignore[arg-type]
            prof.disable()
            engine = (time.perf_counter() - t0) / len(files)
            print(f"round {r}: pipeline alone {alone:.2f} s/radiograph, predict_files "
                  f"{engine:.2f} s/radiograph, ratio {engine / alone:.2f}", flush=True)
            stats = pstats.Stats(prof)
            for (_, _, name), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
                if name in WATCH:
                    print(f"    main thread in {name}: {cum / len(files):.3f} s/radiograph")


if __name__ == "__main__":
    main()
