"""DSNT landmark networks: the whole-image model (step 1) and the crop refiner (step 2).

Both are a torchvision backbone, an FPN decoder to a stride-4 (or 2) map and a
:class:`~spinelandmarks.dsnt.DSNTHead`; they differ in what they see (a letterboxed radiograph
vs. an oriented crop of one vertebra) and in which points they predict (the whole schema vs.
the points of one level).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from ..data.batch import LandmarkBatch
from ..defaults import CROP_SCALE, CROP_SIZE, INPUT_SIZE
from ..dsnt import DSNTHead, euclidean_loss, heatmap_spread, js_reg_loss, masked_mean
from ..geometry import normalized_to_pixel, pixel_to_normalized, transform_points
from ..metrics import EuclideanError, NormalizedLocalizationError, RadialError
from ..schema import CORNERS, LandmarkSchema, Level
from .backbones import Backbone, FPNDecoder
from .base import LandmarkTask

__all__ = ["CropRefiner", "LandmarkModel", "LandmarkNetwork", "height_pairs",
           "relative_height_error"]


def height_pairs(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """Index pairs (superior, inferior) of the body heights a point list allows: anterior,
    posterior and middle, for each ``<side>_superior`` / ``<side>_inferior`` both present."""
    pairs = []
    for side in ("anterior", "posterior", "middle"):
        sup, inf = f"{side}_superior", f"{side}_inferior"
        if sup in names and inf in names:
            pairs.append((names.index(sup), names.index(inf)))
    return pairs


def relative_height_error(pred: Tensor, target: Tensor, mask: Tensor,
                          pairs: list[tuple[int, int]]) -> Tensor:
    """Mean relative error of the body heights, ``|H_pred / H_ref - 1|``.

    Parameters
    ----------
    pred, target : Tensor
        (B, P, 2) points in pixels (target NaN where absent).
    mask : Tensor
        (B, P) bool, the target points present.
    pairs : list of (int, int)
        Point indices of each height (:func:`height_pairs`).

    Returns
    -------
    Tensor
        Scalar; heights with an absent end (or a degenerate reference) are left out, 0 if
        none remains.
    """
    index = torch.tensor(pairs, device=pred.device)  # (H, 2): superior, inferior
    sup, inf = index[:, 0], index[:, 1]
    h_pred = (pred[:, sup] - pred[:, inf]).norm(dim=-1)
    target = torch.nan_to_num(target)
    h_ref = (target[:, sup] - target[:, inf]).norm(dim=-1)
    keep = mask[:, sup] & mask[:, inf] & (h_ref > 1e-3)
    rel = (h_pred / h_ref.clamp_min(1e-3) - 1.0).abs()
    return masked_mean(rel, keep)


class LandmarkNetwork(nn.Module):
    """Backbone, decoder and DSNT head as one exportable module."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.decoder, self.head = backbone, decoder, head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.decoder(self.backbone(images)))


class LandmarkModel(LandmarkTask):
    """Step 1: every point of the schema on the whole, letterboxed radiograph.

    Parameters
    ----------
    schema : LandmarkSchema, dict, str or None
        Points to predict (default ``LUMBAR_SAGITTAL``).
    backbone : str
        A name of :data:`~spinelandmarks.models.backbones.BACKBONES`.
    weights_path : str, optional
        Local backbone weights (never downloaded).
    decoder_channels : int
        Channels of the FPN decoder.
    head_stride : {4, 2}
        Stride of the heatmaps relative to the input.
    sigma_px : float
        Standard deviation of the JS-regularization target, in heatmap pixels.
    js_weight : float
        Weight of the JS regularization against the Euclidean loss.
    input_size : (H, W)
        Model input size (documentation for the pipeline; the network is fully convolutional).
    lr, weight_decay, scheduler, warmup_epochs
        See :class:`~spinelandmarks.models.base.LandmarkTask`.

    Shapes
    ------
    ``forward(images)``: (B, 1, H, W) in [0, 1] -> coords (B, P, 2) normalized, heatmaps
    (B, P, H / stride, W / stride), both float32 (also under autocast).
    """

    def __init__(self, schema: LandmarkSchema | dict[str, Any] | str | None = None,
                 backbone: str = "resnet18", weights_path: str | None = None,
                 decoder_channels: int = 64, head_stride: int = 4, sigma_px: float = 1.0,
                 js_weight: float = 1.0, input_size: tuple[int, int] = INPUT_SIZE,
                 lr: float = 1e-3, weight_decay: float = 1e-4, scheduler: str = "cosine",
                 warmup_epochs: int = 0) -> None:
        input_size = (int(input_size[0]), int(input_size[1]))
        super().__init__(schema, lr, weight_decay, scheduler, warmup_epochs)
        self.save_hyperparameters()
        self.setup_task()

    @property
    def num_outputs(self) -> int:
        """Heatmaps the head predicts."""
        return self.schema.num_points

    def configure_models(self) -> None:
        hp = self.hparams
        self.backbone = Backbone(hp["backbone"], hp["weights_path"])
        self.decoder = FPNDecoder(self.backbone.out_channels, hp["decoder_channels"],
                                  hp["head_stride"])
        self.head = DSNTHead(hp["decoder_channels"], self.num_outputs)

    def configure_metrics(self) -> None:
        # Normalized error where the schema has bodies to normalize by; else the radial
        # error and success detection rates of point-landmark tasks.
        def make(prefix: str) -> MetricCollection:
            first: Metric = (NormalizedLocalizationError(self.schema) if self.schema.body_levels
                             else RadialError(self.schema))
            return MetricCollection({"nle" if self.schema.body_levels else "radial": first,
                                     "error": EuclideanError()}, prefix=prefix)
        self.val_metrics = make("val/")
        self.test_metrics = make("test/")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.decoder(self.backbone(images)))

    def compute_loss(self, batch: LandmarkBatch) -> tuple[Tensor, dict[str, Tensor], Any]:
        coords, heatmaps = self(batch.images)
        loss, parts = self._landmark_loss(coords, heatmaps, batch)
        return loss, parts, coords

    def _landmark_loss(self, coords: Tensor, heatmaps: Tensor, batch: LandmarkBatch
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Euclidean loss of the DSNT coordinates plus the JS heatmap regularization."""
        size = batch.images.shape[-2:]
        mask = batch.mask
        # Absent targets are NaN: replace them before the loss so no NaN reaches a gradient.
        target = torch.where(mask.unsqueeze(-1), pixel_to_normalized(batch.points, size),
                             torch.zeros_like(coords))
        euc = masked_mean(euclidean_loss(coords, target), mask)
        js = masked_mean(js_reg_loss(heatmaps, target, self.hparams["sigma_px"]), mask)
        loss = euc + self.hparams["js_weight"] * js
        return loss, {"euclidean": euc, "js": js}

    def to_original(self, coords: Tensor, batch: LandmarkBatch) -> tuple[Tensor, Tensor]:
        """Predicted and target points of a batch in original-image pixels."""
        inv = torch.linalg.inv(batch.matrices)
        pred = transform_points(normalized_to_pixel(coords, batch.images.shape[-2:]), inv)
        gt = transform_points(batch.points, inv)
        return pred, gt

    def update_metrics(self, metrics: MetricCollection, batch: LandmarkBatch, preds: Any) -> None:
        pred, gt = self.to_original(preds.detach(), batch)
        if "nle" in metrics.keys(keep_base=True):
            metrics["nle"].update(pred, gt, batch.visibility)
        if "radial" in metrics.keys(keep_base=True):
            metrics["radial"].update(pred, gt, batch.pixel_spacing, batch.visibility)
        metrics["error"].update(pred, gt, batch.pixel_spacing, batch.visibility)

    def network(self) -> nn.Module:
        """The plain ``nn.Module`` (backbone, decoder, DSNT head) without Lightning state.

        This is what gets exported: its forward maps (B, 1, H, W) images to normalized
        coordinates (B, P, 2) and heatmaps, with the DSNT decoding inside.
        """
        return LandmarkNetwork(self.backbone, self.decoder, self.head).eval()

    def export(self, path: str | os.PathLike[str], fmt: str = "torchscript",
               example_size: tuple[int, int] | None = None) -> Path:
        """Export :meth:`network` to TorchScript (traced) or ONNX.

        Parameters
        ----------
        path : path
            Output file (``.pt`` for TorchScript, ``.onnx`` for ONNX).
        fmt : {"torchscript", "onnx"}
            ONNX (opset 18, dynamic batch) needs ``pip install spinelandmarks[onnx]``.
        example_size : (H, W), optional
            Example input size; default the model's ``input_size``.

        Raises
        ------
        ImportError
            ``fmt="onnx"`` without the ``onnx`` and ``onnxscript`` packages.
        """
        size = example_size or tuple(self.hparams["input_size"])
        example = torch.rand(1, 1, int(size[0]), int(size[1]), device=self.device)
        net = self.network()
        out = Path(path)
        with torch.no_grad():
            if fmt == "torchscript":
                torch.jit.save(torch.jit.trace(net, example), str(out))
            elif fmt == "onnx":
                try:
                    import onnx  # noqa: F401
                    import onnxscript  # noqa: F401
                except ImportError as exc:
                    raise ImportError(f"ONNX export needs the onnx and onnxscript packages "
                                      f"(pip install 'spinelandmarks[onnx]'): {exc}") from exc
                torch.onnx.export(net, (example,), str(out), input_names=["images"],
                                  output_names=["coords", "heatmaps"],
                                  dynamic_axes={"images": {0: "batch"}}, verbose=False)
            else:
                raise ValueError(f"unknown export format {fmt!r}; use 'torchscript' or 'onnx'")
        return out

    def compile_network(self, **kwargs: Any) -> None:
        """Use ``torch.compile`` on :meth:`network` for :meth:`predict_points` (inference)."""
        # Kept out of the module tree (plain attribute): the compiled wrapper shares the
        # parameters, which must not appear twice in state_dict().
        self.__dict__["_compiled"] = torch.compile(self.network(), **kwargs)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the network's input, pixels."""
        h, w = self.hparams["input_size"]
        return int(h), int(w)

    @torch.no_grad()
    def predict_points(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Points in input pixels and their heatmap spread.

        Parameters
        ----------
        images : Tensor
            (B, C, H, W) network inputs.

        Returns
        -------
        points : Tensor
            (B, P, 2) float32 pixels of the input images.
        spread : Tensor
            (B, P) float32 radial heatmap standard deviation in input pixels.
        """
        net = self.__dict__.get("_compiled") or self
        coords, heatmaps = net(images)
        return self._decode(images, coords, heatmaps)

    @torch.no_grad()
    def pooled_features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C') float32: the backbone's last (stride-32) feature map
        averaged over its positions (the shift model's image descriptor)."""
        return self.backbone(images)[-1].float().mean(dim=(-2, -1))

    @staticmethod
    def _decode(images: Tensor, coords: Tensor, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized coordinates -> input pixels, and the maps' spread in input pixels."""
        stride = images.shape[-1] / heatmaps.shape[-1]
        return normalized_to_pixel(coords, images.shape[-2:]), heatmap_spread(heatmaps) * stride


class CropRefiner(LandmarkModel):
    """Step 2: the points of one vertebra in an oriented crop around it.

    The head predicts ``schema.max_points_per_level`` points; a level with fewer points (S1's
    two superior corners) uses the first outputs and masks the rest. Trained on crops from
    jittered ground-truth corners (``SpineDataModule(task="crops")``), so it corrects step-1
    errors of realistic size.

    With ``masks=True`` a small head on the same decoder features also segments the crop's
    vertebral body (:meth:`forward_masks`); it is trained with binary cross-entropy plus soft
    Dice on the crops whose level has a reference mask, and mapped back to the image by the
    pipeline with the crop's matrix, like the corners.

    Parameters
    ----------
    As :class:`LandmarkModel`, with defaults for 128 x 128 crops and stride-2 heatmaps, and
    masks : bool
        Add the body-mask head.
    mask_weight : float
        Weight of the mask loss against the landmark loss.
    height_weight : float
        Weight of the body-height term: the mean relative error of the anterior, posterior
        and (with endplate mid-points) middle heights, ``|H_pred / H_ref - 1|``. The point
        loss alone lets the refiner shrink a deformed body's heights towards the common
        shapes' (``docs/training.md``, "Height term"); 0 disables it.
    crop_scale : float
        Crop side as a multiple of the body extent that the refiner is trained on (the data
        module's ``crop_scale``); the pipeline cuts its crops at this scale unless its options
        say otherwise.
    """

    def __init__(self, schema: LandmarkSchema | dict[str, Any] | str | None = None,
                 backbone: str = "resnet18", weights_path: str | None = None,
                 decoder_channels: int = 64, head_stride: int = 2, sigma_px: float = 1.0,
                 js_weight: float = 1.0, input_size: tuple[int, int] = CROP_SIZE,
                 lr: float = 1e-3, weight_decay: float = 1e-4, scheduler: str = "cosine",
                 warmup_epochs: int = 0, masks: bool = False, mask_weight: float = 1.0,
                 height_weight: float = 0.0, crop_scale: float = CROP_SCALE) -> None:
        if not crop_scale > 0:
            raise ValueError(f"crop_scale must be > 0, got {crop_scale}")
        self._masks = bool(masks)  # read by configure_models, which the base __init__ calls
        super().__init__(schema, backbone, weights_path, decoder_channels, head_stride, sigma_px,
                         js_weight, input_size, lr, weight_decay, scheduler, warmup_epochs)
        self.hparams["masks"], self.hparams["mask_weight"] = bool(masks), float(mask_weight)
        self.hparams["height_weight"] = float(height_weight)
        self.hparams["crop_scale"] = float(crop_scale)
        self._height_pairs = height_pairs(self.crop_point_names)

    @property
    def crop_scale(self) -> float:
        """Crop side as a multiple of the body extent, as trained."""
        return float(self.hparams.get("crop_scale", CROP_SCALE))

    @property
    def has_masks(self) -> bool:
        """Whether the model segments the body."""
        return self.mask_head is not None

    def configure_models(self) -> None:
        super().configure_models()
        ch = self.hparams["decoder_channels"]
        self.mask_head = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, 1, 1),
        ) if self._masks else None

    def forward_masks(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Coordinates, heatmaps (as :meth:`forward`) and body-mask logits (B, 1, H, W) at the
        input size (the stride-``head_stride`` logits upsampled bilinearly)."""
        if self.mask_head is None:
            raise ValueError("this refiner has no mask head (it was built with masks=False); "
                             "train one with masks=True (train --masks) to predict body masks")
        feats = self.decoder(self.backbone(images))
        coords, heatmaps = self.head(feats)
        logits = nn.functional.interpolate(self.mask_head(feats).float(),
                                           size=images.shape[-2:], mode="bilinear",
                                           align_corners=False)
        return coords, heatmaps, logits

    def compute_loss(self, batch: LandmarkBatch) -> tuple[Tensor, dict[str, Tensor], Any]:
        if self.mask_head is None or batch.body_masks is None or batch.has_masks is None:
            return super().compute_loss(batch)
        coords, heatmaps, logits = self.forward_masks(batch.images)
        loss, parts = self._landmark_loss(coords, heatmaps, batch)
        keep = batch.has_masks
        if bool(keep.any()):
            target = batch.body_masks[keep]
            x = logits[keep]
            bce = nn.functional.binary_cross_entropy_with_logits(x, target)
            prob = torch.sigmoid(x)
            inter = (prob * target).sum((1, 2, 3))
            dice = 1.0 - ((2 * inter + 1.0) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1.0))
            mask_loss = bce + dice.mean()
        else:
            mask_loss = logits.sum() * 0.0  # keep the head in the graph (DDP)
        parts["mask"] = mask_loss
        return loss + self.hparams["mask_weight"] * mask_loss, parts, coords

    def _landmark_loss(self, coords: Tensor, heatmaps: Tensor, batch: LandmarkBatch
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """The point loss of :class:`LandmarkModel` plus ``height_weight`` times the
        relative body-height error (:func:`relative_height_error`)."""
        loss, parts = super()._landmark_loss(coords, heatmaps, batch)
        weight = self.hparams["height_weight"]
        if weight > 0 and self._height_pairs:
            pred = normalized_to_pixel(coords, batch.images.shape[-2:])
            parts["height"] = relative_height_error(pred, batch.points, batch.mask,
                                                    self._height_pairs)
            loss = loss + weight * parts["height"]
        return loss, parts

    @torch.no_grad()
    def predict_points_and_masks(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`predict_points` and the body-mask probability (B, 1, H, W) in [0, 1]."""
        coords, heatmaps, logits = self.forward_masks(images)
        points, spread = self._decode(images, coords, heatmaps)
        return points, spread, torch.sigmoid(logits)

    @property
    def num_outputs(self) -> int:
        return self.schema.max_points_per_level

    @property
    def crop_point_names(self) -> tuple[str, ...]:
        """Names of the head's outputs, in order (the first level's points; a level with
        fewer points fills the first outputs)."""
        if self.schema.max_points_per_level == 4:
            return CORNERS
        return tuple(self.schema.levels[0].points)

    def configure_metrics(self) -> None:
        # Errors are normalized by the crop's own vertebra: a one-level schema of its points.
        crop_schema = LandmarkSchema("crop", (Level("V", self.crop_point_names),))

        def make(prefix: str) -> MetricCollection:
            return MetricCollection({"nle": NormalizedLocalizationError(crop_schema),
                                     "error": EuclideanError()}, prefix=prefix)
        self.val_metrics = make("val/")
        self.test_metrics = make("test/")

