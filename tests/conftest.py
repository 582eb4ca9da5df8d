"""Test-tier guard: the fast tier (``pytest -m "not slow"``) trains nothing.

A fixture that trains a network is listed in :data:`TRAINING_FIXTURES`; a test that requests
one (directly or through another fixture) must be marked ``@pytest.mark.slow``, or it fails
at setup with a message saying so. Fast tests use untrained networks saved without training
(e.g. ``untrained`` in test_cli.py).
"""

from __future__ import annotations

import pytest

#: Fixtures that train a network (module-scoped runs shared by slow tests).
TRAINING_FIXTURES = frozenset({"trained"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") is not None:
        return
    used = sorted(TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if used:
        pytest.fail(f"{item.nodeid} is not marked slow but requests the training fixture(s) "
                    f"{', '.join(used)}: mark it @pytest.mark.slow, or use a fixture that "
                    "saves an untrained pipeline", pytrace=False)
