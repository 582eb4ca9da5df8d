"""Prediction over archives: throughput with decoding workers, memory in the number of images,
and resuming after SIGKILL.

Usage: python benchmarks/archive.py throughput [--num 200] [--size 2560x2048] [--workers 0 2]
       python benchmarks/archive.py memory [--counts 1000 10000]
       python benchmarks/archive.py kill [--num 300] [--tries 3]

``throughput`` times, side by side in one run, the pipeline alone
(``SpineLandmarkPipeline.predict`` on decoded radiographs, batch 1, the first 20 films) and
``predict_files`` (the engine of ``spinelandmarks predict``, overlays on) over ``--num`` 16-bit
PNG radiographs, once per ``--workers`` value, with the networks of ``benchmarks/speed.py``
(default sizes, random weights, the steps a trained pipeline runs; ``--backend``), and reports
seconds per radiograph, their ratio and the share of the time spent decoding.
``memory`` predicts 1,000 and 10,000 small radiographs with a tiny pipeline, each run in its own
process, and reports the peak RSS. ``kill`` SIGKILLs a prediction at a random moment, resumes it
and compares the final files with those of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from speed import default_pipeline  # benchmarks/speed.py: the same networks

from spinelandmarks.data.io import read_image, write_png16
from spinelandmarks.defaults import detector_head
from spinelandmarks.inference import SpineLandmarkPipeline
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.predict import predict_files

OUTPUTS = ("predictions.json", "predictions_step1.json", "measurements.csv", "failures.csv")


def _films(folder: Path, num: int, h: int, w: int, unique: int = 10) -> list[Path]:
    """``num`` radiographs: ``unique`` phantoms written once, then copied under new names."""
    folder.mkdir(parents=True, exist_ok=True)
    first = []
    for i in range(min(unique, num)):
        image, _ = generate_phantom(i, PhantomConfig(long_side=max(h, w), aspect=w / h))
        first.append(folder / f"{i:06d}.png")
        write_png16(first[-1], np.ascontiguousarray(image[:h, :w]))
    files = list(first)
    for i in range(len(first), num):
        files.append(folder / f"{i:06d}.png")
        shutil.copyfile(first[i % len(first)], files[-1])
    return files


def _default_pipeline(folder: Path, accelerator: str = "cpu") -> Path:
    return default_pipeline(detector_head(accelerator == "gpu")).save(folder)


def _tiny_pipeline(folder: Path) -> Path:
    torch.manual_seed(0)
    return SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)),
                                 CropRefiner(backbone="resnet_lite", input_size=(48, 48)),
                                 tta=False).save(folder)


def throughput(args: argparse.Namespace) -> None:
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = _films(root / "films", args.num, h, w)
        run = _default_pipeline(root / "pipeline", args.accelerator)
        t0 = time.perf_counter()
        decoded = [read_image(f).pixels for f in files[:20]]
        decode = (time.perf_counter() - t0) / len(decoded)
        print(f"{args.num} radiographs {h}x{w}, threads={torch.get_num_threads()}, "
              f"backend={args.backend}, batch={args.batch}, torch={torch.__version__}, "
              f"cpu={platform.processor() or platform.machine()}")
        print(f"decode alone: {decode * 1e3:.0f} ms/radiograph (main process)")
        pipe = SpineLandmarkPipeline.load(run, backend=args.backend)
        pipe.predict(decoded[:1], batch_size=1)  # warm-up (and the ONNX export)
        t0 = time.perf_counter()
        pipe.predict(decoded, batch_size=1)
        alone = (time.perf_counter() - t0) / len(decoded) + decode
        print(f"pipeline alone: {alone * 1e3:.0f} ms/radiograph with decoding")
        for workers in args.workers:
            t0 = time.perf_counter()
            predict_files(run, files, root / f"out{workers}", batch_size=args.batch,
                          accelerator=args.accelerator, precision=args.precision,
                          progress=False, workers=workers, backend=args.backend)
            per = (time.perf_counter() - t0) / len(files)
            share = decode / per if workers == 0 else float("nan")
            print(f"--workers {workers}: {1 / per:.3f} radiographs/s, {per * 1e3:.0f} ms each, "
                  f"{per / alone:.2f}x the pipeline"
                  + (f", decode {100 * share:.1f} % of the time" if workers == 0 else ""))


_MEMORY_CHILD = """
import resource, sys
from pathlib import Path
from spinelandmarks.predict import predict_files
files = sorted(Path(sys.argv[2]).iterdir())[: int(sys.argv[3])]
predict_files(sys.argv[1], files, sys.argv[4], batch_size=16, accelerator="cpu",
              progress=False, overlays=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _films(root / "films", max(args.counts), 128, 96)
        run = _tiny_pipeline(root / "pipeline")
        for n in args.counts:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(run),
                                  str(root / "films"), str(n), str(root / f"out{n}")],
                                 check=True, capture_output=True, text=True)
            rss_mib = int(out.stdout.split()[-1]) / 1024
            print(f"{n:6d} radiographs 128x96: peak RSS {rss_mib:.0f} MiB, "
                  f"{time.perf_counter() - t0:.0f} s")


_KILL_CHILD = """
import sys
from pathlib import Path
from spinelandmarks.predict import predict_files
files = sorted(Path(sys.argv[2]).iterdir())
predict_files(sys.argv[1], files, sys.argv[3], batch_size=4, accelerator="cpu",
              progress=False, overlays=False)
"""


def kill(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _films(root / "films", args.num, 256, 192)
        run = _tiny_pipeline(root / "pipeline")

        def child(out: Path) -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(run),
                                     str(root / "films"), str(out)])

        t0 = time.perf_counter()
        child(root / "whole").wait()
        whole = time.perf_counter() - t0
        for k in range(args.tries):
            out = root / f"killed{k}"
            target = rng.randint(1, args.num - 1)  # images journaled when the kill comes
            proc = child(out)
            while _journaled(out) < target and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done = _journaled(out)
            child(out).wait()
            same = all((out / n).read_bytes() == (root / "whole" / n).read_bytes()
                       for n in OUTPUTS)
            print(f"try {k}: SIGKILL at >= {target}: {done} of {args.num} images journaled; resumed: "
                  f"outputs identical to the uninterrupted run ({whole:.0f} s): {same}")


def _journaled(out: Path) -> int:
    """Lines in the journal and the rank shards of a running prediction."""
    files = [out / "predictions.jsonl", *sorted((out / "shards").glob("rank*.jsonl"))]
    n = 0
    for f in files:
        try:
            n += f.read_bytes().count(b"\n")
        except OSError:  # not there yet, or merged away meanwhile
            pass
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--size", default="2560x2048", help="radiograph HxW")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    p.add_argument("--accelerator", default="cpu", help="cpu or gpu (default cpu)")
    p.add_argument("--precision", default="32", help="32, bf16-mixed or 16-mixed")
    p = sub.add_parser("memory")
    p.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    p = sub.add_parser("kill")
    p.add_argument("--num", type=int, default=300)
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"peak RSS of this process so far: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    {"throughput": throughput, "memory": memory, "kill": kill}[args.what](args)


if __name__ == "__main__":
    main()
