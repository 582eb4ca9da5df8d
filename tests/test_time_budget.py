"""TimeBudget: the learning-rate schedule over wall-clock time, on a fake clock."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from spinelandmarks import training
from spinelandmarks.training import TimeBudget


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lr_follows_a_cosine_over_the_budget_and_stops_at_its_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1000.0)
    monkeypatch.setattr(training.time, "monotonic", clock)
    groups = [{"lr": 1e-3}, {"lr": 4e-3}]
    trainer: Any = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=groups)],
                                   should_stop=False)
    budget = TimeBudget(60.0)
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]

    def lrs_at(elapsed: float) -> list[float]:
        clock.now = 1000.0 + elapsed
        budget.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
        return [g["lr"] for g in groups]

    assert lrs_at(0.0) == pytest.approx([1e-3, 4e-3]) and not trainer.should_stop
    # factor = 0.01 + 0.99 * (1 + cos(pi * t / T)) / 2, always of the initial rates
    quarter = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4))
    assert lrs_at(15.0) == pytest.approx([1e-3 * quarter, 4e-3 * quarter])
    assert lrs_at(30.0) == pytest.approx([1e-3 * 0.505, 4e-3 * 0.505])
    assert not trainer.should_stop
    assert lrs_at(60.0) == pytest.approx([1e-5, 4e-5]) and trainer.should_stop
    trainer.should_stop = False
    assert lrs_at(600.0) == pytest.approx([1e-5, 4e-5]) and trainer.should_stop  # clamped
