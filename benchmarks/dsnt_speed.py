"""DSNT forward+backward time against dsntnn on the same tensors.

Usage: python benchmarks/dsnt_speed.py [--shape 64 22 128 96] [--device cpu] [--repeats 20]

Times flat_softmax + dsnt + euclidean loss + JS regularization, forward and backward, for
spinelandmarks and dsntnn 0.5.3 on identical logits, and checks that both give the same
coordinates and losses.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import dsntnn
import torch

from spinelandmarks import dsnt as ours


def step_ours(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hm = ours.flat_softmax(logits)
    coords = ours.dsnt(hm)
    loss = ours.euclidean_loss(coords, target).mean() + ours.js_reg_loss(hm, target, 1.0).mean()
    return coords, loss


def step_ref(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hm = dsntnn.flat_softmax(logits)
    coords = dsntnn.dsnt(hm)
    loss = (dsntnn.euclidean_losses(coords, target).mean()
            + dsntnn.js_reg_losses(hm, target, 1.0).mean())
    return coords, loss


def timeit(fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
           logits: torch.Tensor, target: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        x = logits.detach().requires_grad_(True)
        _, loss = fn(x, target)
        loss.backward()
        if x.is_cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[64, 22, 128, 96])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*args.shape, generator=g).to(args.device)
    target = (torch.rand(args.shape[0], args.shape[1], 2, generator=g) * 1.8 - 0.9).to(args.device)
    c1, l1 = step_ours(logits, target)
    c2, l2 = step_ref(logits, target)
    t_ours = timeit(step_ours, logits, target, args.repeats)
    t_ref = timeit(step_ref, logits, target, args.repeats)
    print(f"shape={tuple(args.shape)} device={args.device} threads={torch.get_num_threads()}")
    print(f"max |coords diff| = {(c1 - c2).abs().max().item():.3e}, "
          f"|loss diff| = {(l1 - l2).abs().item():.3e}")
    print(f"spinelandmarks: {t_ours * 1e3:.1f} ms  dsntnn: {t_ref * 1e3:.1f} ms  "
          f"ratio (ours/dsntnn): {t_ours / t_ref:.2f}")


if __name__ == "__main__":
    main()
