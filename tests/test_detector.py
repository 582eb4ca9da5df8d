"""VertebraDetector: level assignment, training loops, validation metrics, checkpoints."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from spinelandmarks.data.batch import LandmarkBatch, collate
from spinelandmarks.levels import confirm_levels
from spinelandmarks.models.detector import (
    LevelAccuracy,
    LevelDetections,
    VertebraDetector,
    assign_levels,
)
from spinelandmarks.schema import LUMBAR_SAGITTAL

K = LUMBAR_SAGITTAL.num_levels
NAMES = LUMBAR_SAGITTAL.level_names
H, W = 128, 96

# A small, fast configuration for CPU tests.
OVERFIT_EPOCHS = 35  # 70 steps of 2 images: map_50 >= 0.94 for seeds 0-3 (about 12 s on 2 cores)
SMALL: dict[str, Any] = dict(input_size=(H, W), fpn_channels=32, representation_size=128,
                             proposals_train=200, proposals_test=100,
                             box_batch_size_per_image=64, anchor_sizes=(8, 16, 32, 64, 128))


# ------------------------------------------------------------------------------------------------
# assign_levels
# ------------------------------------------------------------------------------------------------
def spine_boxes(n: int = K, x0: float = 100.0, y0: float = 50.0, step: float = 60.0,
                size: tuple[float, float] = (80.0, 45.0), dx: float = 4.0) -> torch.Tensor:
    """(n, 4) stacked boxes, cranial first, drifting slightly in x (lordosis)."""
    rows = []
    for k in range(n):
        x, y = x0 + dx * k, y0 + step * k
        rows.append([x, y, x + size[0], y + size[1]])
    return torch.tensor(rows)


def test_assign_levels_shuffled_order_and_missing() -> None:
    boxes = spine_boxes()
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7, 0.85, 0.6])
    labels = torch.arange(1, K + 1)
    perm = torch.tensor([3, 0, 5, 2, 4, 1])
    out = assign_levels(boxes[perm], scores[perm], labels[perm], K, level_names=NAMES)
    assert isinstance(out, LevelDetections)
    assert out.present.all() and out.missing == []
    torch.testing.assert_close(out.boxes, boxes)
    torch.testing.assert_close(out.scores, scores)
    assert out.level_names == NAMES
    torch.testing.assert_close(out.labels, labels)

    # Drop L2 and S1: reported missing, NaN boxes, zero scores.
    keep = torch.tensor([0, 2, 3, 4])
    out = assign_levels(boxes[keep], scores[keep], labels[keep], K, level_names=NAMES)
    assert out.missing == ["L2", "S1"]
    assert out.present.tolist() == [True, False, True, True, True, False]
    assert torch.isnan(out.boxes[1]).all() and torch.isnan(out.boxes[5]).all()
    assert out.scores[1] == 0 and out.scores[5] == 0
    torch.testing.assert_close(out.boxes[2], boxes[2])


def test_assign_levels_duplicates_keep_best() -> None:
    boxes = spine_boxes()
    labels = torch.arange(1, K + 1)
    scores = torch.full((K,), 0.9)
    # Two L3 boxes on the same vertebra (as torchvision's per-class output gives), and an L4
    # box on the L3 vertebra with a lower score (same object, two classes).
    dup = boxes[2] + torch.tensor([1.0, 1.0, 1.0, 1.0])
    extra_boxes = torch.stack([dup, boxes[2] - 1.0])
    all_boxes = torch.cat([boxes, extra_boxes])
    all_scores = torch.cat([scores, torch.tensor([0.97, 0.3])])
    all_labels = torch.cat([labels, torch.tensor([3, 4])])
    out = assign_levels(all_boxes, all_scores, all_labels, K, level_names=NAMES)
    assert out.present.all()
    torch.testing.assert_close(out.boxes[2], dup)  # the better L3 box
    assert out.scores[2] == pytest.approx(0.97)
    torch.testing.assert_close(out.boxes[3], boxes[3])  # L4 stays on its own vertebra


def test_assign_levels_inconsistent_order() -> None:
    boxes = spine_boxes(3)
    # The box labelled L3 lies *above* the one labelled L2 and scores lower: it cannot be L3.
    labels = torch.tensor([1, 3, 2])
    scores = torch.tensor([0.9, 0.5, 0.8])
    out = assign_levels(boxes, scores, labels, K, level_names=NAMES)
    assert out.present.tolist() == [True, True, False, False, False, False]
    torch.testing.assert_close(out.boxes[0], boxes[0])
    torch.testing.assert_close(out.boxes[1], boxes[2])
    assert out.missing == ["L3", "L4", "L5", "S1"]

    # With a second class score for the middle box it is relabelled consistently.
    boxes2 = torch.cat([boxes[:2], boxes[1:2], boxes[2:]])
    labels2 = torch.tensor([2, 3, 1, 2])  # middle box: L3 (0.6) or L1 (0.4)
    scores2 = torch.tensor([0.2, 0.6, 0.4, 0.8])
    out = assign_levels(boxes2, scores2, labels2, K, level_names=NAMES)
    # Monotone totals: middle L1 (0.4) + bottom L2 (0.8) = 1.2 beats top L2 (0.2) + middle L3
    # (0.6) = 0.8; the bottom box has no level below L3, so middle-as-L3 cannot take it.
    assert out.present.tolist() == [True, True, False, False, False, False]
    torch.testing.assert_close(out.boxes[0], boxes[1])
    torch.testing.assert_close(out.boxes[1], boxes[2])


@pytest.mark.parametrize("rotation_deg", [0.0, 20.0, -25.0])
def test_assign_levels_facing_and_rotation_independent(rotation_deg: float) -> None:
    boxes = spine_boxes(dx=10.0)
    g = torch.Generator().manual_seed(0)
    scores = 0.5 + 0.5 * torch.rand(K, generator=g)
    labels = torch.arange(1, K + 1)
    centre = torch.tensor([300.0, 250.0])
    a = math.radians(rotation_deg)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def move(b: torch.Tensor, mirror: bool) -> torch.Tensor:
        c = (b[:, :2] + b[:, 2:]) / 2
        half = (b[:, 2:] - b[:, :2]) / 2
        c = (c - centre) @ rot.T + centre
        if mirror:
            c = torch.stack([2 * centre[0] - c[:, 0], c[:, 1]], 1)
        return torch.cat([c - half, c + half], 1)

    for mirror in (False, True):
        moved = move(boxes, mirror)
        perm = torch.randperm(K, generator=g)
        out = assign_levels(moved[perm], scores[perm], labels[perm], K, level_names=NAMES)
        assert out.present.all(), (mirror, out)
        torch.testing.assert_close(out.boxes, moved)


def test_assign_levels_edge_cases() -> None:
    empty = assign_levels(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), K)
    assert not empty.present.any() and empty.missing == [str(k) for k in range(1, K + 1)]
    assert empty.boxes.shape == (K, 4) and empty.scores.shape == (K,)
    one = assign_levels(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.01]),
                        torch.tensor([2]), K, min_score=0.05)
    assert not one.present.any()  # below min_score
    one = assign_levels(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.5]),
                        torch.tensor([2]), K, level_names=NAMES)
    assert one.present.tolist() == [False, True, False, False, False, False]
    with pytest.raises(ValueError, match="level names"):
        assign_levels(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), K, level_names=["a"])


@pytest.mark.parametrize(("scores", "fill", "expected"), [
    # a weak L1 next to a confirmed L2 is kept, one under min_adjacent_score is not
    ([0.15, 0.9, 0.8, 0.9, 0.9, 0.9], True, [1, 1, 1, 1, 1, 1]),
    ([0.05, 0.9, 0.8, 0.9, 0.9, 0.9], True, [0, 1, 1, 1, 1, 1]),
    # weak levels join through a chain of weak levels, not on their own
    ([0.2, 0.2, 0.9, 0.9, 0.9, 0.9], True, [1, 1, 1, 1, 1, 1]),
    ([0.2, 0.2, 0.2, 0.2, 0.2, 0.2], True, [0, 0, 0, 0, 0, 0]),
    # a gap (no box) between confirmed levels is filled only with fill_gaps
    ([0.9, 0.0, 0.9, 0.9, 0.9, 0.9], True, [1, 1, 1, 1, 1, 1]),
    ([0.9, 0.0, 0.9, 0.9, 0.9, 0.9], False, [1, 0, 1, 1, 1, 1]),
    # nothing confirmed: nothing present, even with a gap to fill
    ([0.05, 0.0, 0.0, 0.0, 0.0, 0.29], True, [0, 0, 0, 0, 0, 0]),
    # the caudal end: S1 scored 0.12 after a confirmed L5
    ([0.9, 0.9, 0.9, 0.9, 0.9, 0.12], True, [1, 1, 1, 1, 1, 1]),
])
def test_confirm_levels_hysteresis_and_gaps(scores: list[float], fill: bool,
                                            expected: list[int]) -> None:
    s = torch.tensor([scores])
    out = confirm_levels(s, s > 0, min_score=0.3, min_adjacent_score=0.1, fill_gaps=fill)
    assert out.int().tolist() == [expected]


def test_confirm_levels_batch_and_errors() -> None:
    s = torch.tensor([[0.15, 0.9, 0.0, 0.9, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0, 0.05]])
    found = s > 0
    out = confirm_levels(s, found)
    # rows are independent; an unassigned level scored 0.15 does not count (found is False)
    assert out.int().tolist() == [[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    found[0, 0] = False
    assert confirm_levels(s, found).int().tolist()[0] == [0, 1, 1, 1, 0, 0]
    # min_adjacent_score >= min_score: plain thresholding plus gap filling
    assert confirm_levels(s, s > 0, 0.3, 0.3).int().tolist()[0] == [0, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="same"):
        confirm_levels(s, found[:, :3])


def test_level_accuracy_metric() -> None:
    boxes = spine_boxes()
    labels = torch.arange(1, K + 1)
    perfect = assign_levels(boxes, torch.ones(K), labels, K)
    shifted = assign_levels(boxes + torch.tensor([0.0, 30.0, 0.0, 30.0]), torch.ones(K), labels, K)
    partial = assign_levels(boxes[:5], torch.ones(5), labels[:5], K)
    metric = LevelAccuracy()
    assert torch.isnan(metric.compute())
    metric.update([perfect, shifted, partial], [boxes] * 3, [labels] * 3)
    assert metric.compute().item() == pytest.approx(1 / 3)
    # An image without S1 in the ground truth is right when S1 is not predicted.
    metric.reset()
    metric.update([partial, perfect], [boxes[:5]] * 2, [labels[:5]] * 2)
    assert metric.compute().item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# Tiny synthetic data: stacked bright rectangles, one intensity per level
# ------------------------------------------------------------------------------------------------
def rectangle_sample(seed: int, levels: int = K) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    image = 0.05 * torch.rand(1, H, W, generator=g)
    rect_h, gap = 12, 6
    top = 8 + int(torch.randint(0, 8, (1,), generator=g))
    left = 20 + int(torch.randint(0, 20, (1,), generator=g))
    boxes, labels = [], []
    for k in range(levels):
        y1, x1 = top + k * (rect_h + gap), left + 2 * k
        width = 30 + 3 * k
        image[0, y1 : y1 + rect_h, x1 : x1 + width] = 0.3 + 0.12 * k
        boxes.append([x1, y1, x1 + width, y1 + rect_h])
        labels.append(k + 1)
    p = LUMBAR_SAGITTAL.num_points
    return {"image": image, "points": torch.full((p, 2), float("nan")),
            "visibility": torch.zeros(p, dtype=torch.long),
            "matrix": torch.eye(3, dtype=torch.float64),
            "pixel_spacing": torch.full((2,), float("nan")), "image_id": f"rect{seed}.png",
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long)}


def loader(n: int, batch_size: int = 2, empty: int = 0) -> DataLoader[Any]:
    """``n`` images with six rectangles, then ``empty`` images without any."""
    samples: Any = [rectangle_sample(i) for i in range(n)]
    samples += [rectangle_sample(100 + i, levels=0) for i in range(empty)]
    return DataLoader(samples, batch_size=batch_size, collate_fn=collate)


def trainer(**kwargs: Any) -> L.Trainer:
    kwargs.setdefault("logger", False)
    return L.Trainer(accelerator="cpu", devices=1, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        warnings.filterwarnings("ignore", ".*called before the ``update`` method.*")
        yield


def test_batch_is_a_landmark_batch() -> None:
    batch = next(iter(loader(2)))
    assert isinstance(batch, LandmarkBatch)
    targets = VertebraDetector.targets(batch)
    assert targets[0]["boxes"].shape == (K, 4) and targets[0]["labels"].tolist() == [1, 2, 3, 4,
                                                                                        5, 6]


def test_degenerate_boxes_are_dropped_from_targets() -> None:
    batch = next(iter(loader(1, 1)))
    batch.boxes[0][0] = torch.tensor([10.0, 10.0, 10.0, 20.0])
    batch.boxes[0][1, 0] = float("nan")
    t = VertebraDetector.targets(batch)[0]
    assert t["boxes"].shape == (K - 2, 4) and t["labels"].tolist() == [3, 4, 5, 6]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fast_dev_run(precision: str) -> None:
    torch.manual_seed(0)
    model = VertebraDetector(**SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    # The second batch holds an image without vertebrae (a negative for torchvision).
    tr = trainer(fast_dev_run=2, precision=precision)
    tr.fit(model, loader(3, empty=1), loader(2))
    loss = tr.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss.item() > 0
    after = model.state_dict()
    # two optimizer steps moved the trained weights; master weights stay float32 under bf16
    assert all(after[k].dtype == torch.float32 for k in before)
    assert not torch.equal(after["model.roi_heads.box_predictor.cls_score.weight"],
                           before["model.roi_heads.box_predictor.cls_score.weight"])
    out = model.detect(torch.rand(2, 1, H, W))
    assert len(out) == 2 and out[0].boxes.shape == (K, 4) and out[0].boxes.dtype == torch.float32
    assert ((out[0].scores >= 0) & (out[0].scores <= 1)).all()


def test_validation_logs_metrics() -> None:
    torch.manual_seed(0)
    model = VertebraDetector(**SMALL)
    (metrics,) = trainer().validate(model, loader(3, empty=1), verbose=False)
    for key in ("val/loss", "val/map_50", "val/level_accuracy", "val/loss_classifier",
                "val/loss_box_reg", "val/loss_objectness", "val/loss_rpn_box_reg"):
        assert key in metrics, sorted(metrics)
        assert math.isfinite(metrics[key]), (key, metrics[key])
    assert 0 <= metrics["val/level_accuracy"] <= 1
    assert metrics["val/map_50"] <= 1
    # Validation left the BatchNorm statistics alone.
    bn = model.model.backbone.body.bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_unknown_backbone_and_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown detector backbone"):
        VertebraDetector(backbone="vit_b_16", **SMALL)
    import torchvision

    path = tmp_path / "r18.pt"
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    model = VertebraDetector(weights_path=str(path), **SMALL)
    torch.testing.assert_close(model.model.backbone.body.conv1.weight, state["conv1.weight"])
    torch.save({"conv1.weight": state["conv1.weight"]}, path)
    with pytest.raises(ValueError, match="do not fit"):
        VertebraDetector(weights_path=str(path), **SMALL)


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VertebraDetector(**SMALL)
    tr = trainer(max_epochs=1, limit_val_batches=0)
    tr.fit(model, loader(2))
    path = tmp_path / "det.ckpt"
    tr.save_checkpoint(path)
    loaded = VertebraDetector.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams["input_size"] == (H, W)
    images = torch.stack([rectangle_sample(9)["image"], rectangle_sample(10)["image"]])
    a, b = model.detect(images), loaded.detect(images)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.boxes, y.boxes, equal_nan=True)
        torch.testing.assert_close(x.scores, y.scores)
        assert torch.equal(x.present, y.present) and x.missing == y.missing


@pytest.mark.slow
def test_overfit_tiny_dataset() -> None:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = VertebraDetector(**SMALL, lr=2e-3, scheduler="constant")
    data = loader(4, batch_size=2)
    trainer(max_epochs=OVERFIT_EPOCHS, limit_val_batches=0, gradient_clip_val=5.0).fit(model,
                                                                                       data)
    metrics = trainer().validate(model, data, verbose=False)[0]
    print(f"overfit: {time.perf_counter() - start:.1f} s, {metrics}")
    assert metrics["val/map_50"] > 0.5
    assert metrics["val/level_accuracy"] > 0


def test_torchscript_export_gives_same_detections(tmp_path: Path) -> None:
    torch.manual_seed(0)
    det = VertebraDetector(fpn_channels=32, representation_size=64, input_size=(128, 96),
                           min_score=0.0).eval()
    path = det.export(tmp_path / "det.pt")
    scripted = torch.jit.load(str(path))
    images = [torch.rand(3, 128, 96)]
    with torch.no_grad():
        ref = det.model(images)[0]
        _, got = scripted(images)
    torch.testing.assert_close(got[0]["boxes"], ref["boxes"])
    torch.testing.assert_close(got[0]["scores"], ref["scores"])
    with pytest.raises(ValueError, match=r"exports to .torchscript. only"):
        det.export(tmp_path / "d.onnx", fmt="onnx")


def test_confirm_levels_moved_to_the_level_rules_with_a_warning() -> None:
    import spinelandmarks.models.detector as detector

    with pytest.warns(DeprecationWarning, match="from spinelandmarks.levels"):
        assert detector.confirm_levels is confirm_levels
