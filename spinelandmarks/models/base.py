"""Base LightningModule of every landmark task.

In the style of torchgeo's ``BaseTask``: every constructor argument is a hyper-parameter saved
with ``save_hyperparameters`` (so a checkpoint rebuilds its module alone), and a subclass
changes behaviour by overriding a hook:

- :meth:`configure_models` builds the network(s) from ``self.hparams``;
- :meth:`configure_losses` builds the loss callables;
- :meth:`configure_metrics` builds one torchmetrics collection per split;
- :meth:`compute_loss` and :meth:`update_metrics` hold the task's step logic, shared by train,
  validation and test.

The optimizer is AdamW with a cosine (default), one-cycle or constant schedule.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection

from ..data.batch import LandmarkBatch
from ..schema import LandmarkSchema, resolve_schema
from .classes import class_path

__all__ = ["LandmarkTask", "resolve_schema"]

class LandmarkTask(L.LightningModule):
    """Shared training logic; subclasses implement the hooks.

    Parameters
    ----------
    schema : LandmarkSchema, dict, str or None
        Landmark schema (stored in the hyper-parameters as its dict form).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay.
    scheduler : {"cosine", "onecycle", "constant"}
        Learning-rate schedule over ``trainer.max_epochs`` (cosine, one-cycle) or none.
    warmup_epochs : int
        Linear warm-up epochs for the cosine schedule.
    """

    def __init__(self, schema: LandmarkSchema | dict[str, Any] | str | None = None,
                 lr: float = 1e-3, weight_decay: float = 1e-4, scheduler: str = "cosine",
                 warmup_epochs: int = 0) -> None:
        super().__init__()
        if scheduler not in ("cosine", "onecycle", "constant"):
            raise ValueError(f"unknown scheduler {scheduler!r}")
        self.schema = resolve_schema(schema)
        self.save_hyperparameters({"schema": self.schema, "lr": lr, "weight_decay": weight_decay,
                                   "scheduler": scheduler, "warmup_epochs": warmup_epochs})

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """As Lightning's, then store the schema as its dict form (plain data in checkpoints,
        which keeps them loadable with ``weights_only=True``), also for subclasses."""
        kwargs.setdefault("frame", inspect.currentframe().f_back)  # type: ignore[union-attr]
        super().save_hyperparameters(*args, **kwargs)
        if "schema" in self.hparams:
            self.hparams["schema"] = resolve_schema(self.hparams["schema"]).to_dict()

    def setup_task(self) -> None:
        """Run the configure hooks; subclasses call this at the end of their ``__init__``
        after saving their own hyper-parameters."""
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- hooks ---------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build the network(s) from ``self.hparams``."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        """Build the loss functions (default: none beyond :meth:`compute_loss`)."""

    def configure_metrics(self) -> None:
        """Build ``self.val_metrics`` / ``self.test_metrics`` (default: empty collections)."""
        self.val_metrics = MetricCollection({}, prefix="val/")
        self.test_metrics = MetricCollection({}, prefix="test/")

    def compute_loss(self, batch: LandmarkBatch) -> tuple[Tensor, dict[str, Tensor], Any]:
        """Forward a batch; return the total loss, named loss terms and the predictions."""
        raise NotImplementedError

    def update_metrics(self, metrics: MetricCollection, batch: LandmarkBatch, preds: Any) -> None:
        """Update a split's metric collection with one batch of predictions."""

    # -- Lightning plumbing -------------------------------------------------------------------
    def _shared_step(self, batch: LandmarkBatch, split: str) -> Tensor:
        loss, terms, preds = self.compute_loss(batch)
        bs = len(batch)
        self.log(f"{split}/loss", loss, batch_size=bs, prog_bar=True, sync_dist=split != "train")
        for name, value in terms.items():
            self.log(f"{split}/{name}", value, batch_size=bs, sync_dist=split != "train")
        if split != "train":
            metrics = self.val_metrics if split == "val" else self.test_metrics
            self.update_metrics(metrics, batch, preds)
        return loss

    def training_step(self, batch: LandmarkBatch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: LandmarkBatch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: LandmarkBatch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_metrics(self, metrics: MetricCollection) -> None:
        if not metrics.keys():
            return
        values: dict[str, Tensor] = {}
        for key, out in metrics.compute().items():
            if isinstance(out, dict):
                for sub, v in out.items():
                    values[f"{key}/{sub}"] = v
            else:
                values[key] = out
        # Metrics already reduce across processes (their states are gathered), so no sync here.
        self.log_dict({k: v.float() for k, v in values.items() if v.numel() == 1},
                      prog_bar=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets ``pipeline.load_module`` rebuild the right class (a subclass too) from any
        # checkpoint; the bare name is what files of version 0.1 recorded.
        checkpoint["class"] = type(self).__name__
        checkpoint["class_path"] = class_path(type(self))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"],
                                weight_decay=self.hparams["weight_decay"])
        kind = self.hparams["scheduler"]
        if kind == "constant" or self.trainer is None:
            return opt
        if kind == "onecycle":
            steps = int(self.trainer.estimated_stepping_batches)
            sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams["lr"],
                                                             total_steps=max(steps, 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        warm = min(int(self.hparams["warmup_epochs"]), epochs - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs - warm, 1),
                                                            eta_min=self.hparams["lr"] * 0.01)
        if warm == 0:
            return {"optimizer": opt, "lr_scheduler": cosine}
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
        return {"optimizer": opt, "lr_scheduler": sched}
