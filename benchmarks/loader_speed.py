"""Throughput of the training loader (samples/s) on synthetic radiographs, optionally side by
side with the network-only training throughput at the same sample size and batch.

Usage::

    python benchmarks/loader_speed.py [--workers 2] [--size 1024] [--images 32]
        [--task landmarks|detection|crops] [--crop-size 128x128] [--cache none|memory|disk]
        [--data DIR] [--network --backbone resnet_lite --threads 1]

Generates phantoms of ``--size`` px (long side) in a temp folder (or reads ``--data``), then
times the ``SpineDataModule`` training loader (augmentation on) over ``--epochs`` epochs (the
first epoch, which starts the workers and fills the caches, is reported separately). With
``--network`` it then times forward + backward + AdamW of the stage's network alone
(``LandmarkModel`` for landmarks and detection, ``CropRefiner`` for crops) on random batches
of the same size on ``--threads`` threads, and prints the loader / network ratio after every epoch
(the two alternate, so both see the same load on a shared machine): a loader at 100 % or more
keeps the network busy.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.models.base import LandmarkTask
from spinelandmarks.phantoms import PhantomConfig, generate_dataset


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def loader_rates(data: str, args: argparse.Namespace, cache_dir: str) -> Iterator[float]:
    """Samples/s of every epoch of the training loader, one epoch per iteration."""
    extra = ({"cache_dir": cache_dir}  # older versions: no cache_dir (before/after runs)
             if "cache_dir" in inspect.signature(SpineDataModule).parameters else {})
    dm = SpineDataModule(data, task=args.task, input_size=args.input_size,
                         crop_size=args.crop_size, batch_size=args.batch_size,
                         num_workers=args.workers, split=(1.0, 0.0, 0.0), cache=args.cache,
                         augment=True, pin_memory=False, **extra)  # type: ignore[arg-type]
    dm.setup("fit")
    loader = dm.train_dataloader()
    for epoch in range(args.epochs):
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            n += len(batch)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        # In one process (--workers 0) the CPU time is the loader's own, whatever the load.
        own = f", {n / cpu:.1f} samples per CPU-second" if args.workers == 0 else ""
        print(f"loader epoch {epoch}: {n} samples in {dt:.2f} s = {n / dt:.1f} samples/s"
              f"{own} ({args.task}, {args.workers} workers, cache={args.cache})", flush=True)
        yield n / dt


def network_rate(args: argparse.Namespace) -> Callable[[], float]:
    """A function timing forward + backward + AdamW step alone on random batches
    (samples/s)."""
    from train_speed import batch  # benchmarks/ is on sys.path when this script runs

    model: LandmarkTask
    if args.task == "crops":
        model, size = CropRefiner(backbone=args.backbone, input_size=args.crop_size), \
            args.crop_size
    else:
        model, size = LandmarkModel(backbone=args.backbone, input_size=args.input_size), \
            args.input_size
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = batch(model, size, args.batch_size, "cpu")

    def step() -> None:
        loss, _, _ = model.compute_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()

    def timed() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        n = args.batch_size * args.steps
        rate = n / (time.perf_counter() - t0)
        cpu = n / (time.process_time() - c0)
        torch.set_num_threads(threads)
        print(f"network alone: {rate:.1f} samples/s, {cpu:.1f} samples per CPU-second "
              f"({type(model).__name__}, {args.backbone}, {size[0]}x{size[1]}, batch "
              f"{args.batch_size}, {args.threads} thread(s))", flush=True)
        return rate

    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024, help="long side of the phantoms, px")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--data", default=None, help="existing dataset (default: generate)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--task", default="landmarks", choices=["landmarks", "detection", "crops"])
    ap.add_argument("--input-size", type=_size, default=(512, 384))
    ap.add_argument("--crop-size", type=_size, default=(128, 128))
    ap.add_argument("--cache", default="none", choices=["none", "memory", "disk"])
    ap.add_argument("--network", action="store_true", help="also time the network alone")
    ap.add_argument("--backbone", default="resnet_lite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = str(Path(tmp) / "data")
            generate_dataset(data, args.images, seed=0,
                             config=PhantomConfig(long_side=args.size),
                             workers=max(1, args.workers))
        # Loader epochs and network timings alternate, so both see the same machine load.
        net = network_rate(args) if args.network else None
        for epoch, rate in enumerate(loader_rates(data, args, str(Path(tmp) / "cache"))):
            if net is not None:
                print(f"loader / network, epoch {epoch}: {100 * rate / net():.0f} %", flush=True)


if __name__ == "__main__":
    main()
