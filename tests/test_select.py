"""``select``: uncertainty by hand, the diversity of the greedy k-center, the command line
with pre-annotations (tiny untrained networks: nothing is trained)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelandmarks.adaptation import select as sel
from spinelandmarks.adaptation.select import Selection, diverse_order, select_images, uncertainty
from spinelandmarks.cli import main
from spinelandmarks.data.annotation_tools import read_cvat
from spinelandmarks.data.io import write_png16
from spinelandmarks.inference import SpineLandmarkPipeline, SpineResult
from spinelandmarks.models import LandmarkModel
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.schema import LUMBAR_SAGITTAL as S


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    return [i for i, _ in got] == [i for i, _ in want] and [d for _, d in got] == \
        pytest.approx([d for _, d in want])


def test_diverse_order_by_hand() -> None:
    x = torch.tensor([[0.0], [1.0], [10.0]])
    # equal weights after the first: the farthest point next, then the rest
    assert _same(diverse_order(x, [1.0, 0.0, 0.0], 3), [(0, math.inf), (2, 10.0), (1, 1.0)])
    # uncertainty weighs the distance: (1 + 8) x 1 for index 1 against (1 + 0) x 8 for 2
    y = torch.tensor([[0.0], [1.0], [8.0]])
    assert _same(diverse_order(y, [9.0, 8.0, 0.0], 3), [(0, math.inf), (1, 1.0), (2, 7.0)])
    assert [i for i, _ in diverse_order(x, [0.0, 9.0, 0.0], 3)] == [1, 2, 0]
    assert len(diverse_order(x, [0, 0, 0], 10)) == 3


def test_near_duplicates_of_one_failure_are_not_all_picked() -> None:
    g = torch.Generator().manual_seed(0)
    failure = torch.randn(1, 16, generator=g)
    dupes = failure + 1e-3 * torch.randn(4, 16, generator=g)  # four copies, very uncertain
    others = torch.randn(4, 16, generator=g)  # four different, mildly uncertain
    feats = torch.cat([dupes, others])
    picks = [i for i, _ in diverse_order(feats, [8, 8, 8, 8, 1, 1, 1, 1], 5)]
    assert picks[0] < 4  # the failure comes first
    assert sum(i < 4 for i in picks) == 1 and sorted(picks[1:]) == [4, 5, 6, 7]


def _spine(height: float = 20.0, width: float = 30.0) -> np.ndarray:
    """(22, 2) rectangles facing right, L1 at the top, S1's plate below L5."""
    pts = []
    for lv in range(5):
        top = 50.0 + lv * (height + 10.0)
        pts += [(100 + width, top), (100, top), (100, top + height), (100 + width, top + height)]
    top = 50.0 + 5 * (height + 10.0)
    pts += [(100 + width, top), (100, top)]
    return np.array(pts)


@pytest.fixture(scope="module")
def pipe() -> SpineLandmarkPipeline:
    torch.manual_seed(0)
    return SpineLandmarkPipeline(LandmarkModel(backbone="resnet_lite", input_size=(128, 96)))


def test_uncertainty_by_hand(pipe: SpineLandmarkPipeline) -> None:
    pts = _spine()
    pts[:4] = np.nan  # L1 missing
    step1 = pts.copy()
    step1[8:12, 1] -= 5.0  # L3: step 2 moved it by 5 px = 0.25 body heights (ratio 0.5)
    scores = np.full(22, 1 / (1 + 3.5))  # spread 3.5 px = 0.175 H (ratio 0.5)
    scores[13] = 1 / (1 + 14.0)  # one L4 point: 0.7 H, ratio 2
    scores[:4] = np.nan
    res = SpineResult("x.png", (400, 300), None, pts, step1, scores, np.full(6, np.nan),
                      missing_levels=["L1"], qc={"overlap": ["L5", "S1"],
                                                 "angle_range": ["sacral_slope"]},
                      parameters={"sacral_slope": 30.0}, parameters_step1={"sacral_slope": 31.0},
                      level_boxes=np.full((6, 4), np.nan))
    score, reason = uncertainty(res, pipe)
    assert pipe.options.qc_thresholds.max_spread_frac == 0.35
    assert score == pytest.approx(3 + 1 + 2.0)
    assert reason == ("3 QC flag(s) (overlap: L5 S1; angle_range: sacral_slope), missing L1, "
                      "heatmap spread 2.00 x its threshold")
    calm = SpineResult("y.png", (400, 300), None, _spine(), _spine(), np.full(22, 0.5),
                       np.full(6, np.nan), level_boxes=np.full((6, 4), np.nan))
    assert uncertainty(calm, pipe)[0] == pytest.approx((1.0 / 20) / 0.35)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three near-identical copies of one radiograph, then three other radiographs."""
    d = tmp_path_factory.mktemp("archive")
    cfg = PhantomConfig(long_side=256)
    base = generate_phantom(0, cfg)[0]
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(d / f"dup{i}.png")
        write_png16(files[-1], np.clip(base + rng.normal(0, 1e-3, base.shape), 0, 1))
    for s in (1, 2, 3):
        files.append(d / f"other{s}.png")
        write_png16(files[-1], generate_phantom(s, cfg)[0])
    return files


def test_select_images_spreads_its_choice(pipe: SpineLandmarkPipeline, archive: list[Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(result: SpineResult, pipeline: SpineLandmarkPipeline) -> tuple[float, str]:
        return (9.0, "copy") if "dup" in result.source else (1.0, "other")

    monkeypatch.setattr(sel, "uncertainty", fake)
    chosen = select_images(pipe, [*archive, archive[0].with_name("missing.png")], 4)
    assert all(isinstance(c, Selection) for c in chosen)
    names = [c.path.name for c in chosen]
    assert names[0].startswith("dup") and chosen[0].reason == "copy"
    assert sum(n.startswith("dup") for n in names) == 1  # not four copies of one failure
    assert sorted(names[1:]) == ["other1.png", "other2.png", "other3.png"]
    assert [c.rank for c in chosen] == [1, 2, 3, 4] and chosen[1].distance > 0
    assert chosen[0].result is not None and chosen[0].result.source == str(archive[int(
        names[0][3])])
    with pytest.raises(ValueError, match="n must be at least 1"):
        select_images(pipe, archive, 0)


def test_cli_select_writes_paths_and_pre_annotations(pipe: SpineLandmarkPipeline,
                                                     archive: list[Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    run = pipe.save(tmp_path / "pipe")
    listing = tmp_path / "to_annotate.txt"
    folder = str(archive[0].parent)
    assert main(["select", str(run), folder, "--n", "3", "--out", str(listing),
                 "--export", "cvat", "--export-out", str(tmp_path / "cvat"),
                 "--accelerator", "cpu"]) == 0
    paths = listing.read_text().splitlines()
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths)
    out = capsys.readouterr().out
    assert "wrote 3 of 6 image paths" in out and "  1. " in out
    recs = read_cvat(tmp_path / "cvat" / "annotations.xml", S)  # CVAT for images 1.1
    assert sorted(r.file_name for r in recs) == sorted(Path(p).name for p in paths)
    assert all((r.visibility > 0).all() for r in recs)  # every point pre-annotated
    assert main(["select", str(run), folder, "--n", "2", "--out", str(listing),
                 "--export", "label-studio", "--export-out", str(tmp_path / "ls")]) == 0
    tasks = json.loads((tmp_path / "ls" / "label_studio_tasks.json").read_text())
    assert [t["data"]["file_name"] for t in tasks] == [
        Path(p).name for p in listing.read_text().splitlines()]
    assert all(t["predictions"][0]["result"] for t in tasks)
    assert main(["select", str(run), folder, "--n", "2", "--out", str(listing),
                 "--export", "cvat"]) == 2
    assert "--export needs --export-out" in capsys.readouterr().err
