"""Step 1 of the two-step method: find each vertebra and name its level.

:class:`VertebraDetector` is a torchvision Faster R-CNN on a ResNet-FPN backbone with one class
per level of the schema (class 0 is background). Its raw detections can hold several boxes per
level and boxes in an impossible order (L3 above L2);
:func:`~spinelandmarks.models.level_assignment.assign_levels` turns them into an anatomically
consistent result, at most one box per level with the levels in cranio-caudal order. Its
validation metrics are in :mod:`~spinelandmarks.models.detector_metrics`.

Boxes are ``(x1, y1, x2, y2)`` in model-input pixels (conventions section 1); labels are 1-based
level indices (``1`` is the first level of the schema, ``L1`` for ``LUMBAR_SAGITTAL``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from .._deprecation import moved_names
from ..data.batch import LandmarkBatch
from ..defaults import INPUT_SIZE
from ..schema import LandmarkSchema
from .backbones import BACKBONES, Backbone, load_backbone_weights
from .base import LandmarkTask
from .detector_metrics import LevelAccuracy, MeanAveragePrecision50
from .level_assignment import LevelDetections, assign_levels

__all__ = ["DETECTOR_BACKBONES", "LevelAccuracy", "LevelDetections", "MeanAveragePrecision50",
           "VertebraDetector", "assign_levels"]

#: ResNet names accepted as detector backbones (torchvision ``resnet_fpn_backbone``).
DETECTOR_BACKBONES: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2",
)

#: ImageNet statistics: the grayscale input is repeated to three channels and normalized with
#: them, so a local ImageNet checkpoint sees the input it was trained on.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------
# The LightningModule
# ------------------------------------------------------------------------------------------------
class _BackboneFPN(nn.Module):
    """A :class:`~spinelandmarks.models.backbones.Backbone` with an FPN, as torchvision's
    detection models expect (``out_channels`` and an ordered dict of maps)."""

    def __init__(self, body: Backbone, channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


class VertebraDetector(LandmarkTask):
    """Step 1: Faster R-CNN finding every vertebra and its level.

    Parameters
    ----------
    schema : LandmarkSchema, dict, str or None
        Levels to detect (one class each, default ``LUMBAR_SAGITTAL``).
    backbone : str
        One of :data:`DETECTOR_BACKBONES` (ResNet-FPN, all layers trainable).
    weights_path : str, optional
        Local state dict of the torchvision classification ResNet (e.g. ImageNet weights saved
        by the user), loaded into the backbone body before it is wrapped in the FPN; the
        classifier keys are ignored. Nothing is downloaded; default random initialization.
    norm : {"batch", "frozen"}
        Normalization of the backbone: trainable ``BatchNorm2d`` (right for random init and
        for fine-tuning with batches of several images) or ``FrozenBatchNorm2d`` (torchvision's
        choice for fine-tuning pretrained weights with tiny batches; an identity with random
        weights, so only sensible with ``weights_path``).
    fpn_channels : int
        Channels of the feature pyramid (torchvision uses 256; the RPN and box heads scale
        with it).
    input_size : (H, W)
        Size of the letterboxed model input in pixels. torchvision's transform is set to
        ``min_size = min(H, W)``, ``max_size = max(H, W)``: an input of this size is not
        rescaled, so boxes stay in input pixels (other sizes are rescaled to fit, and the
        detections are mapped back to the size given).
    min_score : float
        Detections scoring below are dropped (torchvision ``box_score_thresh``) and ignored by
        :func:`assign_levels`.
    anchor_sizes : sequence of int
        One anchor size in pixels per FPN level (P2..P6). Lumbar bodies are about 1/8 - 1/5 of
        a 512 px image height (64-100 px), so the default spans 16-256 px.
    aspect_ratios : sequence of float
        Anchor height / width ratios, shared by all levels.
    detections_per_image : int
        Maximum raw detections per image (torchvision ``box_detections_per_img``).
    proposals_train, proposals_test : int
        RPN proposals per image in training / inference, kept per FPN level before NMS and in
        total after it (torchvision's 2000 / 1000 are sized for COCO's crowded scenes; a
        radiograph has about six vertebrae).
    box_batch_size_per_image : int
        Proposals sampled per image for the box-head loss (25 % positives).
    representation_size : int
        Width of the two-layer MLP box head (torchvision ``TwoMLPHead``).
    lr, weight_decay, scheduler, warmup_epochs
        See :class:`~spinelandmarks.models.base.LandmarkTask`. AdamW at 3e-4 trains Faster
        R-CNN from scratch; consider ``gradient_clip_val`` in the trainer for the first epochs.

    Shapes
    ------
    ``forward(images, targets=None)``: images (B, 1 or 3, H, W) in [0, 1]; in train mode with
    targets (list of dicts with ``boxes`` (n, 4) float32, ``labels`` (n,) int64) returns
    torchvision's loss dict, otherwise a list of per-image dicts ``boxes`` (m, 4),
    ``scores`` (m,), ``labels`` (m,) (raw per-class detections, input pixels).
    :meth:`detect` returns one :class:`LevelDetections` per image.

    Notes
    -----
    Validation logs ``val/loss`` (and its four terms), computed with the RPN and box heads in
    loss mode over the same backbone features (the backbone stays in eval mode, so BatchNorm
    statistics are not touched; the proposal sampling of the loss is random), ``val/map_50``
    (COCO AP at IoU 0.5 of the raw detections, averaged over levels) and
    ``val/level_accuracy`` (:class:`LevelAccuracy` of the :func:`assign_levels` output).
    """

    def __init__(self, schema: LandmarkSchema | dict[str, Any] | str | None = None,
                 backbone: str = "resnet18", weights_path: str | None = None,
                 norm: str = "batch", fpn_channels: int = 256,
                 input_size: tuple[int, int] = INPUT_SIZE, min_score: float = 0.05,
                 anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256),
                 aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                 detections_per_image: int = 100, proposals_train: int = 1000,
                 proposals_test: int = 300, box_batch_size_per_image: int = 128,
                 representation_size: int = 1024,
                 lr: float = 3e-4, weight_decay: float = 1e-4, scheduler: str = "cosine",
                 warmup_epochs: int = 0) -> None:
        input_size = (int(input_size[0]), int(input_size[1]))
        anchor_sizes = tuple(int(a) for a in anchor_sizes)
        aspect_ratios = tuple(float(a) for a in aspect_ratios)
        super().__init__(schema, lr, weight_decay, scheduler, warmup_epochs)
        self.save_hyperparameters()
        self.setup_task()

    # -- hooks ---------------------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        name = hp["backbone"]
        if name not in DETECTOR_BACKBONES and name not in BACKBONES:
            raise ValueError(f"unknown detector backbone {name!r}; choose one of "
                             f"{sorted(set(DETECTOR_BACKBONES) | set(BACKBONES))}")
        if hp["norm"] not in ("batch", "frozen"):
            raise ValueError(f"norm must be 'batch' or 'frozen', got {hp['norm']!r}")
        mean, std = list(_IMAGENET_MEAN), list(_IMAGENET_STD)
        fpn: nn.Module
        if name in DETECTOR_BACKBONES:
            norm_layer = (nn.BatchNorm2d if hp["norm"] == "batch"
                          else misc_nn_ops.FrozenBatchNorm2d)
            resnet = torchvision.models.get_model(name, weights=None, norm_layer=norm_layer)
            if hp["weights_path"] is not None:
                load_backbone_weights(resnet, str(hp["weights_path"]))
            # As torchvision's resnet_fpn_backbone (all layers trainable), chosen FPN width.
            c5 = int(resnet.inplanes)
            fpn = BackboneWithFPN(resnet, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                                  [c5 // 8, c5 // 4, c5 // 2, c5], int(hp["fpn_channels"]),
                                  extra_blocks=LastLevelMaxPool())
        else:
            # Any landmark backbone (e.g. the CPU-friendly resnet_lite); it normalizes its
            # input itself, so torchvision's transform must leave the [0, 1] pixels alone.
            fpn = _BackboneFPN(Backbone(name, hp["weights_path"]), int(hp["fpn_channels"]))
            mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        sizes = tuple(hp["anchor_sizes"])
        if len(sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {sizes}")
        ratios = tuple(hp["aspect_ratios"])
        anchors = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(sizes))
        h, w = hp["input_size"]
        box_head = TwoMLPHead(int(hp["fpn_channels"]) * 7 * 7, int(hp["representation_size"]))
        self.model = FasterRCNN(
            fpn, num_classes=None,
            min_size=min(h, w), max_size=max(h, w),
            image_mean=mean, image_std=std,
            rpn_anchor_generator=anchors,
            box_score_thresh=float(hp["min_score"]),
            box_detections_per_img=int(hp["detections_per_image"]),
            rpn_pre_nms_top_n_train=int(hp["proposals_train"]),
            rpn_post_nms_top_n_train=int(hp["proposals_train"]),
            rpn_pre_nms_top_n_test=int(hp["proposals_test"]),
            rpn_post_nms_top_n_test=int(hp["proposals_test"]),
            box_batch_size_per_image=int(hp["box_batch_size_per_image"]),
            box_head=box_head,
            box_predictor=FastRCNNPredictor(int(hp["representation_size"]),
                                            self.schema.num_levels + 1),
        )

    def configure_metrics(self) -> None:
        def make(prefix: str) -> MetricCollection:
            return MetricCollection({"map_50": MeanAveragePrecision50(),
                                     "level_accuracy": LevelAccuracy()}, prefix=prefix)
        self.val_metrics = make("val/")
        self.test_metrics = make("test/")

    # -- forward -------------------------------------------------------------------------------
    @staticmethod
    def _to_list(images: Tensor) -> list[Tensor]:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
        return [img.expand(3, -1, -1) for img in images]

    @staticmethod
    def targets(batch: LandmarkBatch) -> list[dict[str, Tensor]]:
        """torchvision targets of a batch, without degenerate or non-finite boxes.

        Returns
        -------
        list of dict
            Per image ``boxes`` (n, 4) float32 xyxy pixels and ``labels`` (n,) int64, 1-based.
        """
        if len(batch.boxes) != len(batch) or len(batch.labels) != len(batch):
            raise ValueError("a detector batch needs boxes and labels for every image")
        out: list[dict[str, Tensor]] = []
        for boxes, labels in zip(batch.boxes, batch.labels, strict=True):
            boxes = boxes.float().reshape(-1, 4)
            labels = labels.long().reshape(-1)
            ok = torch.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0] + 1e-3) \
                & (boxes[:, 3] > boxes[:, 1] + 1e-3)
            out.append({"boxes": boxes[ok], "labels": labels[ok]})
        return out

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        return self.model(self._to_list(images), targets)

    def _losses_and_detections(self, images: Tensor, targets: list[dict[str, Tensor]]
                               ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """Losses and detections of an eval-mode model over one backbone pass."""
        m = self.model
        image_list = self._to_list(images)
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in image_list]
        batched, targets_t = m.transform(image_list, targets)
        features = m.backbone(batched.tensors)
        heads = (m.rpn, m.roi_heads)  # no BatchNorm or dropout inside: mode only picks the branch
        for head in heads:
            head.train(True)
        try:
            proposals, rpn_losses = m.rpn(batched, features, targets_t)
            _, det_losses = m.roi_heads(features, proposals, batched.image_sizes, targets_t)
        finally:
            for head in heads:
                head.train(False)
        proposals, _ = m.rpn(batched, features)
        detections, _ = m.roi_heads(features, proposals, batched.image_sizes)
        detections = m.transform.postprocess(detections, batched.image_sizes, original_sizes)
        return {**rpn_losses, **det_losses}, detections

    def compute_loss(self, batch: LandmarkBatch) -> tuple[Tensor, dict[str, Tensor], Any]:
        targets = self.targets(batch)
        if self.training:
            losses: dict[str, Tensor] = self(batch.images, targets)
            detections: list[dict[str, Tensor]] | None = None
        else:
            losses, detections = self._losses_and_detections(batch.images, targets)
        total = torch.stack([v.float() for v in losses.values()]).sum()
        return total, {k: v.detach().float() for k, v in losses.items()}, detections

    # -- predictions ---------------------------------------------------------------------------
    def postprocess(self, detections: list[dict[str, Tensor]]) -> list[LevelDetections]:
        """:func:`assign_levels` of raw per-image detections."""
        return [assign_levels(d["boxes"], d["scores"], d["labels"], self.schema.num_levels,
                              float(self.hparams["min_score"]),
                              level_names=self.schema.level_names) for d in detections]

    def update_metrics(self, metrics: MetricCollection, batch: LandmarkBatch, preds: Any) -> None:
        raw = [{"boxes": d["boxes"].detach().float(), "scores": d["scores"].detach().float(),
                "labels": d["labels"].detach().long()} for d in preds]
        targets = self.targets(batch)
        metrics["map_50"].update(raw, targets)
        metrics["level_accuracy"].update(self.postprocess(raw), [t["boxes"] for t in targets],
                                         [t["labels"] for t in targets])

    def export(self, path: str | os.PathLike[str], fmt: str = "torchscript") -> Path:
        """Export the Faster R-CNN to TorchScript (``torch.jit.script``).

        The scripted model takes a list of (3, H, W) images in [0, 1] and returns torchvision's
        ``(losses, detections)`` tuple; :func:`assign_levels` turns the detections into levels.
        Only the torchvision ResNet backbones script (not ``resnet_lite``).
        """
        if fmt != "torchscript":
            raise ValueError(f"the detector exports to 'torchscript' only, got {fmt!r}")
        out = Path(path)
        was_training = self.model.training
        self.model.eval()
        try:
            torch.jit.save(torch.jit.script(self.model), str(out))
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[LevelDetections]:
        """Anatomically consistent vertebra boxes, one per level, for a batch of images.

        Parameters
        ----------
        images : Tensor
            (B, 1 or 3, H, W) float in [0, 1], letterboxed to ``input_size``.

        Returns
        -------
        list of LevelDetections
            One per image, boxes in input pixels.
        """
        was_training = self.training
        self.eval()
        try:
            raw = self(images.float())
        finally:
            self.train(was_training)
        return self.postprocess([{k: v.float() if v.is_floating_point() else v
                                  for k, v in d.items()} for d in raw])


#: ``confirm_levels`` moved to the level rules in 0.2 (served here until 0.3).
__getattr__ = moved_names(__name__, {"confirm_levels": "spinelandmarks.levels"})
