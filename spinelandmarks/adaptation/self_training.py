"""Fine-tuning with the unlabeled archive of a new source: self-training on filtered
pseudo-labels (``spinelandmarks train --init-from PIPELINE --unlabeled DIR_OR_LIST``).

The recipe, in :func:`train_with_unlabeled`:

1. **Teacher.** With annotated images of the new source, the source pipeline is first
   fine-tuned on them alone (``RUN/teacher/``, a share of the time budget); without any, the
   source pipeline itself is the teacher.
2. **Pseudo-labels.** The teacher predicts every unlabeled image twice, as stored and
   mirrored left-right (:func:`pseudo_label`). A prediction becomes a training target only
   when the pipeline's QC raised no flag (but those of
   :attr:`SelfTrainingConfig.ignored_flags`), every point of the schema
   was found, and the two views agree: no point moves by more than
   :attr:`SelfTrainingConfig.flip_tolerance` of the image's longer side between them
   (:func:`decide`). The kept ones are written as a COCO dataset with a report of what was
   dropped and why (``RUN/pseudo_labels/``, :func:`write_pseudo_dataset`).
3. **Student.** The pipeline is fine-tuned from the teacher on the annotated images
   (repeated :attr:`~SelfTrainingConfig.annotated_repeats` times) and the pseudo-labelled ones
   together (``RUN/adapt_data/``, :func:`mixed_dataset`), with the existing datasets.

Without a validation set (``--val``) the student validates on a split of that mixed set, so
partly (without annotated images: only) on pseudo-labels; its QC thresholds are then the
teacher's rather than fitted on pseudo-labels that passed the teacher's QC by construction.
Names are anatomical (CONVENTIONS section 2), so a mirrored view keeps its point names and
only its x coordinates are mapped back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .._atomic import atomic_write_text
from ..data.annotations import ImageRecord, read_coco, write_coco
from ..data.io import Radiograph, read_image
from ..inference import SpineLandmarkPipeline, SpineResult
from ..qc import IMAGE_FLAGS, LEVEL_FLAGS
from ..schema import LandmarkSchema
from ..training import TrainConfig, train_pipeline

__all__ = ["PseudoLabel", "Reason", "SelfTrainingConfig", "decide", "mirror_back",
           "mixed_dataset", "pseudo_label", "train_with_unlabeled", "view_disagreement",
           "write_pseudo_dataset"]

_log = logging.getLogger(__name__)

#: Why a pseudo-label was kept or dropped.
Reason = Literal["kept", "unreadable", "needs_review", "incomplete", "outside_image",
                 "views_disagree"]


@dataclass(frozen=True)
class SelfTrainingConfig:
    """Settings of self-training on the unlabeled archive.

    Attributes
    ----------
    flip_tolerance : float
        Largest distance a point may move between the teacher's prediction of an image and of
        its mirror image (mapped back), as a fraction of the image's longer side, for the
        prediction to be kept.
    annotated_repeats : int
        Times each annotated image enters the student's training set (>= 1): a few annotated
        images weigh against many pseudo-labelled ones.
    teacher_share : float
        Share (0-1) of each stage's time budget that fine-tunes the teacher on the annotated
        images; the student trains for the rest. Unused without annotated images or budget.
    batch_size : int
        Radiographs per forward pass while pseudo-labelling.
    ignored_flags : tuple of str
        QC flags (:data:`~spinelandmarks.qc.LEVEL_FLAGS`, :data:`~spinelandmarks.qc.IMAGE_FLAGS`)
        that do not drop a pseudo-label. By default ``steps_disagree``: on a new source the
        step-1 network is the first to fail (it sees the whole, unfamiliar image), so its
        disagreement with step 2 says little about the step-2 points that become the targets;
        on the A -> B benchmark it flagged 47 of 50 test images, and the images it alone
        flagged were all right (benchmarks/notes/adapt.md).
    rounds : int
        Rounds of pseudo-labelling and training (>= 1). From the second on, the previous
        round's student is the teacher (it has seen the new source, so more of its
        predictions pass); the student budget is shared equally between the rounds.
    """

    flip_tolerance: float = 0.01
    annotated_repeats: int = 4
    teacher_share: float = 0.5
    batch_size: int = 4
    ignored_flags: tuple[str, ...] = ("steps_disagree",)
    rounds: int = 1

    def __post_init__(self) -> None:
        if not self.flip_tolerance > 0:
            raise ValueError(f"flip_tolerance must be positive, got {self.flip_tolerance}")
        if self.annotated_repeats < 1:
            raise ValueError(f"annotated_repeats must be >= 1, got {self.annotated_repeats}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0.0 < self.teacher_share < 1.0:
            raise ValueError(f"teacher_share must be in (0, 1), got {self.teacher_share}")
        unknown = sorted(set(self.ignored_flags) - {*LEVEL_FLAGS, *IMAGE_FLAGS})
        if unknown:
            raise ValueError(f"ignored_flags: unknown QC flag(s) {', '.join(unknown)}; the "
                             f"flags are {', '.join((*LEVEL_FLAGS, *IMAGE_FLAGS))}")


@dataclass(frozen=True)
class PseudoLabel:
    """The teacher's verdict on one unlabeled image.

    Attributes
    ----------
    path : Path
        The image file.
    result : SpineResult
        The teacher's prediction of the image as stored.
    disagreement_px : float
        Largest point distance (pixels) between the two views; ``inf`` where a view misses
        a point or failed.
    reason : Reason
        ``"kept"``, or why the prediction is no training target.
    """

    path: Path
    result: SpineResult
    disagreement_px: float
    reason: Reason

    @property
    def kept(self) -> bool:
        return self.reason == "kept"


def mirror_back(points: np.ndarray, width: int) -> np.ndarray:
    """Map (P, 2) points predicted on a left-right mirrored image back to the original.

    Continuous pixel coordinates (CONVENTIONS section 1): ``x -> W - x``; names are kept.
    """
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, 0] = width - out[:, 0]
    return out


def view_disagreement(points: np.ndarray, other: np.ndarray) -> float:
    """Largest Euclidean distance (pixels) between two (P, 2) predictions of the same points;
    ``inf`` when either misses a point (NaN)."""
    d = np.linalg.norm(np.asarray(points, float) - np.asarray(other, float), axis=-1)
    return float(d.max()) if d.size and np.isfinite(d).all() else float("inf")


def decide(result: SpineResult, mirrored: SpineResult, cfg: SelfTrainingConfig
           ) -> tuple[Reason, float]:
    """Keep or drop a teacher's prediction as a training target.

    Parameters
    ----------
    result : SpineResult
        Prediction of the image as stored.
    mirrored : SpineResult
        Prediction of the left-right mirrored image (points in the mirrored frame).
    cfg : SelfTrainingConfig

    Returns
    -------
    (Reason, float)
        The verdict, checked in this order: ``"unreadable"`` (the prediction failed),
        ``"needs_review"`` (a QC flag not in ``cfg.ignored_flags``), ``"incomplete"`` (a point of the schema missing),
        ``"outside_image"`` (a point off the image), ``"views_disagree"`` (a point moved more than the tolerance between views), else
        ``"kept"``; and the views' disagreement in pixels.
    """
    h, w = result.image_size
    disagreement = float("inf")
    if mirrored.error is None:
        disagreement = view_disagreement(result.points, mirror_back(mirrored.points, w))
    if result.error is not None:
        return "unreadable", disagreement
    raised = {flag for flag, where in result.qc.items() if where}
    if result.needs_review and (not raised or raised - set(cfg.ignored_flags)):
        return "needs_review", disagreement
    if not np.isfinite(result.points).all():
        return "incomplete", disagreement
    x, y = result.points[:, 0], result.points[:, 1]
    if not ((x >= 0) & (x <= w) & (y >= 0) & (y <= h)).all():
        return "outside_image", disagreement
    if not disagreement <= cfg.flip_tolerance * max(h, w):
        return "views_disagree", disagreement
    return "kept", disagreement


def _mirrored(rad: Radiograph) -> Radiograph:
    return Radiograph(np.ascontiguousarray(rad.pixels[:, ::-1]), rad.pixel_spacing,
                      f"{rad.source} (mirrored)", dict(rad.meta))


def pseudo_label(pipeline: SpineLandmarkPipeline, paths: Sequence[Path],
                 cfg: SelfTrainingConfig = SelfTrainingConfig()) -> list[PseudoLabel]:
    """The teacher's verdict on each unlabeled image (:func:`decide`), in order.

    An image that cannot be read is dropped as ``"unreadable"`` (logged), not raised.
    """
    labels: list[PseudoLabel] = []
    for start in range(0, len(paths), cfg.batch_size):
        chunk = list(paths[start:start + cfg.batch_size])
        rads: list[Radiograph | None] = []
        for p in chunk:
            try:
                rads.append(read_image(p))
            except (OSError, ValueError) as exc:
                _log.warning("%s: not pseudo-labelled, unreadable (%s)", p, exc)
                rads.append(None)
        good = [r for r in rads if r is not None]
        views = pipeline.predict([*good, *(_mirrored(r) for r in good)],
                                 batch_size=cfg.batch_size) if good else []
        plain, flipped = views[:len(good)], views[len(good):]
        j = 0
        for p, rad in zip(chunk, rads, strict=True):
            if rad is None:
                failed = SpineResult.failed(str(p), pipeline.schema, "unreadable")
                labels.append(PseudoLabel(p, failed, float("inf"), "unreadable"))
                continue
            reason, dis = decide(plain[j], flipped[j], cfg)
            labels.append(PseudoLabel(p, plain[j], dis, reason))
            j += 1
    return labels


def write_pseudo_dataset(labels: Sequence[PseudoLabel], schema: LandmarkSchema,
                         out: Path) -> Path:
    """Write the kept pseudo-labels as a COCO dataset, and ``report.json`` on all of them.

    ``out/images/`` links each kept image (``<index>_<name>``, no copies); ``annotations.json``
    holds the teacher's points as labels (v = 2); ``report.json`` the counts per
    :data:`Reason` and, per image, its path, verdict and view disagreement (pixels).
    """
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    records: list[ImageRecord] = []
    for i, lab in enumerate(labels):
        if not lab.kept:
            continue
        name = f"{i:06d}_{lab.path.name}"
        (images / name).symlink_to(lab.path.resolve())
        h, w = lab.result.image_size
        records.append(ImageRecord(
            file_name=f"images/{name}", width=w, height=h,
            points=lab.result.points.astype(np.float64),
            visibility=np.full(schema.num_points, 2, dtype=np.int8), image_id=len(records) + 1,
            pixel_spacing=lab.result.pixel_spacing))
    write_coco(records, schema, out / "annotations.json")
    counts = Counter(lab.reason for lab in labels)
    report = {"images": len(labels), "kept": counts.get("kept", 0),
              "dropped": {r: counts.get(r, 0) for r in
                          ("unreadable", "needs_review", "incomplete", "outside_image",
                           "views_disagree")},
              "per_image": [{"path": str(lab.path), "reason": lab.reason,
                             "disagreement_px": lab.disagreement_px
                             if np.isfinite(lab.disagreement_px) else None}
                            for lab in labels]}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    return out


def mixed_dataset(annotated: Path | None, pseudo: Path, out: Path, schema: LandmarkSchema,
                  repeats: int) -> Path:
    """One COCO dataset of the annotated images (``repeats`` times) and the pseudo-labelled
    ones, through links to both folders (``annotated_<j>/``, ``pseudo/``; no copies)."""
    out.mkdir(parents=True, exist_ok=True)
    sources: list[tuple[str, Path]] = [("pseudo", pseudo)]
    if annotated is not None:
        sources += [(f"annotated_{j}", annotated) for j in range(repeats)]
    records: list[ImageRecord] = []
    for prefix, root in sources:
        link = out / prefix
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(root.resolve(), target_is_directory=True)
        for r in read_coco(root / "annotations.json", schema, root=root):
            r.file_name = f"{prefix}/{r.file_name}"
            if r.patient_id is not None:  # a repeat stays in its patient's split
                r.patient_id = f"annotated:{r.patient_id}"
            records.append(r)
    for i, r in enumerate(records):
        r.image_id = i + 1
    write_coco(records, schema, out / "annotations.json")
    return out


def _annotated_count(data_dir: str | os.PathLike[str] | None) -> int:
    if data_dir is None:
        return 0
    path = Path(data_dir) / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: DATA must be a dataset folder "
                                "(annotations.json + images); leave it out to adapt from the "
                                "unlabeled images alone")
    return len(json.loads(path.read_text(encoding="utf-8")).get("images", []))


def _without_annotated(paths: list[Path], data_dir: str | os.PathLike[str] | None
                       ) -> list[Path]:
    """``paths`` less the annotated images of ``data_dir`` (an archive folder that holds them
    too): an image is a training target once, with its annotation."""
    if data_dir is None or not (Path(data_dir) / "annotations.json").is_file():
        return paths
    root = Path(data_dir)
    annotated = {(root / r.file_name).resolve()
                 for r in read_coco(root / "annotations.json", root=root)}
    return [p for p in paths if p.resolve() not in annotated]


def _share(budget: dict[str, float], share: float) -> dict[str, float]:
    return {k: v * share for k, v in budget.items()}


def _clear(run: Path) -> None:
    """Remove what self-training wrote into ``run`` (``--overwrite``)."""
    for item in ("teacher", "pseudo_labels", "adapt_data", "adaptation.json"):
        target = run / item
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _teacher(data_dir: str | os.PathLike[str] | None, run: Path, cfg: TrainConfig,
             st: SelfTrainingConfig, overwrite: bool) -> Path:
    """The teacher's pipeline directory: ``cfg.init_from`` fine-tuned on ``data_dir`` for
    ``st.teacher_share`` of the budget (``RUN/teacher/``), or ``cfg.init_from`` itself
    without annotated data."""
    source = Path(str(cfg.init_from))
    if not (source / "pipeline.json").is_file() and (source / "pipeline").is_dir():
        source = source / "pipeline"  # a run directory
    if data_dir is None:
        return source
    teacher_cfg = dataclasses.replace(cfg, time_budget_s=_share(cfg.time_budget_s,
                                                                st.teacher_share))
    return train_pipeline(str(data_dir), run / "teacher", teacher_cfg, overwrite=overwrite)


def unlabeled_paths(spec: str | os.PathLike[str]) -> list[Path]:
    """The image files of ``--unlabeled``: a folder (searched recursively) or a ``.txt`` /
    ``.csv`` list of paths, as ``spinelandmarks predict`` reads its inputs."""
    from ..cli import collect_inputs

    files, missing = collect_inputs([str(spec)])
    if missing:
        raise FileNotFoundError(f"--unlabeled {spec}: {len(missing)} listed image(s) not found, "
                                f"e.g. {missing[0]}")
    if not files:
        raise ValueError(f"--unlabeled {spec}: no image found (a folder of images, or a .txt / "
                         ".csv list of image paths)")
    return files


def train_with_unlabeled(data_dir: str | os.PathLike[str] | None,
                         run_dir: str | os.PathLike[str], cfg: TrainConfig,
                         st: SelfTrainingConfig = SelfTrainingConfig(), *,
                         overwrite: bool = False) -> Path:
    """Fine-tune ``cfg.init_from`` on the annotated images of ``data_dir`` (None or an empty
    dataset: none) and pseudo-labels of the images of ``cfg.unlabeled``; see the module
    docstring.

    Returns
    -------
    Path
        The pipeline directory ``RUN/pipeline``. ``RUN/pseudo_labels/report.json`` says how
        many pseudo-labels were kept and why the others were dropped; ``RUN/adaptation.json``
        records the settings and where validation came from.
    """
    if not cfg.init_from or not cfg.unlabeled:
        raise ValueError("self-training needs a source pipeline (--init-from) and unlabeled "
                         "images (--unlabeled)")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear(run)
    n_annotated = _annotated_count(data_dir)
    paths = _without_annotated(unlabeled_paths(cfg.unlabeled), data_dir)
    inner = dataclasses.replace(cfg, unlabeled=None)
    teacher_dir = _teacher(data_dir if n_annotated else None, run, inner, st, overwrite)
    teacher = source = SpineLandmarkPipeline.load(teacher_dir)  # its QC settings: the students'
    annotated = Path(data_dir) if data_dir is not None and n_annotated else None
    budget = _share(cfg.time_budget_s, (1 - st.teacher_share if n_annotated else 1.0) / st.rounds)
    keep_source_qc = not (cfg.calibrate_qc and cfg.val_dir)  # fitted on real labels only
    for r in range(1, st.rounds + 1):
        out_dir = run if r == st.rounds else run / f"round{r}"
        suffix = "" if r == 1 else f"_round{r}"
        teacher_dir = _round(dataclasses.replace(inner, time_budget_s=budget), st, annotated,
                             n_annotated, paths, teacher, teacher_dir,
                             run / f"pseudo_labels{suffix}", out_dir, overwrite)
        if keep_source_qc or r < st.rounds:  # the student, as the next teacher or to amend
            teacher = SpineLandmarkPipeline.load(teacher_dir)
        if keep_source_qc:
            teacher.options = dataclasses.replace(
                teacher.options, qc_thresholds=source.options.qc_thresholds,
                fracture_screen_loss=source.options.fracture_screen_loss)
            teacher.save(teacher_dir)
    return teacher_dir


def _round(cfg: TrainConfig, st: SelfTrainingConfig, annotated: Path | None, n_annotated: int,
           paths: list[Path], teacher: SpineLandmarkPipeline, teacher_dir: Path, pseudo: Path,
           out_dir: Path, overwrite: bool) -> Path:
    """One round: ``teacher`` (saved in ``teacher_dir``) labels ``paths`` (``pseudo``; kept
    when it exists, so a run resumes), and a student fine-tuned from it on those and the
    annotated images is written to ``out_dir``; returns the student's pipeline directory."""
    if not (pseudo / "report.json").is_file():
        _log.info("pseudo-labelling %d unlabeled images with %s", len(paths), teacher_dir)
        write_pseudo_dataset(pseudo_label(teacher, paths, st), teacher.schema, pseudo)
    report = json.loads((pseudo / "report.json").read_text())
    if not report["kept"] and not n_annotated:
        raise ValueError(f"no pseudo-label of the {report['images']} unlabeled images passed "
                         f"QC and the view check ({report['dropped']}; {pseudo}/report.json): "
                         f"{teacher_dir} does not fit this archive well enough to learn "
                         "from it alone; annotate a few images (spinelandmarks select) and "
                         "pass them as DATA")
    data = mixed_dataset(annotated, pseudo, out_dir / "adapt_data", teacher.schema,
                         st.annotated_repeats)
    validation = ("the given validation set" if cfg.val_dir else
                  "a split of the annotated and pseudo-labelled images" if n_annotated else
                  "a split of the pseudo-labelled images only (no annotated image)")
    student_cfg = dataclasses.replace(cfg, init_from=str(teacher_dir),
                                      calibrate_qc=cfg.calibrate_qc and bool(cfg.val_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "adaptation.json", json.dumps(
        {"teacher": str(teacher_dir), "annotated": n_annotated, "unlabeled": len(paths),
         "pseudo_labels": str(pseudo), "pseudo_labels_kept": report["kept"],
         "pseudo_labels_dropped": report["dropped"], "validation": validation,
         "settings": dataclasses.asdict(st)}, indent=1) + "\n")
    _log.info("%d of %d pseudo-labels kept (dropped: %s); validation on %s", report["kept"],
              report["images"], report["dropped"], validation)
    return train_pipeline(data, out_dir, student_cfg, overwrite=overwrite)
