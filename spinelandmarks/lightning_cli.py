"""LightningCLI access for power users: ``spinelandmarks fit|validate|test -c CONFIG``.

Any module of :mod:`spinelandmarks.models` and every :class:`SpineDataModule` option can be
set from YAML or the command line, e.g.::

    spinelandmarks fit -c examples/configs/landmark.yaml --trainer.max_epochs 50
    spinelandmarks fit --print_config -c examples/configs/refiner.yaml   # the full config

``predict`` on files is the :mod:`spinelandmarks.cli` verb of that name (it needs the whole
pipeline, not one module).
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from .data.datamodule import SpineDataModule
from .models.base import LandmarkTask

__all__ = ["LIGHTNING_VERBS", "run_lightning_cli"]

LIGHTNING_VERBS = ("fit", "validate", "test")


def run_lightning_cli(argv: Sequence[str]) -> int:
    """Run LightningCLI with ``argv`` (starting with a verb of :data:`LIGHTNING_VERBS`)."""
    LightningCLI(LandmarkTask, SpineDataModule, subclass_mode_model=True,
                 save_config_kwargs={"overwrite": True}, args=list(argv),
                 auto_configure_optimizers=False)
    return 0
