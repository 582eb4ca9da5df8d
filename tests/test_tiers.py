"""The conftest guard fails a fast test that asks for a training fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def test_fast_test_requesting_a_training_fixture_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_guarded='''
        import pytest

        @pytest.fixture
        def trained():
            raise AssertionError("the training fixture must not be set up for a fast test")

        @pytest.fixture
        def run(trained):
            return trained

        def test_fast_direct(trained):
            pass

        def test_fast_indirect(run):
            pass

        @pytest.mark.slow
        def test_slow(trained):
            pass

        def test_fast_alone():
            pass
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines([
        "*test_fast_direct is not marked slow but requests the training fixture(s) trained*",
        "*test_fast_indirect is not marked slow but requests the training fixture(s) trained*",
        "*the training fixture must not be set up for a fast test*",
    ])
    # deselecting the slow tier leaves only the guarded failures and the plain fast test
    fast = pytester.runpytest("-p", "no:cacheprovider", "-m", "not slow")
    fast.assert_outcomes(passed=1, errors=2)
