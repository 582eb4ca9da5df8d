"""The package surface: lazy top-level names and a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import spinelandmarks as sl


def test_import_and_help_do_not_load_torch() -> None:
    code = ("import sys, spinelandmarks, spinelandmarks.cli as c; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "c.build_parser().format_help(); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves_to_its_submodule_object() -> None:
    from spinelandmarks.models import LandmarkModel
    from spinelandmarks.pipeline import SpineLandmarkPipeline

    assert sl.SpineLandmarkPipeline is SpineLandmarkPipeline
    assert sl.LandmarkModel is LandmarkModel
    for name in sl.__all__:
        assert getattr(sl, name) is not None
    assert set(sl.__all__) <= set(dir(sl))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Pipeline'"):
        sl.Pipeline  # noqa: B018


def test_all_lists_exactly_the_lazy_names() -> None:
    assert set(sl.__all__) == {*sl._EXPORTS, "__version__"}
