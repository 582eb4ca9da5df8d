"""LandmarkModel and CropRefiner: training runs (fp32, bf16), overfitting, checkpoints, hooks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from spinelandmarks.data.annotations import read_coco
from spinelandmarks.data.batch import collate
from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.datasets import CropDataset, LandmarkDataset
from spinelandmarks.models import BACKBONES, Backbone, CropRefiner, LandmarkModel
from spinelandmarks.models.landmark import height_pairs, relative_height_error
from spinelandmarks.phantoms import PhantomConfig, generate_dataset
from spinelandmarks.schema import CORNERS, LUMBAR_MORPHOMETRY, LUMBAR_SAGITTAL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return generate_dataset(root / "data", 6, seed=5, config=PhantomConfig(long_side=256))


def trainer(**kwargs: object) -> L.Trainer:
    args: dict[str, object] = {"accelerator": "cpu", "logger": False,
                               "enable_checkpointing": False, "enable_progress_bar": False,
                               "enable_model_summary": False, "num_sanity_val_steps": 0}
    args.update(kwargs)
    return L.Trainer(**args)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize(("cls", "task", "size"), [(LandmarkModel, "landmarks", (128, 96)),
                                                   (CropRefiner, "crops", (48, 48))])
def test_fast_dev_run(dataset: Path, cls: type[LandmarkModel], task: str,
                      size: tuple[int, int], precision: str) -> None:
    dm = SpineDataModule(str(dataset), task=task, input_size=size, crop_size=size,  # type: ignore[arg-type]
                         batch_size=4, num_workers=0, split=(0.5, 0.5, 0.0))
    torch.manual_seed(0)
    model = cls(backbone="resnet_lite", input_size=size)
    head = model.head.conv.weight.detach().clone()
    tr = trainer(fast_dev_run=True, precision=precision)
    tr.fit(model, datamodule=dm)
    # one optimizer step on a finite, positive loss moved the head; weights stay float32
    loss = tr.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss.item() > 0
    assert model.head.conv.weight.dtype == torch.float32
    assert not torch.equal(model.head.conv.weight.detach(), head)
    assert torch.isfinite(tr.callback_metrics["val/loss"])


def test_height_pairs_follow_the_point_names() -> None:
    assert height_pairs(CORNERS) == [(0, 3), (1, 2)]
    refiner = CropRefiner(schema=LUMBAR_MORPHOMETRY, backbone="resnet_lite", input_size=(48, 48))
    names = refiner.crop_point_names
    assert height_pairs(names) == [(names.index("anterior_superior"),
                                    names.index("anterior_inferior")),
                                   (names.index("posterior_superior"),
                                    names.index("posterior_inferior")),
                                   (names.index("middle_superior"),
                                    names.index("middle_inferior"))]
    assert height_pairs(("anterior_superior", "posterior_superior")) == []


def test_relative_height_error_is_the_mean_over_heights() -> None:
    # A 10 x 10 body; prediction: anterior height 12 (+20 %), posterior 10, middle 8 (-20 %).
    ref = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0],
                         [5.0, 0.0], [5.0, 10.0]]])
    pred = ref.clone()
    pred[0, 3, 1], pred[0, 5, 1] = 12.0, 8.0
    pairs = [(0, 3), (1, 2), (4, 5)]
    every = torch.ones(1, 6, dtype=torch.bool)
    assert relative_height_error(pred, ref, every, pairs).item() == pytest.approx(0.4 / 3)
    # An absent end (NaN reference, masked) drops its height from the mean, and no NaN leaks.
    ref[0, 5] = float("nan")
    mask = every.clone()
    mask[0, 5] = False
    pred.requires_grad_(True)
    loss = relative_height_error(pred, ref, mask, pairs)
    assert loss.item() == pytest.approx(0.2 / 2)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert relative_height_error(pred, ref, torch.zeros_like(mask), pairs).item() == 0.0


def test_refiner_adds_the_height_term_to_its_loss(dataset: Path) -> None:
    ds = CropDataset(read_coco(dataset / "annotations.json"), dataset, LUMBAR_SAGITTAL,
                     crop_size=(48, 48))
    batch = collate([ds[i] for i in range(4)])
    torch.manual_seed(0)
    plain = CropRefiner(backbone="resnet_lite", input_size=(48, 48))
    weighted = CropRefiner(backbone="resnet_lite", input_size=(48, 48), height_weight=2.0)
    weighted.load_state_dict(plain.state_dict())
    loss0, parts0, _ = plain.eval().compute_loss(batch)
    loss2, parts2, _ = weighted.eval().compute_loss(batch)
    assert "height" not in parts0 and parts2["height"] > 0
    torch.testing.assert_close(loss2, loss0 + 2.0 * parts2["height"])
    assert CropRefiner(**weighted.hparams).hparams["height_weight"] == 2.0


def test_hparams_rebuild_module() -> None:
    model = CropRefiner(backbone="resnet_lite", input_size=(48, 48), lr=5e-4)
    assert model.hparams["schema"] == LUMBAR_SAGITTAL.to_dict()
    again = CropRefiner(**model.hparams)
    assert again.hparams == model.hparams and again.num_outputs == 4
    assert LandmarkModel(backbone="resnet_lite").num_outputs == 22


def test_backbone_weights_from_local_file(tmp_path: Path) -> None:
    src = Backbone("resnet_lite")
    torch.save(src.body.state_dict(), tmp_path / "w.pt")
    model = LandmarkModel(backbone="resnet_lite", weights_path=str(tmp_path / "w.pt"))
    for a, b in zip(model.backbone.body.state_dict().values(), src.body.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError, match="not found"):
        Backbone("resnet_lite", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown backbone"):
        Backbone("vgg11")
    assert {"resnet18", "efficientnet_b0", "convnext_tiny", "resnet_lite"} <= set(BACKBONES)


def _validate(model: LandmarkModel, loader: DataLoader) -> dict[str, float]:
    out = trainer().validate(model, loader, verbose=False)[0]
    return {k: float(v) for k, v in out.items()}


@pytest.mark.slow
def test_refiner_overfits_crops_below_2_percent(dataset: Path) -> None:
    L.seed_everything(0, verbose=False)
    records = read_coco(dataset / "annotations.json")[:2]
    ds = CropDataset(records, dataset, LUMBAR_SAGITTAL, crop_size=(64, 64), train=False)
    loader = DataLoader(ds, batch_size=len(ds), collate_fn=collate)
    model = CropRefiner(backbone="resnet_lite", input_size=(64, 64), lr=3e-3,
                        scheduler="constant")
    trainer(max_epochs=150).fit(model, loader)
    metrics = _validate(model, loader)
    assert metrics["val/median_x"] < 2.0 and metrics["val/median_y"] < 2.0, metrics


@pytest.mark.slow
def test_landmark_model_overfits_below_5_percent(dataset: Path) -> None:
    L.seed_everything(0, verbose=False)
    records = read_coco(dataset / "annotations.json")[:2]
    ds = LandmarkDataset(records, dataset, LUMBAR_SAGITTAL, input_size=(192, 144), train=False)
    loader = DataLoader(ds, batch_size=2, collate_fn=collate)
    model = LandmarkModel(backbone="resnet_lite", input_size=(192, 144), lr=3e-3,
                          scheduler="constant")
    trainer(max_epochs=150).fit(model, loader)
    metrics = _validate(model, loader)
    assert metrics["val/median_x"] < 5.0 and metrics["val/median_y"] < 5.0, metrics
