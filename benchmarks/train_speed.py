"""Training throughput (images/s per optimizer step) of each module on synthetic batches.

Usage: python benchmarks/train_speed.py [--device cpu|cuda] [--precision 32|bf16]
                                        [--backbone resnet18] [--steps 5]

Measures forward + backward + AdamW step at the default sizes of ``spinelandmarks train``
(detector and landmark model 512x384, batch 8; refiner 128x128 crops, batch 32), excluding
data loading (see loader_speed.py for the loader's own throughput).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from spinelandmarks.data.batch import LandmarkBatch
from spinelandmarks.defaults import CROP_SIZE, INPUT_SIZE
from spinelandmarks.models import CropRefiner, LandmarkModel, VertebraDetector
from spinelandmarks.models.base import LandmarkTask


def batch(model: LandmarkTask, size: tuple[int, int], n: int, device: str) -> LandmarkBatch:
    g = torch.Generator().manual_seed(0)
    p = model.schema.max_points_per_level if isinstance(model, CropRefiner) \
        else model.schema.num_points
    pts = torch.rand(n, p, 2, generator=g) * torch.tensor([size[1], size[0]]) * 0.8 + 10
    boxes = [torch.tensor([[20.0 + 40 * k, 30.0 + 60 * k, 120.0 + 40 * k, 80.0 + 60 * k]
                           for k in range(6)]) for _ in range(n)]
    return LandmarkBatch(
        images=torch.rand(n, 1, *size, generator=g), points=pts,
        visibility=torch.full((n, p), 2), matrices=torch.eye(3, dtype=torch.float64).expand(n, 3, 3),
        pixel_spacing=torch.full((n, 2), 0.2), boxes=boxes,
        labels=[torch.arange(1, 7) for _ in range(n)]).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["32", "bf16"], default="32")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    print(f"device={args.device} precision={args.precision} backbone={args.backbone} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    cases: list[tuple[str, LandmarkTask, tuple[int, int], int]] = [
        ("detector", VertebraDetector(backbone=args.backbone), INPUT_SIZE, 8),
        ("landmark", LandmarkModel(backbone=args.backbone), INPUT_SIZE, 8),
        ("refiner", CropRefiner(backbone=args.backbone), CROP_SIZE, 32),
    ]
    for name, model, size, n in cases:
        model.to(args.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        b = batch(model, size, n, args.device)
        ctx = (torch.autocast(args.device, dtype=torch.bfloat16) if args.precision == "bf16"
               else contextlib.nullcontext())

        def step(model: LandmarkTask = model, b: LandmarkBatch = b,
                 opt: torch.optim.Optimizer = opt, ctx: contextlib.AbstractContextManager = ctx
                 ) -> None:
            with ctx:
                loss, _, _ = model.compute_loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        print(f"{name:9s} {size[0]}x{size[1]} batch {n:3d}: {n / dt:7.1f} images/s "
              f"({dt * 1e3:.0f} ms/step)")


if __name__ == "__main__":
    main()
