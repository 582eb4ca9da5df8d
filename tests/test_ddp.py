"""Multi-process training with Lightning DDP (2 CPU processes, gloo): metrics reduce over both."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch.distributed as dist

from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.data.synthetic import PhantomConfig, generate_dataset
from spinelandmarks.models import LandmarkModel


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_cpu_processes_reduce_metrics(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "data", 8, seed=2, config=PhantomConfig(long_side=192))
    # 4 validation images: 2 per process. The metric must count the points of all 4.
    dm = SpineDataModule(str(data), input_size=(96, 72), batch_size=1, num_workers=0,
                         split=(0.5, 0.5, 0.0), persistent_workers=False, pin_memory=False)
    model = LandmarkModel(backbone="resnet_lite", input_size=(96, 72))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    dm.setup("fit")
    expected = sum(int((r.visibility > 0).sum()) for r in dm.val_records)
    assert len(dm.val_records) == 4
    metrics = trainer.callback_metrics
    assert int(metrics["val/n_labelled"]) == expected
    assert 0 < float(metrics["val/median_x"]) < 1000
