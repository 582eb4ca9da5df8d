"""Users' subclasses of the task modules: saved by import path, loaded in a fresh process,
trained and predicted with through the command line; classes of the wrong kind refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.cli import main
from spinelandmarks.inference import SpineLandmarkPipeline, load_module, save_module
from spinelandmarks.models import CropRefiner, LandmarkModel, LandmarkTask
from spinelandmarks.models.classes import ClassPathError, class_path, import_class
from spinelandmarks.training import TrainConfig, stage_class

REPO = Path(__file__).resolve().parents[1]

#: A user's module: a subclass with one extra hyper-parameter and an overridden hook.
USER_MODULE = textwrap.dedent('''
    from typing import Any

    from spinelandmarks.models import LandmarkModel


    class WeightedModel(LandmarkModel):
        """LandmarkModel whose loss is scaled by ``point_weight``."""

        def __init__(self, point_weight: float = 2.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.save_hyperparameters()

        def compute_loss(self, batch):
            loss, terms, preds = super().compute_loss(batch)
            return loss * self.hparams["point_weight"], terms, preds
    ''')

TINY_TRAIN = ["--max-epochs", "1", "--image-size", "128x96", "--backbone", "resnet_lite",
              "--batch-size", "4", "--workers", "0", "--accelerator", "cpu"]


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``user_tasks.py`` in a folder on ``sys.path`` (as PYTHONPATH puts it there)."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "user_tasks.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("user_tasks", None)
    return folder


def fresh_python(code: str, *paths: Path) -> str:
    """Run ``code`` in a new interpreter with ``paths`` and this repository on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_class_path_names_module_and_class() -> None:
    assert class_path(LandmarkModel) == "spinelandmarks.models.landmark:LandmarkModel"
    assert import_class("spinelandmarks.models.landmark:CropRefiner", LandmarkTask) is CropRefiner
    assert import_class("spinelandmarks.models.CropRefiner", CropRefiner) is CropRefiner


def test_subclass_saves_and_loads_in_a_fresh_process(user_module: Path, tmp_path: Path) -> None:
    from user_tasks import WeightedModel  # type: ignore[import-not-found]

    torch.manual_seed(0)
    model = WeightedModel(point_weight=3.5, backbone="resnet_lite", input_size=(128, 96))
    pipe = SpineLandmarkPipeline(model)
    saved = pipe.save(tmp_path / "pipe")
    payload = torch.load(saved / "landmark.pt", weights_only=True)
    assert payload["class_path"] == "user_tasks:WeightedModel"
    image = np.random.default_rng(0).random((160, 120)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    expected = pipe.predict(image)[0].points
    out = fresh_python(textwrap.dedent(f"""
        import json, numpy as np
        from spinelandmarks.inference import SpineLandmarkPipeline
        pipe = SpineLandmarkPipeline.load({str(saved)!r})
        lm = pipe.landmark_model
        points = pipe.predict(np.load({str(tmp_path / "image.npy")!r}))[0].points
        print(json.dumps({{"class": type(lm).__module__ + ":" + type(lm).__name__,
                          "point_weight": lm.hparams["point_weight"],
                          "input_size": list(lm.hparams["input_size"]),
                          "points": points.tolist()}}))
        """), user_module)
    got = json.loads(out.splitlines()[-1])
    assert got["class"] == "user_tasks:WeightedModel"
    assert got["point_weight"] == 3.5 and got["input_size"] == [128, 96]
    np.testing.assert_allclose(np.array(got["points"]), expected, atol=1e-4)


def test_files_without_a_class_path_still_load(tmp_path: Path) -> None:
    model = LandmarkModel(backbone="resnet_lite", input_size=(128, 96))
    old = {"class": "LandmarkModel", "hyper_parameters": dict(model.hparams),
           "state_dict": model.state_dict(), "version": "0.1.0"}  # as version 0.1 wrote it
    torch.save(old, tmp_path / "old.pt")
    loaded = load_module(tmp_path / "old.pt")
    assert type(loaded) is LandmarkModel
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def _payload_with(tmp_path: Path, path: str) -> Path:
    model = LandmarkModel(backbone="resnet_lite", input_size=(128, 96))
    file = tmp_path / "model.pt"
    save_module(model, file)
    payload = torch.load(file, weights_only=True)
    payload["class_path"] = path
    torch.save(payload, file)
    return file


def test_a_class_that_is_not_a_task_module_is_refused(tmp_path: Path) -> None:
    file = _payload_with(tmp_path, "collections:OrderedDict")
    with pytest.raises(ValueError, match=r"model\.pt: 'collections:OrderedDict' is not a "
                                         r"subclass of LandmarkTask; only spinelandmarks task"):
        load_module(file)
    # in a pipeline each network must be of its own kind
    pipe_dir = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite")).save(tmp_path / "p")
    save_module(CropRefiner(backbone="resnet_lite"), pipe_dir / "landmark.pt")
    with pytest.raises(ValueError, match=r"landmark\.pt: 'spinelandmarks\.models\.landmark:"
                                         r"CropRefiner' is a CropRefiner, not the LandmarkModel"):
        SpineLandmarkPipeline.load(pipe_dir)


def test_an_unimportable_class_names_the_module_to_install(tmp_path: Path) -> None:
    file = _payload_with(tmp_path, "no_such_package_zz.models:MyModel")
    with pytest.raises(ClassPathError) as err:
        load_module(file)
    assert str(err.value) == (
        f"{file}: class 'no_such_package_zz.models:MyModel' cannot be imported (No module "
        "named 'no_such_package_zz'); install the package that provides module "
        "'no_such_package_zz.models', or put the folder holding no_such_package_zz.models.py"
        " on PYTHONPATH")
    file = _payload_with(tmp_path, "spinelandmarks.models:NoSuchModel")
    with pytest.raises(ValueError, match=r"module 'spinelandmarks\.models' has no class "
                                         "'NoSuchModel'"):
        load_module(file)


def test_a_class_defined_in_a_function_warns_when_saved(tmp_path: Path) -> None:
    class Local(LandmarkModel):
        pass

    with pytest.warns(UserWarning, match="cannot be imported by another process"):
        save_module(Local(backbone="resnet_lite"), tmp_path / "local.pt")


def test_stage_classes_are_checked_before_training(user_module: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig(landmark_class="user_tasks:WeightedModel")
    assert stage_class("landmark", cfg).__name__ == "WeightedModel"
    assert stage_class("refiner", cfg) is CropRefiner
    with pytest.raises(ValueError, match="--refiner-class: 'user_tasks:WeightedModel' is not "
                                         "a subclass of CropRefiner"):
        stage_class("refiner", TrainConfig(refiner_class="user_tasks:WeightedModel"))
    # on the command line: refused with the message before any data is read
    code = main(["train", str(tmp_path / "no_data"), "--out", str(tmp_path / "run"),
                 "--landmark-class", "missing_user_module:Model"])
    assert code == 2
    assert "install the package that provides module 'missing_user_module'" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_train_a_subclass_then_predict_and_evaluate_in_a_fresh_process(
        user_module: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["synth", str(data), "--num-images", "6", "--seed", "5", "--size", "256"]) == 0
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--stages", "landmark",
                 "--landmark-class", "user_tasks:WeightedModel", *TINY_TRAIN]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["identity"]["landmark_class"] == "user_tasks:WeightedModel"
    payload = torch.load(run / "pipeline" / "landmark.pt", weights_only=True)
    assert payload["class_path"] == "user_tasks:WeightedModel"
    assert payload["hyper_parameters"]["point_weight"] == 2.0  # the subclass's default
    # a new process: the command line with the user's folder on PYTHONPATH
    out = tmp_path / "pred"
    fresh_python(textwrap.dedent(f"""
        import sys
        from spinelandmarks.cli import main
        code = main(["predict", {str(run)!r}, {str(data / "images")!r}, "--out", {str(out)!r},
                     "--accelerator", "cpu", "--no-overlays"])
        assert code in (0, 1), code  # 1: some radiographs flagged for review
        sys.exit(main(["evaluate", {str(out / "predictions.json")!r},
                       {str(data / "annotations.json")!r}, "--out", {str(tmp_path / "ev")!r}]))
        """), user_module)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["images"]) == 6
    assert (tmp_path / "ev").is_dir()
    # fine-tuning from it keeps the subclass when asked for it, and says how when not
    tuned = tmp_path / "tuned"
    assert main(["train", str(data), "--out", str(tuned), "--stages", "landmark",
                 "--init-from", str(run), "--landmark-class", "user_tasks:WeightedModel",
                 *TINY_TRAIN]) == 0
    assert type(load_module(tuned / "landmark" / "best.pt")).__name__ == "WeightedModel"
