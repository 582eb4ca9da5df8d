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


#: Where each top-level name is defined (written out here, not read from the package).
DEFINED_IN = {
    "LUMBAR_SAGITTAL": "schema", "LandmarkSchema": "schema", "Level": "schema",
    "LUMBAR_MORPHOMETRY": "schema", "LUMBOPELVIC_SAGITTAL": "schema",
    "WHOLE_SPINE_SAGITTAL": "schema", "SpineLandmarkPipeline": "inference.pipeline",
    "SpineResult": "inference.results", "PipelineOptions": "inference.options",
    "LandmarkTask": "models.base",
    "LandmarkModel": "models.landmark", "CropRefiner": "models.landmark",
    "VertebraDetector": "models.detector", "SpineDataModule": "data.datamodule",
    "ImageRecord": "data.annotations", "read_coco": "data.annotations",
    "write_coco": "data.annotations", "Radiograph": "data.io", "read_image": "data.io",
    "robust_normalize": "data.intensity", "lumbar_parameters": "anatomy.angles",
    "quality_flags": "qc", "predict_files": "predict", "TrainConfig": "training",
    "train_pipeline": "training", "evaluate": "evaluation",
}


def test_every_public_name_resolves_to_its_submodule_object() -> None:
    import importlib

    assert set(sl.__all__) - {"__version__"} == set(DEFINED_IN)
    for name, module in DEFINED_IN.items():
        assert getattr(sl, name) is getattr(
            importlib.import_module(f"spinelandmarks.{module}"), name), name
    assert sl.__version__ == importlib.import_module("spinelandmarks._version").__version__
    assert set(sl.__all__) <= set(dir(sl))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Pipeline'"):
        sl.Pipeline  # noqa: B018


def test_all_lists_exactly_the_lazy_names() -> None:
    assert set(sl.__all__) == {*sl._EXPORTS, "__version__"}


@pytest.mark.parametrize(("old", "new", "name"), [
    ("pipeline", "inference", "SpineLandmarkPipeline"),
    ("clinical_evaluation", "evaluation.clinical", "evaluate_clinical"),
    ("agreement", "evaluation.agreement", "continuous_agreement"),
    ("mask_metrics", "evaluation.masks", "dice"),
    ("report", "evaluation.report", "write_report"),
    ("data.synthetic", "phantoms", "generate_phantom"),
    ("data.projection", "phantoms.projection", "generate_projection_phantom"),
    ("data.outline", "phantoms.outline", "generate_outline_phantom"),
    ("measurements", "anatomy.measurements", "height_loss"),
    ("alignment", "anatomy.alignment", "sagittal_alignment"),
])
def test_a_moved_module_still_works_for_one_release_and_says_where_it_went(
        old: str, new: str, name: str) -> None:
    import importlib

    sys.modules.pop(f"spinelandmarks.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"import from spinelandmarks.{new}"):
        module = importlib.import_module(f"spinelandmarks.{old}")
    assert getattr(module, name) is getattr(importlib.import_module(f"spinelandmarks.{new}"),
                                            name)


def test_measurement_names_left_evaluation_with_a_warning() -> None:
    import spinelandmarks.measurement_table as table
    from spinelandmarks import evaluation

    with pytest.warns(DeprecationWarning, match="spinelandmarks.measurement_table"):
        assert evaluation.write_measurements_csv is table.write_measurements_csv
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        evaluation.nothing  # noqa: B018


def test_clinical_definitions_left_metrics_with_a_warning() -> None:
    from spinelandmarks import metrics
    from spinelandmarks.anatomy import angles, vertebrae

    with pytest.warns(DeprecationWarning, match="spinelandmarks.anatomy"):
        assert metrics.schema_parameters is angles.schema_parameters
    with pytest.warns(DeprecationWarning, match="spinelandmarks.anatomy"):
        assert metrics.level_centres is vertebrae.level_centres
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        metrics.nothing  # noqa: B018
