"""One-step peer: torchvision Keypoint R-CNN on the same synthetic benchmark.

Usage: python benchmarks/keypoint_rcnn.py BENCH [--minutes 8] [--size 256x192]

Reads the data sets written by ``benchmarks/accuracy.py`` (BENCH/train, BENCH/test), trains
torchvision's Keypoint R-CNN with one instance per radiograph (the box around the whole
L1-S1 spine, 22 keypoints) on letterboxed images of the same input size as our step-1 model,
for a wall-clock budget, then predicts the test set and evaluates it with the same code and
figures as ``spinelandmarks evaluate`` (BENCH/keypoint_rcnn/report). Random initialization and
the ``resnet_lite`` backbone, like the CPU mode of our benchmark, so the comparison is
like-for-like in data, input size and budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor

from spinelandmarks.data.annotations import ImageRecord, read_coco
from spinelandmarks.data.batch import LandmarkBatch, collate
from spinelandmarks.data.datasets import LandmarkDataset
from spinelandmarks.evaluation import evaluate
from spinelandmarks.evaluation.report import write_report
from spinelandmarks.geometry import transform_points
from spinelandmarks.models.backbones import Backbone
from spinelandmarks.models.detector import _BackboneFPN
from spinelandmarks.schema import LUMBAR_SAGITTAL as SCHEMA


def build(size: tuple[int, int]) -> KeypointRCNN:
    fpn = _BackboneFPN(Backbone("resnet_lite"), 64)
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    # Heads narrowed like our CPU detector (torchvision's 8 x 512-channel keypoint head
    # costs seconds per image on 2 cores); the design is unchanged.
    return KeypointRCNN(fpn, num_classes=None, min_size=min(size), max_size=max(size),
                        image_mean=[0.0] * 3, image_std=[1.0] * 3, rpn_anchor_generator=anchors,
                        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=300,
                        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=100,
                        box_batch_size_per_image=64, box_detections_per_img=5,
                        box_head=TwoMLPHead(64 * 7 * 7, 256),
                        box_predictor=FastRCNNPredictor(256, 2),
                        keypoint_head=KeypointRCNNHeads(64, (128,) * 4),
                        keypoint_predictor=KeypointRCNNPredictor(128, SCHEMA.num_points))


def targets(batch: LandmarkBatch) -> list[dict[str, torch.Tensor]]:
    out = []
    for pts, vis in zip(batch.points, batch.visibility, strict=True):
        ok = (vis > 0) & torch.isfinite(pts).all(-1)
        p = torch.where(ok[:, None], pts, torch.zeros_like(pts))
        lo, hi = pts[ok].amin(0) - 10, pts[ok].amax(0) + 10
        kp = torch.cat([p, ok[:, None].float() * 2], -1)
        out.append({"boxes": torch.cat([lo, hi])[None], "labels": torch.ones(1, dtype=torch.long),
                    "keypoints": kp[None]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--size", default="256x192")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    bench = Path(args.bench)
    torch.manual_seed(0)
    train_recs = read_coco(bench / "train" / "annotations.json", SCHEMA)
    train = LandmarkDataset(train_recs, bench / "train", SCHEMA, input_size=size, train=True)
    loader = DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate, num_workers=2,
                        drop_last=len(train) > 8)
    model = build(size)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    t0, steps = time.monotonic(), 0
    budget = args.minutes * 60
    while time.monotonic() - t0 < budget:
        for batch in loader:
            frac = min((time.monotonic() - t0) / budget, 1.0)
            for g in opt.param_groups:
                g["lr"] = 1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * frac)))
            images = list(batch.images.expand(-1, 3, -1, -1))
            losses = model(images, targets(batch))
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if frac >= 1.0:
                break
    train_s = time.monotonic() - t0
    model.eval()
    test_recs = read_coco(bench / "test" / "annotations.json", SCHEMA)
    test = LandmarkDataset(test_recs, bench / "test", SCHEMA, input_size=size, train=False)
    preds: list[ImageRecord] = []
    t1 = time.monotonic()
    with torch.no_grad():
        for batch in DataLoader(test, batch_size=8, collate_fn=collate):
            outs = model(list(batch.images.expand(-1, 3, -1, -1)))
            for i, out in enumerate(outs):
                rec = test_recs[len(preds)]
                pts = torch.full((SCHEMA.num_points, 2), float("nan"), dtype=torch.float64)
                if len(out["keypoints"]):
                    kp = out["keypoints"][0, :, :2].double()
                    pts = transform_points(kp[None], torch.linalg.inv(batch.matrices[i]))[0]
                preds.append(ImageRecord(str(bench / "test" / rec.file_name), rec.width,
                                         rec.height, pts.numpy(),
                                         np.where(np.isfinite(pts.numpy()).all(-1), 2, 0)
                                         .astype(np.int8)))
    infer_s = (time.monotonic() - t1) / max(len(preds), 1)
    for r in test_recs:
        r.file_name = str(bench / "test" / r.file_name)
    metrics = evaluate(preds, test_recs, SCHEMA)
    out_dir = bench / "keypoint_rcnn"
    write_report(metrics, out_dir / "report", pred_records=preds, gt_records=test_recs,
                 schema=SCHEMA)
    summary = {k: v["ours_step2"] for k, v in metrics["comparison"].items()}
    summary.update({"train_minutes": train_s / 60, "steps": steps,
                    "inference_ms_per_image": infer_s * 1e3,
                    "level_detection_rate": metrics["step2"]["detection"]["level_detection_rate"]})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
