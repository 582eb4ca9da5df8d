"""Trust across reruns and the correction loop (issue 28): identity by content, no silent
partial answers, refusals with a way forward. Each probe of the issue is a failure case here,
asserting its message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from spinelandmarks.cli import main
from spinelandmarks.content_digest import pipeline_digest, short


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust") / "data"
    assert main(["synth", str(root), "--num-images", "3", "--seed", "5", "--size", "128"]) == 0
    return root


def _tiny_pipeline(path: Path, seed: int = 0) -> Path:
    from spinelandmarks.models import LandmarkModel
    from spinelandmarks.pipeline import SpineLandmarkPipeline

    torch.manual_seed(seed)
    pipe = SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(64, 48)))
    return pipe.save(path)


# -- 1. identity by content ------------------------------------------------------------------
def test_predict_refuses_a_pipeline_saved_anew_at_the_same_path(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipe_dir = _tiny_pipeline(tmp_path / "pipeline", seed=0)
    out = tmp_path / "pred"
    cmd = ["predict", str(pipe_dir), str(data / "images"), "--out", str(out),
           "--accelerator", "cpu", "--no-overlays"]
    assert main(cmd) == 0
    old = pipeline_digest(pipe_dir)
    assert json.loads((out / "predict.json").read_text())["pipeline_sha256"] == old
    _tiny_pipeline(pipe_dir, seed=1)  # saved anew at the same path: other weights
    new = pipeline_digest(pipe_dir)
    assert new != old
    capsys.readouterr()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert f"holds predictions of pipeline {short(old)}" in err
    assert f"is now pipeline {short(new)}" in err and "--overwrite" in err
    assert main([*cmd, "--overwrite"]) == 0
    assert json.loads((out / "predict.json").read_text())["pipeline_sha256"] == new
    keys = [json.loads(line)["key"] for line in (out / "predictions.jsonl").open()]
    assert len(keys) == 3 and all(k.endswith(f"|pipeline={short(new)}") for k in keys)
    # the same content at another path is the same pipeline: resumed, nothing predicted
    moved = tmp_path / "moved"
    os.rename(pipe_dir, moved)
    assert main(["predict", str(moved), *cmd[2:]]) == 0


def test_train_identity_follows_the_content_of_its_sources(data: Path, tmp_path: Path) -> None:
    from spinelandmarks.training import RunMismatchError, TrainConfig, _check_run, run_identity

    source = _tiny_pipeline(tmp_path / "source" / "pipeline")
    cfg = TrainConfig(init_from=str(tmp_path / "source"))  # a run directory works too
    run = tmp_path / "run"
    run.mkdir()
    before = run_identity(data, cfg)
    (run / "config.json").write_text(json.dumps({"identity": before}))
    _check_run(run, run_identity(data, cfg), overwrite=False)  # unchanged: resumed
    _tiny_pipeline(source, seed=3)  # the source saved anew in place
    with pytest.raises(RunMismatchError, match=r"init_from_sha256: \w{12} in the run, \w{12} "
                                               r"now \(the --init-from pipeline changed"):
        _check_run(run, run_identity(data, cfg), overwrite=False)
    first = sorted((data / "images").iterdir())[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    with pytest.raises(RunMismatchError, match=r"images changed in place"):
        _check_run(run, run_identity(data, TrainConfig()), overwrite=False)
