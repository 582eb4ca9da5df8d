"""Self-training on the unlabeled archive: pseudo-label filtering, and ``train --unlabeled``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spinelandmarks.adaptation import self_training as st
from spinelandmarks.adaptation.self_training import (
    SelfTrainingConfig,
    decide,
    mirror_back,
    mixed_dataset,
    pseudo_label,
    view_disagreement,
    write_pseudo_dataset,
)
from spinelandmarks.cli import main
from spinelandmarks.data.annotations import read_coco
from spinelandmarks.data.io import Radiograph
from spinelandmarks.inference import SpineResult
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

H, W = 100, 80
P = S.num_points


def result(points: np.ndarray, needs_review: bool = False, error: str | None = None,
           source: str = "x.png", qc: dict[str, list[str]] | None = None) -> SpineResult:
    return SpineResult(source=source, image_size=(H, W), pixel_spacing=None, points=points,
                       points_step1=points.copy(), point_scores=np.ones(P),
                       level_scores=np.ones(S.num_levels), needs_review=needs_review,
                       error=error, qc=qc or {})


def column(x0: float = 30.0) -> np.ndarray:
    """(P, 2) points inside the image: x0 + 0.5 * i, y from 5 to 95."""
    return np.stack([x0 + 0.5 * np.arange(P), np.linspace(5.0, 95.0, P)], axis=1)


def mirrored_of(points: np.ndarray) -> np.ndarray:
    """What a perfectly consistent teacher predicts on the mirrored image."""
    return np.stack([W - points[:, 0], points[:, 1]], axis=1)


def test_mirror_back_and_disagreement_by_hand() -> None:
    pts = np.array([[10.0, 20.0], [79.5, 1.0]])
    np.testing.assert_allclose(mirror_back(pts, 80), [[70.0, 20.0], [0.5, 1.0]])
    np.testing.assert_allclose(mirror_back(mirror_back(pts, 80), 80), pts)
    assert view_disagreement(pts, pts + np.array([[3.0, 4.0], [0.0, 1.0]])) == 5.0
    assert view_disagreement(pts, np.array([[10.0, 20.0], [np.nan, 1.0]])) == float("inf")


def test_a_prediction_that_fails_qc_is_never_a_training_target() -> None:
    cfg = SelfTrainingConfig()
    pts = column()
    # both views agree exactly, every point found and inside: only the QC verdict differs
    assert decide(result(pts), result(mirrored_of(pts)), cfg) == ("kept", 0.0)
    assert decide(result(pts, needs_review=True), result(mirrored_of(pts)), cfg)[0] \
        == "needs_review"
    assert decide(result(pts, error="unreadable"), result(mirrored_of(pts)), cfg)[0] \
        == "unreadable"
    missing = pts.copy()
    missing[-2:] = np.nan
    assert decide(result(missing), result(mirrored_of(missing)), cfg)[0] == "incomplete"
    outside = pts.copy()
    outside[0, 1] = H + 1.0
    assert decide(result(outside), result(mirrored_of(outside)), cfg)[0] == "outside_image"


def test_only_the_ignored_flags_let_a_flagged_prediction_through() -> None:
    pts, cfg = column(), SelfTrainingConfig()
    mirrored = result(mirrored_of(pts))
    step1_only = result(pts, needs_review=True, qc={"steps_disagree": ["l1_s1_lordosis"]})
    assert decide(step1_only, mirrored, cfg) == ("kept", 0.0)
    also = result(pts, needs_review=True, qc={"steps_disagree": ["sacral_slope"],
                                              "overlap": ["L5", "S1"]})
    assert decide(also, mirrored, cfg)[0] == "needs_review"
    strict = SelfTrainingConfig(ignored_flags=())
    assert decide(step1_only, mirrored, strict)[0] == "needs_review"
    with pytest.raises(ValueError, match=r"unknown QC flag\(s\) steps_disagre;"):
        SelfTrainingConfig(ignored_flags=("steps_disagre",))


def test_disagreeing_views_are_dropped_at_the_tolerance() -> None:
    cfg = SelfTrainingConfig(flip_tolerance=0.01)  # 1 % of the longer side: 1.0 px here
    pts = column()
    off = mirrored_of(pts)
    off[3, 1] += 1.0  # one point 1.0 px away in the other view: at the tolerance, kept
    assert decide(result(pts), result(off), cfg) == ("kept", 1.0)
    off[3, 1] += 0.5  # 1.5 px: dropped
    assert decide(result(pts), result(off), cfg) == ("views_disagree", 1.5)
    lost = mirrored_of(pts)
    lost[0] = np.nan  # the mirrored view misses a point
    assert decide(result(pts), result(lost), cfg)[0] == "views_disagree"
    failed = SpineResult.failed("x.png (mirrored)", S, "boom")
    assert decide(result(pts), failed, cfg)[0] == "views_disagree"


class MarkerTeacher:
    """A stand-in pipeline: every point on the image's brightest pixel centre, shifted by
    ``mirror_shift`` px in x on mirrored inputs; flags images whose marker is in the top half."""

    schema = S

    def __init__(self, mirror_shift: float = 0.0) -> None:
        self.mirror_shift = mirror_shift

    def predict(self, inputs: list[Radiograph], batch_size: int = 8) -> list[SpineResult]:
        out = []
        for rad in inputs:
            y, x = np.unravel_index(int(np.argmax(rad.pixels)), rad.pixels.shape)
            shift = self.mirror_shift if "(mirrored)" in rad.source else 0.0
            pts = np.tile([x + 0.5 + shift, y + 0.5], (P, 1)).astype(float)
            res = result(pts, needs_review=bool(y < rad.height / 2), source=rad.source)
            res.image_size = rad.pixels.shape
            out.append(res)
        return out


def write_marker_images(folder: Path, markers: list[tuple[int, int]]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for i, (x, y) in enumerate(markers):
        img = np.zeros((H, W), np.uint8)
        img[y, x] = 255
        Image.fromarray(img).save(folder / f"m{i}.png")
        paths.append(folder / f"m{i}.png")
    return paths


def test_pseudo_label_maps_the_mirrored_view_back_and_writes_only_kept_ones(
        tmp_path: Path) -> None:
    paths = write_marker_images(tmp_path / "archive", [(10, 70), (60, 20), (40, 90)])
    paths.append(tmp_path / "archive" / "broken.png")
    paths[-1].write_bytes(b"not an image")
    labels = pseudo_label(MarkerTeacher(), paths,  # type: ignore[arg-type]
                          SelfTrainingConfig(batch_size=2))
    assert [lab.reason for lab in labels] == ["kept", "needs_review", "kept", "unreadable"]
    assert labels[0].disagreement_px == 0.0  # (10.5, 70.5) in both views, once mapped back
    np.testing.assert_allclose(labels[0].result.points[0], [10.5, 70.5])
    out = write_pseudo_dataset(labels, S, tmp_path / "pseudo")
    recs = read_coco(out / "annotations.json", S, root=out, validate=True)
    assert [r.file_name for r in recs] == ["images/000000_m0.png", "images/000002_m2.png"]
    np.testing.assert_allclose(recs[1].points, np.tile([40.5, 90.5], (P, 1)))
    assert (recs[0].visibility == 2).all()
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 4 and report["kept"] == 2
    assert report["dropped"] == {"unreadable": 1, "needs_review": 1, "incomplete": 0,
                                 "outside_image": 0, "views_disagree": 0}
    # a teacher whose mirrored view lands 2 px off: 2 > 1 % of 100 px, every image dropped
    shifted = pseudo_label(MarkerTeacher(mirror_shift=2.0), paths[:1],  # type: ignore[arg-type]
                           SelfTrainingConfig())
    assert shifted[0].reason == "views_disagree" and shifted[0].disagreement_px == 2.0


def test_mixed_dataset_repeats_the_annotated_images(tmp_path: Path) -> None:
    paths = write_marker_images(tmp_path / "archive", [(10, 70), (40, 90)])
    pseudo = write_pseudo_dataset(pseudo_label(MarkerTeacher(), paths),  # type: ignore[arg-type]
                                  S, tmp_path / "pseudo")
    annotated = write_pseudo_dataset(pseudo_label(MarkerTeacher(), paths[:1]),  # type: ignore[arg-type]
                                     S, tmp_path / "annotated")
    mixed = mixed_dataset(annotated, pseudo, tmp_path / "mixed", S, repeats=3)
    recs = read_coco(mixed / "annotations.json", S, root=mixed, validate=True)
    names = [r.file_name for r in recs]
    assert names == ["pseudo/images/000000_m0.png", "pseudo/images/000001_m1.png",
                     *(f"annotated_{j}/images/000000_m0.png" for j in range(3))]
    assert sorted(r.image_id for r in recs) == [1, 2, 3, 4, 5]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="annotated_repeats must be >= 1"):
        SelfTrainingConfig(annotated_repeats=0)
    with pytest.raises(ValueError, match=r"teacher_share must be in \(0, 1\)"):
        SelfTrainingConfig(teacher_share=1.0)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        SelfTrainingConfig(rounds=0)


def test_train_unlabeled_refuses_without_init_from_or_data(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "train needs DATA" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--unlabeled", str(tmp_path)]) == 2
    assert "--unlabeled needs --init-from PIPELINE" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--unlabeled-rounds", "2"]) == 2
    assert "--unlabeled-rounds needs --unlabeled" in capsys.readouterr().err


#: One epoch of the landmark model alone (a pipeline needs no detector or refiner): every
#: teacher and student of these tests trains in seconds.
TINY = ["--max-epochs", "1", "--image-size", "128x96", "--stages", "landmark",
        "--backbone", "resnet_lite", "--batch-size", "4", "--workers", "0", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny source pipeline, a tiny annotated set and an unlabeled folder."""
    root = tmp_path_factory.mktemp("adapt")
    data, archive, run = root / "data", root / "archive", root / "source"
    assert main(["synth", str(data), "--num-images", "4", "--seed", "1", "--size", "256"]) == 0
    assert main(["synth", str(archive), "--num-images", "4", "--seed", "7", "--size",
                 "256"]) == 0
    assert main(["train", str(data), "--out", str(run), *TINY]) == 0
    return data, archive / "images", run / "pipeline"


@pytest.mark.slow
def test_train_unlabeled_with_annotated_images(source: tuple[Path, Path, Path],
                                               tmp_path: Path) -> None:
    data, archive, pipeline = source
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--init-from", str(pipeline),
                 "--unlabeled", str(archive), *TINY]) == 0
    assert (run / "teacher" / "pipeline" / "pipeline.json").is_file()
    assert (run / "pipeline" / "pipeline.json").is_file()
    report = json.loads((run / "pseudo_labels" / "report.json").read_text())
    assert report["images"] == 4 and report["kept"] + sum(report["dropped"].values()) == 4
    kept = read_coco(run / "pseudo_labels" / "annotations.json", S)
    assert len(kept) == report["kept"]
    reasons = {Path(e["path"]).name: e["reason"] for e in report["per_image"]}
    assert all(reasons[Path(r.file_name).name.split("_", 1)[1]] == "kept" for r in kept)
    mixed = read_coco(run / "adapt_data" / "annotations.json", S)
    annotated = [r for r in mixed if r.file_name.startswith("annotated_")]
    assert len(annotated) == 4 * SelfTrainingConfig().annotated_repeats
    adaptation = json.loads((run / "adaptation.json").read_text())
    assert adaptation["annotated"] == 4 and adaptation["teacher"].endswith("teacher/pipeline")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["init_from"] == str(run / "teacher" / "pipeline")


@pytest.mark.slow
def test_train_unlabeled_without_annotated_images(source: tuple[Path, Path, Path],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, archive, pipeline = source
    # a one-epoch teacher passes QC nowhere: adapting from the archive alone is refused
    assert main(["train", "--out", str(tmp_path / "none"), "--init-from", str(pipeline),
                 "--unlabeled", str(archive), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no pseudo-label of the 4 unlabeled images passed QC" in err
    assert "annotate a few images" in err

    # a teacher whose predictions all pass (the filter is tested above): the student trains
    # on pseudo-labels alone, from DATA left out or an empty dataset
    def keep(res: Any, mirrored: Any, cfg: SelfTrainingConfig) -> tuple[str, float]:
        h, w = res.image_size
        res.points[:] = np.clip(np.nan_to_num(res.points, nan=1.0), 1.0, min(h, w) - 1.0)
        return "kept", 0.0

    monkeypatch.setattr(st, "decide", keep)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "annotations.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": []}))
    for name, data in (("alone", []), ("empty", [str(empty)])):
        run = tmp_path / name
        assert main(["train", *data, "--out", str(run), "--init-from", str(pipeline),
                     "--unlabeled", str(archive), *TINY]) == 0
        assert not (run / "teacher").exists()
        adaptation = json.loads((run / "adaptation.json").read_text())
        assert adaptation["annotated"] == 0 and adaptation["pseudo_labels_kept"] == 4
        assert adaptation["validation"] == "a split of the pseudo-labelled images only " \
                                           "(no annotated image)"
        teacher = json.loads((pipeline / "pipeline.json").read_text())["qc_thresholds"]
        student = json.loads((run / "pipeline" / "pipeline.json").read_text())
        assert student["qc_thresholds"] == teacher  # not fitted on pseudo-labels
        assert len(read_coco(run / "adapt_data" / "annotations.json", S)) == 4
    # two rounds: the first round's student labels the archive again for the second
    run = tmp_path / "rounds"
    assert main(["train", "--out", str(run), "--init-from", str(pipeline), "--unlabeled",
                 str(archive), "--unlabeled-rounds", "2", *TINY]) == 0
    assert (run / "round1" / "pipeline" / "pipeline.json").is_file()
    assert json.loads((run / "pseudo_labels_round2" / "report.json").read_text())["kept"] == 4
    adaptation = json.loads((run / "adaptation.json").read_text())
    assert adaptation["teacher"] == str(run / "round1" / "pipeline")
    assert json.loads((run / "config.json").read_text())["init_from"] == \
        str(run / "round1" / "pipeline")
    teacher = json.loads((pipeline / "pipeline.json").read_text())["qc_thresholds"]
    for student in (run / "round1" / "pipeline", run / "pipeline"):
        assert json.loads((student / "pipeline.json").read_text())["qc_thresholds"] == teacher
