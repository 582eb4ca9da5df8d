"""ONNX Runtime inference for the pipeline's networks (CPU).

:func:`use_onnxruntime` exports each network (:meth:`~spinelandmarks.models.LandmarkModel.export`,
ONNX with a dynamic batch) once per weights, input size and torch version into a cache folder,
opens it in an ``onnxruntime.InferenceSession`` and routes the network's
:meth:`~spinelandmarks.models.LandmarkModel.predict_points` through it; everything around the
networks (letterbox, crops, the test-time views, DSNT decoding, levels, QC) stays as it is, so
the coordinates equal the eager backend's up to float rounding. The refiner receives all the
crops of a batch, every test-time view included, in one call. Of the detector, the backbone
and its feature pyramid (nearly all of its arithmetic) run in ONNX Runtime; the region
proposals, box head and level assignment stay eager, as does a refiner with a mask head.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._atomic import atomic_write
from .models.detector import VertebraDetector
from .models.landmark import LandmarkModel

if TYPE_CHECKING:
    from .inference import SpineLandmarkPipeline

__all__ = ["BACKENDS", "OrtFeatures", "OrtNetwork", "onnx_cache_dir", "use_onnxruntime"]

#: Inference backends of :meth:`SpineLandmarkPipeline.load` and ``predict --backend``.
BACKENDS = ("torch", "onnxruntime")


def onnx_cache_dir() -> Path:
    """Folder of the exported networks: ``$SPINELANDMARKS_CACHE/onnx`` or
    ``~/.cache/spinelandmarks/onnx``."""
    root = os.environ.get("SPINELANDMARKS_CACHE", str(Path.home() / ".cache" / "spinelandmarks"))
    return Path(root) / "onnx"


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("the onnxruntime backend needs the onnxruntime, onnx and onnxscript "
                          f"packages (pip install 'spinelandmarks[onnxruntime]'): {exc}") from exc
    return onnxruntime


class OrtNetwork:
    """A network's ``images -> (coords, heatmaps)`` forward run by ONNX Runtime on the CPU.

    Parameters
    ----------
    path : Path
        ONNX file from :meth:`LandmarkModel.export` (input ``images``, outputs ``coords``
        and ``heatmaps``).
    threads : int, optional
        Intra-op threads; default ``torch.get_num_threads()`` (the same budget as the eager
        backend). Inter-op parallelism is off: the graph is a chain.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = _import_ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle workers sleep instead of spinning: the eager steps between two sessions' runs
        # (crops, proposals, level rules) use the same cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @property
    def output_names(self) -> list[str]:
        """Names of the graph's outputs, in order."""
        return [o.name for o in self.session.get_outputs()]

    def run(self, images: Tensor, names: list[str]) -> list[Tensor]:
        """The outputs ``names`` for ``images`` (the graph's input), float32 on their device."""
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(y).to(images.device)
                for y in self.session.run(names, {"images": x})]

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, H, W) images -> normalized coordinates (B, P, 2) and heatmaps (B, P, h, w),
        float32 on the images' device."""
        coords, heatmaps = self.run(images, ["coords", "heatmaps"])
        return coords, heatmaps


class OrtFeatures:
    """The detector's backbone and feature pyramid run by ONNX Runtime on the CPU: the
    ``forward`` of torchvision's ``FasterRCNN.backbone``.

    Parameters
    ----------
    path : Path
        ONNX file of :func:`_export_features` (input ``images``, one output per map, named
        as the map: ``"0"`` ... ``"pool"``).
    threads : int, optional
        As for :class:`OrtNetwork`.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.network = OrtNetwork(path, threads)
        self.names = self.network.output_names

    def __call__(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """(B, 3, H, W) normalized, padded images -> the feature maps by name, float32."""
        return OrderedDict(zip(self.names, self.network.run(images, self.names), strict=True))


class _FeatureTuple(nn.Module):
    """A feature extractor's ordered dict of maps as a tuple (what ONNX export takes)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.features(x).values())


def _export_features(detector: VertebraDetector, path: str | os.PathLike[str]) -> None:
    """Export the detector's backbone and FPN in eval mode (dynamic batch) to ``path``, each
    output named as its map; the backbone's mode is restored."""
    h, w = (int(v) for v in detector.hparams["input_size"])
    example = torch.rand(1, 3, h, w)
    features = detector.model.backbone
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            names = list(features(example).keys())
            torch.onnx.export(_FeatureTuple(features), (example,), str(path),
                              input_names=["images"], output_names=names,
                              dynamic_axes={"images": {0: "batch"}}, verbose=False)
    finally:
        features.train(was_training)


def _key(net: nn.Module, hparams: Any) -> str:
    """Cache key of a network: its weights, class, settings and the torch version."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return hashlib.sha256(buf.getvalue() + repr((type(net).__name__, dict(hparams),
                                                 torch.__version__)).encode()).hexdigest()[:32]


def _exported(model: LandmarkModel, cache_dir: Path) -> Path:
    """The ONNX file of ``model``'s network, exported on the first use of these weights."""
    path = cache_dir / f"{_key(model.network(), model.hparams)}.onnx"
    if not path.is_file():
        atomic_write(path, lambda tmp: model.export(tmp, "onnx"))
    return path


def _detector_features(detector: VertebraDetector, cache_dir: Path,
                       threads: int | None) -> OrtFeatures:
    """The detector's features in ONNX Runtime, exported on the first use of these weights."""
    path = cache_dir / f"{_key(detector.model.backbone, detector.hparams)}.onnx"
    if not path.is_file():
        atomic_write(path, lambda tmp: _export_features(detector, tmp))
    return OrtFeatures(path, threads)


def use_onnxruntime(pipeline: SpineLandmarkPipeline, cache_dir: str | os.PathLike[str] | None
                    = None, threads: int | None = None) -> SpineLandmarkPipeline:
    """Run ``pipeline``'s networks with ONNX Runtime from now on (in place): the landmark
    model, the refiner (not one with a mask head) and the detector's backbone and FPN.

    Parameters
    ----------
    pipeline : SpineLandmarkPipeline
        On the CPU.
    cache_dir : path, optional
        Where the exported networks are kept (default :func:`onnx_cache_dir`).
    threads : int, optional
        Intra-op threads of each session (default ``torch.get_num_threads()``).

    Returns
    -------
    SpineLandmarkPipeline
        ``pipeline``.

    Raises
    ------
    ImportError
        onnxruntime, onnx or onnxscript is not installed.
    """
    _import_ort()
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    nets = [pipeline.landmark_model]
    if pipeline.refiner is not None and not pipeline.options.masks:  # the mask head stays eager
        nets.append(pipeline.refiner)
    for net in nets:
        if not isinstance(net, LandmarkModel):
            raise TypeError(f"the onnxruntime backend runs LandmarkModel networks (and their "
                            f"subclasses), not {type(net).__name__}; use backend='torch'")
        # the hook of LandmarkModel.predict_points (a plain attribute, not a submodule)
        net.__dict__["_compiled"] = OrtNetwork(_exported(net, folder), threads)
    if isinstance(pipeline.detector, VertebraDetector):
        # an instance attribute ahead of the class's forward: the weights stay in the
        # module tree, so the pipeline saves as before
        backbone = pipeline.detector.model.backbone
        backbone.__dict__["forward"] = _detector_features(pipeline.detector, folder, threads)
    return pipeline
