"""``spinelandmarks demo``: the whole method on synthetic radiographs, in minutes.

1. synthesize a training set and a held-out test set (different seeds, so different patients);
2. train detector, landmark model and refiner with a time budget sized to the device;
3. predict on the test set (step 1 and step 2);
4. evaluate and print the headline figures next to the reference study's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data.annotations import ImageRecord, read_coco
from .defaults import CPU_BUDGET_S as CPU_BUDGET_S  # re-exported: demo.CPU_BUDGET_S
from .defaults import CPU_DETECTOR as CPU_DETECTOR
from .defaults import DETECTOR_HEADS, detector_head
from .defaults import GPU_BUDGET_S as GPU_BUDGET_S
from .evaluation import evaluate
from .evaluation.report import summary_table, write_report
from .phantoms import PhantomConfig, generate_dataset
from .predict import predict_files
from .schema import LUMBAR_SAGITTAL, LandmarkSchema
from .training import TrainConfig, train_pipeline

__all__ = ["TestSetEvaluation", "predict_and_evaluate", "run_demo"]



@dataclass
class TestSetEvaluation:
    """What :func:`predict_and_evaluate` produced.

    Attributes
    ----------
    metrics : dict
        As :func:`~spinelandmarks.evaluation.evaluate`.
    failures : list of (file, reason)
        Files that could not be predicted.
    pred, step1, gt : list of ImageRecord
        Step-2 and step-1 predictions and the ground truth, file names matched.
    report : Path
        The Markdown report.
    """

    metrics: dict[str, Any]
    failures: list[tuple[str, str]]
    pred: list[ImageRecord]
    step1: list[ImageRecord]
    gt: list[ImageRecord]
    report: Path


def predict_and_evaluate(run: Path, test_dir: Path, out: Path, *, accelerator: str = "auto",
                         batch_size: int = 8, tta: bool | None = None,
                         schema: LandmarkSchema = LUMBAR_SAGITTAL) -> TestSetEvaluation:
    """Predict ``test_dir/images`` with the run's pipeline into ``out/predictions`` and write
    the evaluation against ``test_dir/annotations.json`` to ``out/report`` (``tta`` as for
    :func:`~spinelandmarks.predict.predict_files`; ``schema`` the run's)."""
    files = sorted((test_dir / "images").iterdir())
    pred_dir = out / "predictions"
    failures = predict_files(run, files, pred_dir, batch_size=batch_size,
                             accelerator=accelerator, tta=tta)
    gt = read_coco(test_dir / "annotations.json", schema)
    for r in gt:  # predictions name files by the path given to predict
        r.file_name = str(test_dir / r.file_name)
    pred = read_coco(pred_dir / "predictions.json", schema)
    step1 = read_coco(pred_dir / "predictions_step1.json", schema)
    metrics = evaluate(pred, gt, schema, step1_records=step1)
    report = write_report(metrics, out / "report", pred_records=pred, gt_records=gt,
                          schema=schema, step1_records=step1)
    return TestSetEvaluation(metrics, failures, pred, step1, gt, report)


def run_demo(out: str | Path = "demo_out", *, num_train: int = 160, num_test: int = 40,
             max_epochs: int | None = None, accelerator: str = "auto", seed: int = 0,
             long_side: int | None = None) -> int:
    """Run the demo end to end; return the exit status (0 on success).

    With ``max_epochs`` the stages train for that many epochs instead of the time budget.
    """
    t0 = time.perf_counter()
    out = Path(out)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    size = long_side or (768 if gpu else 512)
    config = PhantomConfig(long_side=size)
    print(f"[1/4] synthesizing {num_train} training and {num_test} test radiographs "
          f"({size} px) in {out}")
    train_dir = generate_dataset(out / "train", num_train, seed=seed, config=config, workers=2)
    test_dir = generate_dataset(out / "test", num_test, seed=seed + 10_000, config=config,
                                workers=2)
    budget = GPU_BUDGET_S if gpu else CPU_BUDGET_S
    cfg = TrainConfig(
        accelerator="gpu" if gpu else "cpu", devices=1,
        precision="bf16-mixed" if gpu else "32-true",
        max_epochs=max_epochs or 30, image_size=(384, 288) if gpu else (256, 192),
        crop_size=(96, 96) if gpu else (64, 64), batch_size=16 if gpu else 8,
        crop_batch_size=64 if gpu else 32,
        backbone="resnet18" if gpu else "resnet_lite",
        detector_backbone="resnet18" if gpu else "resnet_lite",
        lr=2e-3, num_workers=2, seed=seed,
        time_budget_s={} if max_epochs else dict(budget), progress=True,
        detector_kwargs=dict(DETECTOR_HEADS[detector_head(gpu)]))
    print(f"[2/4] training detector, landmark model and refiner "
          f"({'GPU' if gpu else 'CPU'}, {cfg.backbone}, input {cfg.image_size[0]}x"
          f"{cfg.image_size[1]}, crops {cfg.crop_size[0]}x{cfg.crop_size[1]})")
    run = out / "run"
    train_pipeline(train_dir, run, cfg)
    print("[3/4] predicting the held-out test set, then [4/4] evaluating")
    result = predict_and_evaluate(run, test_dir, out, accelerator="gpu" if gpu else "cpu")
    metrics = result.metrics
    minutes = (time.perf_counter() - t0) / 60
    det = metrics["step2"]["detection"]
    print()
    print(f"spinelandmarks demo: {num_test} synthetic test radiographs, "
          f"{minutes:.1f} min on {'GPU' if gpu else 'CPU'}")
    print(summary_table(metrics))
    print(f"levels reported (presence only): "
          f"{det.get('level_detection_rate', float('nan')):.3f}")
    print(f"report:   {result.report}")
    print(f"overlays: {out / 'predictions' / 'overlays'}")
    print("Synthetic phantoms are easier than real radiographs; the study's figures are on 195 "
          "real images.")
    return 1 if result.failures else 0
