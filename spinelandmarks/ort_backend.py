"""ONNX Runtime inference for the pipeline's landmark model and refiner (CPU).

:func:`use_onnxruntime` exports each network (:meth:`~spinelandmarks.models.LandmarkModel.export`,
ONNX with a dynamic batch) once per weights, input size and torch version into a cache folder,
opens it in an ``onnxruntime.InferenceSession`` and routes the network's
:meth:`~spinelandmarks.models.LandmarkModel.predict_points` through it; everything around the
networks (letterbox, crops, the test-time views, DSNT decoding, levels, QC) stays as it is, so
the coordinates equal the eager backend's up to float rounding. The refiner receives all the
crops of a batch, every test-time view included, in one call. The detector and a refiner with
a mask head stay eager.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._atomic import atomic_write
from .models.landmark import LandmarkModel

if TYPE_CHECKING:
    from .inference import SpineLandmarkPipeline

__all__ = ["BACKENDS", "OrtNetwork", "onnx_cache_dir", "use_onnxruntime"]

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
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, H, W) images -> normalized coordinates (B, P, 2) and heatmaps (B, P, h, w),
        float32 on the images' device."""
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        coords, heatmaps = self.session.run(["coords", "heatmaps"], {"images": x})
        return (torch.from_numpy(coords).to(images.device),
                torch.from_numpy(heatmaps).to(images.device))


def _exported(model: LandmarkModel, cache_dir: Path) -> Path:
    """The ONNX file of ``model``'s network, exported on the first use of these weights."""
    buf = io.BytesIO()
    torch.save(model.network().state_dict(), buf)
    key = hashlib.sha256(buf.getvalue() + repr((type(model).__name__, dict(model.hparams),
                                                torch.__version__)).encode()).hexdigest()
    path = cache_dir / f"{key[:32]}.onnx"
    if not path.is_file():
        atomic_write(path, lambda tmp: model.export(tmp, "onnx"))
    return path


def use_onnxruntime(pipeline: SpineLandmarkPipeline, cache_dir: str | os.PathLike[str] | None
                    = None, threads: int | None = None) -> SpineLandmarkPipeline:
    """Run ``pipeline``'s landmark model and refiner with ONNX Runtime from now on (in place).

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
    return pipeline
