"""ONNX Runtime backend: the same coordinates as the eager networks (within 0.05 px), the
test-time views of all crops in one refiner call, exports cached by weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.inference import TTA_VIEWS, SpineLandmarkPipeline
from spinelandmarks.models import CropRefiner, LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_phantom

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)),
                                 CropRefiner(backbone="resnet_lite", input_size=(48, 48)),
                                 tta=True).save(tmp_path_factory.mktemp("ort") / "pipeline")


def test_onnxruntime_backend_equals_eager(saved: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from spinelandmarks.ort_backend import OrtNetwork

    monkeypatch.setenv("SPINELANDMARKS_CACHE", str(tmp_path))
    images = [generate_phantom(i, PhantomConfig(long_side=256))[0] for i in range(2)]
    eager = SpineLandmarkPipeline.load(saved)
    fast = SpineLandmarkPipeline.load(saved, backend="onnxruntime")
    assert isinstance(fast.refiner.__dict__["_compiled"], OrtNetwork)  # type: ignore[union-attr]

    calls: list[int] = []
    run = OrtNetwork.__call__

    def counted(self: OrtNetwork, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(x.shape[0])
        return run(self, x)

    monkeypatch.setattr(OrtNetwork, "__call__", counted)
    a = eager.predict(images, batch_size=2)
    b = fast.predict(images, batch_size=2)
    for ra, rb in zip(a, b, strict=True):
        for name in ("points", "points_step1"):
            pa, pb = getattr(ra, name), getattr(rb, name)
            assert np.array_equal(np.isnan(pa), np.isnan(pb))
            assert np.nanmax(np.abs(pa - pb)) < 0.05, name
    refined_levels = len(eager.schema.refined_levels)
    assert calls[0] == 2  # the landmark model: both images in one call
    assert calls[1] == 2 * refined_levels * len(TTA_VIEWS)  # every crop and view in one call

    net = eager.refiner.network()  # type: ignore[union-attr]
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        ref = net(x)
    got = fast.refiner.__dict__["_compiled"](x)  # type: ignore[union-attr]
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)

    files = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 2  # landmark model and refiner, exported once
    SpineLandmarkPipeline.load(saved, backend="onnxruntime")
    assert sorted((tmp_path / "onnx").glob("*.onnx")) == files  # reused, not exported again


def test_unknown_backend_is_refused(saved: Path) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        SpineLandmarkPipeline.load(saved, backend="tensorrt")


def test_onnxruntime_detector_features_equal_eager(tmp_path: Path) -> None:
    """The detector's backbone and FPN in ONNX Runtime: the same maps and detections as eager,
    and the pipeline still saves the detector's weights."""
    from spinelandmarks.defaults import CPU_DETECTOR
    from spinelandmarks.models.detector import VertebraDetector
    from spinelandmarks.ort_backend import OrtFeatures, use_onnxruntime

    torch.manual_seed(0)
    size = (128, 96)
    detector = VertebraDetector(backbone="resnet_lite", input_size=size, **CPU_DETECTOR)
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=size),
                                 detector=detector)
    x = torch.rand(2, 3, *size)
    images = torch.rand(2, 1, *size)
    with torch.no_grad():
        ref = detector.eval().model.backbone(x)
    ref_det = detector.detect(images)
    weights = {k: v.clone() for k, v in pipe.state_dict().items()}
    use_onnxruntime(pipe, tmp_path / "onnx")
    hook = detector.model.backbone.__dict__["forward"]
    assert isinstance(hook, OrtFeatures) and hook.names == list(ref)
    with torch.no_grad():
        got = detector.model.backbone(x)
    assert list(got) == list(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-4, rtol=1e-4)
    for a, b in zip(ref_det, detector.detect(images), strict=True):
        torch.testing.assert_close(b.scores, a.scores, atol=1e-4, rtol=0, equal_nan=True)
        torch.testing.assert_close(b.boxes, a.boxes, atol=1e-2, rtol=0, equal_nan=True)
    assert pipe.state_dict().keys() == weights.keys()  # saved as before
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # landmark model and features
