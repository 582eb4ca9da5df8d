"""Throughput of the training loader (images/s) on synthetic radiographs.

Usage: ``python benchmarks/loader_speed.py [--workers 2] [--size 1024] [--images 32]``.
Generates phantoms of ``--size`` px (long side) in a temp folder, then times
``SpineDataModule(task="landmarks", input_size=(512, 384), augment=True)`` over a few epochs
(the first epoch, which starts the workers, is reported separately).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.synthetic import PhantomConfig, generate_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="long side of the phantoms, px")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--task", default="landmarks", choices=["landmarks", "detection", "crops"])
    ap.add_argument("--cache", default="none", choices=["none", "memory", "disk"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(tmp, args.images, seed=0, config=PhantomConfig(long_side=args.size),
                         workers=max(1, args.workers))
        dm = SpineDataModule(tmp, task=args.task, input_size=(512, 384),
                             batch_size=args.batch_size, num_workers=args.workers,
                             split=(1.0, 0.0, 0.0), cache=args.cache, augment=True,
                             pin_memory=False)
        dm.setup("fit")
        loader = dm.train_dataloader()
        for epoch in range(args.epochs):
            t0, n = time.perf_counter(), 0
            for batch in loader:
                n += len(batch)
            dt = time.perf_counter() - t0
            print(f"epoch {epoch}: {n} samples in {dt:.2f} s = {n / dt:.1f} samples/s "
                  f"({args.task}, {args.workers} workers, {args.size} px source, "
                  f"512x384 input, cache={args.cache})")


if __name__ == "__main__":
    main()
