"""Train the two-step pipeline on your own COCO-keypoint data set, from Python.

The same as ``spinelandmarks train DATA --out RUN``; shown here to change any setting in code.
Without DATA, a small synthetic data set is made first. With ``--init-from PIPELINE`` every
stage starts from a trained pipeline's networks: fine-tuning on a few annotated images of a
new source (scanner, site), with the schema, sizes and backbones that pipeline was trained
with (``inherit_settings`` takes them from it).

Run: python examples/train_own_data.py [DATA] --out RUN [--epochs 30] [--tiny]
     [--init-from RUN_BEFORE/pipeline]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spinelandmarks.demo import CPU_DETECTOR
from spinelandmarks.init_from import inherit_settings
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.training import TrainConfig, train_pipeline


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=None, help="dataset directory (COCO layout)")
    ap.add_argument("--out", default="run_own_data")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="tiny CPU settings (smoke test)")
    ap.add_argument("--init-from", default=None, help="pipeline (or run) to fine-tune")
    args = ap.parse_args(argv)

    data = args.data or generate_dataset(Path(args.out) / "synthetic", 12, seed=0,
                                         config=PhantomConfig(long_side=256))
    cfg = TrainConfig(max_epochs=args.epochs, image_size=(512, 384), crop_size=(128, 128),
                      init_from=args.init_from)
    if args.tiny:
        cfg = TrainConfig(max_epochs=args.epochs, image_size=(128, 96), crop_size=(48, 48),
                          backbone="resnet_lite", detector_backbone="resnet_lite",
                          batch_size=4, num_workers=0, accelerator="cpu", progress=False,
                          detector_kwargs=dict(CPU_DETECTOR), init_from=args.init_from)
    if cfg.init_from is not None:
        cfg, taken = inherit_settings(cfg)  # the source's schema, sizes, backbones
        print(f"taken from {cfg.init_from}: {sorted(taken)}")
    pipeline_dir = train_pipeline(data, args.out, cfg)
    print(f"pipeline: {pipeline_dir}")
    return pipeline_dir


if __name__ == "__main__":
    main()
