"""torchvision backbones as multi-scale feature extractors, and the FPN decoder.

Backbones start from random weights, or from a local state-dict file the user names
(``weights_path``); nothing is ever downloaded.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import BasicBlock

__all__ = ["BACKBONES", "Backbone", "FPNDecoder", "LiteResNet", "load_backbone_weights",
           "load_state_dict_file"]

#: Supported names -> nodes returning stride 4, 8, 16 and 32 features.
BACKBONES: dict[str, list[str]] = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
    "efficientnet_b0": ["features.2", "features.3", "features.5", "features.7"],
    "efficientnet_b2": ["features.2", "features.3", "features.5", "features.7"],
    "convnext_tiny": ["features.1", "features.3", "features.5", "features.7"],
    "mobilenet_v3_large": ["features.3", "features.6", "features.12", "features.16"],
    "resnet_lite": [],  # built here, see LiteResNet
}


def load_backbone_weights(model: nn.Module, path: str | PathLike[str]) -> None:
    """Load a classification state dict into ``model``; only classifier keys may be missing."""
    missing, _ = model.load_state_dict(load_state_dict_file(path), strict=False)
    body_missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
    if body_missing:
        raise ValueError(f"{path}: weights do not fit {type(model).__name__}; missing e.g. "
                         f"{body_missing[:3]}")


class LiteResNet(nn.Module):
    """A narrow, shallow ResNet (one torchvision ``BasicBlock`` per stage, 32-256 channels).

    About 10x cheaper than ResNet-18: meant for CPU training (the demo, tests, quick
    experiments), not for best accuracy.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        cin = widths[0]
        for w in widths:
            down = nn.Sequential(nn.Conv2d(cin, w, 1, stride=2, bias=False), nn.BatchNorm2d(w))
            stages.append(nn.Sequential(BasicBlock(cin, w, stride=2, downsample=down),
                                        BasicBlock(w, w)))
            cin = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        out: dict[str, Tensor] = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[str(i)] = x
        return out


def load_state_dict_file(path: str | PathLike[str]) -> dict[str, Tensor]:
    """Load a state dict saved with ``torch.save`` (weights only, no pickled code).

    Accepts a bare state dict or a Lightning/timm-style checkpoint with a ``state_dict`` or
    ``model`` entry.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or pickled-code file
        raise ValueError(f"{p}: cannot load weights ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a state dict, got {type(obj).__name__}")
    return obj


class Backbone(nn.Module):
    """Grayscale radiograph -> features at strides 4, 8, 16, 32.

    Parameters
    ----------
    name : str
        One of :data:`BACKBONES`.
    weights_path : path, optional
        Local state dict of the torchvision classification model (ImageNet weights saved by
        the user, or a self-supervised checkpoint). Keys of the classifier are ignored.

    Shapes
    ------
    ``forward(x)``: (B, 1 or 3, H, W) in [0, 1] -> list of 4 maps, ``out_channels[i]`` channels
    at stride ``4 * 2**i``.
    """

    def __init__(self, name: str = "resnet18", weights_path: str | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        model: nn.Module = (LiteResNet() if name == "resnet_lite"
                            else torchvision.models.get_model(name, weights=None))
        if weights_path is not None:
            load_backbone_weights(model, weights_path)
        nodes = BACKBONES[name]
        self.body: nn.Module = (model if not nodes else
                                create_feature_extractor(model, {n: str(i) for i, n in enumerate(nodes)}))
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)
        was_training = self.body.training
        self.body.eval()
        with torch.no_grad():
            feats = self.body(torch.zeros(1, 3, 64, 64))
        self.body.train(was_training)
        self.out_channels: list[int] = [int(f.shape[1]) for f in feats.values()]

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        return list(self.body(x).values())


class FPNDecoder(nn.Module):
    """Feature pyramid fused down to one high-resolution map.

    Parameters
    ----------
    in_channels : list of int
        Channels of the stride 4..32 features.
    channels : int
        Channels of the output map.
    stride : {4, 2}
        Output stride; 2 adds one learned x2 upsampling of the stride-4 map.
    """

    def __init__(self, in_channels: list[int], channels: int = 64, stride: int = 4) -> None:
        super().__init__()
        if stride not in (2, 4):
            raise ValueError(f"decoder stride must be 2 or 4, got {stride}")
        # Top-down pathway of an FPN (Lin et al. 2017) that keeps only the finest output:
        # torchvision's FeaturePyramidNetwork also convolves the three coarser outputs, which
        # would cost compute and leave parameters without gradient (an error under DDP).
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        if stride == 2:
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.refine = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = self.lateral[-1](feats[-1])
        for f, lateral in zip(feats[-2::-1], list(self.lateral)[-2::-1], strict=True):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.refine(x)
