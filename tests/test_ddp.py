"""Multi-process training with Lightning DDP (2 CPU processes, gloo): metrics reduce over both."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch.distributed as dist

from spinelandmarks.data.datamodule import SpineDataModule
from spinelandmarks.models import LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_dataset


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


# Runs the CLI with torch.load, save_module and SpineLandmarkPipeline.save traced: one JSON line
# per event (rank, path, sha256 of the file at that moment). Lightning's ddp launcher starts
# rank 1 by running this same script again, so both ranks are traced.
_TRACED_CLI = '''
import hashlib, json, os, sys
from pathlib import Path

import torch
import torch.distributed as dist

import spinelandmarks.training as training
from spinelandmarks.cli import main
from spinelandmarks.inference import SpineLandmarkPipeline

LOG = Path(os.environ["TRACE_DIR"]) / f"{os.getpid()}.jsonl"


def rank():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("LOCAL_RANK", "0"))


def sha(path):
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def record(event, path):
    with LOG.open("a") as f:
        f.write(json.dumps({"rank": rank(), "event": event, "path": str(Path(path).resolve()),
                            "sha": sha(path)}) + "\\n")


torch_load = torch.load
def traced_load(f, *args, **kwargs):
    path = f if isinstance(f, (str, os.PathLike)) else getattr(f, "path", None)
    if path is not None:  # Lightning opens checkpoints with fsspec: a file object
        record("load", path)
    return torch_load(f, *args, **kwargs)
torch.load = traced_load

save_module = training.save_module
def traced_save_module(module, path):
    save_module(module, path)
    record("save", path)
training.save_module = traced_save_module

pipeline_save = SpineLandmarkPipeline.save
def traced_pipeline_save(self, directory):
    out = pipeline_save(self, directory)
    for f in sorted(Path(out).iterdir()):
        record("save", f)
    return out
SpineLandmarkPipeline.save = traced_pipeline_save

record("start", sys.argv[0])
sys.exit(main())
'''


def _train_two_ranks(script: Path, data: Path, run: Path, trace: Path,
                     *extra: str) -> list[dict[str, object]]:
    import json
    import os
    import subprocess
    import sys

    trace.mkdir(exist_ok=True)
    for old in trace.iterdir():
        old.unlink()
    env = {**os.environ, "TRACE_DIR": str(trace)}
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE"):
        env.pop(key, None)
    args = ["--max-epochs", "1", "--image-size", "128x96", "--crop-size", "48x48",
            "--backbone", "resnet_lite", "--detector-backbone", "resnet_lite",
            "--small-detector", "--batch-size", "2", "--workers", "0",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", *extra]
    proc = subprocess.run([sys.executable, str(script), "train", str(data), "--out", str(run),
                           *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return [json.loads(line) for f in sorted(trace.iterdir())
            for line in f.read_text().splitlines()]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_train_cli_with_two_cpu_ranks_saves_once_and_resumes(tmp_path: Path) -> None:
    import torch

    from spinelandmarks.inference import SpineLandmarkPipeline

    data = generate_dataset(tmp_path / "data", 8, seed=1, config=PhantomConfig(long_side=256))
    script = tmp_path / "traced_cli.py"
    script.write_text(_TRACED_CLI)
    run, trace = tmp_path / "run", tmp_path / "trace"

    events = _train_two_ranks(script, data, run, trace)
    assert sorted(e["rank"] for e in events if e["event"] == "start") == [0, 1]
    assert {e["rank"] for e in events if e["event"] == "load"} == {0}  # rank 1 loads nothing
    saves = [e for e in events if e["event"] == "save"]
    assert {e["rank"] for e in saves} == {0}  # rank 1 writes nothing
    written = {str(e["path"]): e["sha"] for e in saves}
    for stage in ("detector", "landmark", "refiner"):
        assert str((run / stage / "best.pt").resolve()) in written
    pipeline_files = sorted((run / "pipeline").iterdir())
    assert {f.name for f in pipeline_files} == {"pipeline.json", "landmark.pt", "refiner.pt",
                                                "detector.pt", "shift.pt"}
    for f in pipeline_files:  # the saved pipeline is what rank 0 wrote, byte for byte
        assert written[str(f.resolve())] == _sha(f)
    for e in events:  # every load read a complete file that rank 0 had written
        if e["event"] == "load" and e["path"] in written:
            assert e["sha"] == written[str(e["path"])]
    pipe = SpineLandmarkPipeline.load(run / "pipeline")
    best = torch.load(run / "landmark" / "best.pt", weights_only=True)["state_dict"]
    for key, value in pipe.landmark_model.state_dict().items():
        assert torch.equal(value, best[key])

    # A run killed while the refiner trained: its best.pt and the pipeline not yet written.
    (run / "refiner" / "best.pt").unlink()
    for f in pipeline_files:
        f.unlink()
    stamps = {s: (run / s / "best.pt").stat().st_mtime_ns for s in ("detector", "landmark")}
    events = _train_two_ranks(script, data, run, trace, "--refiner-epochs", "2")
    for stage, stamp in stamps.items():  # finished stages are kept
        assert (run / stage / "best.pt").stat().st_mtime_ns == stamp
    ckpt = torch.load(run / "refiner" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1  # resumed after epoch 0 on both ranks, trained epoch 1
    resumed = [e for e in events if e["event"] == "load" and e["path"].endswith("last.ckpt")]
    assert {e["rank"] for e in resumed} == {0, 1} and all(e["sha"] for e in resumed)
    assert {e["rank"] for e in events if e["event"] == "save"} == {0}
    assert SpineLandmarkPipeline.load(run / "pipeline").refiner is not None
