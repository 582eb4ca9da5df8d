"""The ``spinelandmarks`` command line.

Verbs: ``synth``, ``train``, ``predict``, ``measure``, ``evaluate``, ``export``, ``import``,
``select``, ``demo``. Run
``spinelandmarks VERB --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import csv
import errno
import fnmatch
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_values import (
    BACKBONE_NAMES,
    DETECTOR_BACKBONE_NAMES,
    MIN_CROP_SIZE,
    MIN_IMAGE_SIZE,
    HelpFormatter,
    Parser,
    float_above,
    float_at_least,
    int_at_least,
    schema_value,
    size_at_least,
)
from ._output import configure_output
from ._version import __version__
from .defaults import (
    BUDGET_SHARES,
    CROP_SIZE,
    DETECTOR_HEADS,
    INPUT_SIZE,
    OVERLAY_MAX_SIDE,
    detector_head,
)

if TYPE_CHECKING:
    from .training import TrainConfig

#: Exit statuses: success; some inputs failed (the others were done); usage or input error;
#: interrupted (Ctrl-C).
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: ``synth``'s field of view (height range, mm) for a schema with the femoral heads.
SYNTH_FOV_WITH_HIPS_MM = (450.0, 500.0)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"}
log = logging.getLogger("spinelandmarks")


def _fov_mm(text: str) -> tuple[float, float]:
    """``450,500`` -> (450.0, 500.0): a field-of-view height range in mm."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--fov-mm must look like 450,500 (mm), got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"--fov-mm needs 0 < LOW <= HIGH, got {text!r}")
    return low, high


_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_s(text: str) -> float:
    """``90s``, ``20m``, ``1.5h`` or a bare number of minutes -> seconds."""
    t = text.strip().lower()
    unit = _UNITS_S.get(t[-1:], None)
    try:
        value = float(t[:-1] if unit else t) * (unit or 60.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a duration must look like 90s, 20m or 1.5h, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return value


def _time_budget(text: str) -> float | dict[str, float]:
    """``20m`` (all stages together) or ``detector=2m,landmark=10m,refiner=4m`` (per stage)."""
    if "=" not in text:
        return _duration_s(text)
    budget: dict[str, float] = {}
    for item in text.split(","):
        stage, _, value = item.partition("=")
        if stage.strip() not in ("detector", "landmark", "refiner"):
            raise argparse.ArgumentTypeError(
                f"unknown stage {stage.strip()!r} in --time-budget (detector, landmark, refiner)")
        budget[stage.strip()] = _duration_s(value)
    return budget


def _shares_help() -> str:
    """``detector 23 %%, landmark 49 %%, refiner 28 %%`` from :data:`defaults.BUDGET_SHARES`."""
    return ", ".join(f"{stage} {round(100 * share)} %%" for stage, share in BUDGET_SHARES.items())


def _add_schema_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schema", default=None, metavar="NAME|FILE", type=schema_value,
                   help="landmark schema: a registered name (lumbar_sagittal) or a schema JSON "
                        "file (default: the one stored in the annotation file, else "
                        "lumbar_sagittal)")


def _add_device_options(p: argparse.ArgumentParser, batch_size: int) -> None:
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default: auto)")
    p.add_argument("--precision", default=None,
                   help="32-true, bf16-mixed or 16-mixed (default: 32-true)")
    p.add_argument("--batch-size", type=int_at_least(1), default=batch_size,
                   help=f"images per batch (default: {batch_size})")


def _add_parallel_options(p: argparse.ArgumentParser, devices: str) -> None:
    p.add_argument("--devices", default=devices,
                   help=f"devices per node: a number, a list such as 0,2 or 'auto' "
                        f"(default: {devices})")
    p.add_argument("--num-nodes", type=int_at_least(1), default=1,
                   help="machines (with the Lightning launcher or SLURM; default 1)")
    p.add_argument("--strategy", default="auto",
                   help="Lightning strategy: auto, ddp, ddp_spawn, ... (default: auto)")


def _verb_synth(sub: Any) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic annotated data set",
        description="Writes OUT/annotations.json (COCO keypoints, the generating parameters per "
                    "image) and OUT/images/ (16-bit PNG or DICOM).")
    p.add_argument("out", help="output dataset directory")
    p.add_argument("--num-images", type=int_at_least(1), default=100, help="images to write")
    p.add_argument("--seed", type=int, default=0, help="random seed of the phantoms")
    p.add_argument("--size", type=int_at_least(MIN_IMAGE_SIZE), default=1024,
                   help="long side in pixels (default 1024)")
    p.add_argument("--format", choices=["png", "dicom"], default="png", help="image format")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="worker processes")
    p.add_argument("--fov-mm", type=_fov_mm, default=None, metavar="LOW,HIGH",
                   help="field-of-view height range in mm, e.g. 450,500 (default: 450,500 for "
                        "a schema with the femoral heads, which then lie in the field; else the "
                        "generator's 260,330)")
    p.add_argument("--schema", default="lumbar_sagittal", metavar="NAME|FILE", type=schema_value,
                   help="annotated points: lumbar_sagittal (default), lumbopelvic_sagittal "
                        "(+ femoral head centres), lumbar_morphometry (+ endplate middles), or "
                        "a schema JSON file made of those points")


def _add_unlabeled_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unlabeled", default=None, metavar="DIR_OR_LIST",
                   help="with --init-from: also learn from unlabeled images of the new source "
                        "(a folder, or a .txt/.csv list of paths): the source pipeline, first "
                        "fine-tuned on DATA if given, labels them; predictions that pass QC "
                        "and agree with the mirrored image's become training targets "
                        "(RUN/pseudo_labels/report.json). DATA may then be left out")
    p.add_argument("--unlabeled-rounds", type=int_at_least(1), default=1, metavar="N",
                   help="rounds of self-training with --unlabeled: each round's student "
                        "labels the images again for the next; the budget is shared "
                        "(default 1)")


def _check_unlabeled_args(args: argparse.Namespace) -> None:
    """DATA may be left out only with --unlabeled, which needs --init-from."""
    if args.unlabeled is not None and args.init_from is None:
        raise ValueError("--unlabeled needs --init-from PIPELINE: the source pipeline labels "
                         "the unlabeled images")
    if args.unlabeled_rounds != 1 and args.unlabeled is None:
        raise ValueError("--unlabeled-rounds needs --unlabeled DIR_OR_LIST (the images the "
                         "rounds label)")
    if args.data is None and args.unlabeled is None:
        raise ValueError("train needs DATA (a dataset folder), or --init-from PIPELINE "
                         "--unlabeled DIR to adapt from unlabeled images alone")


def _verb_train(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train detector, landmark model and refiner on a dataset",
        description="Writes RUN/<stage>/ (best.pt, best.ckpt, last.ckpt, config.json, CSV logs) "
                    "for the detector, landmark and refiner stages, RUN/config.json and "
                    "RUN/pipeline/ (loadable by SpineLandmarkPipeline.load; QC thresholds fitted "
                    "on the validation images). Rerun to resume.")
    p.add_argument("data", nargs="?", default=None,
                   help="dataset directory (annotations.json + images/); may be left out with "
                        "--unlabeled")
    p.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    p.add_argument("--val", default=None, help="separate validation dataset (default: a "
                   "patient-wise 10 %% of DATA)")
    _add_device_options(p, 8)
    _add_parallel_options(p, "auto")
    p.add_argument("--max-epochs", type=int_at_least(1), default=30,
                   help="epochs of each stage without a count of its own "
                        "(--landmark-epochs, --detector-epochs, --refiner-epochs)")
    p.add_argument("--landmark-epochs", type=int_at_least(1), default=None,
                   help="epochs of the landmark model (default: --max-epochs)")
    p.add_argument("--detector-epochs", type=int_at_least(1), default=None,
                   help="epochs of the detector (default: --max-epochs)")
    p.add_argument("--refiner-epochs", type=int_at_least(1), default=None,
                   help="epochs of the crop refiner (default: --max-epochs)")
    p.add_argument("--time-budget", type=_time_budget, default=None,
                   help="wall-clock limit instead of epochs: a total (20m, 1.5h, 900s; shared "
                        f"{_shares_help()}) or per stage "
                        "(detector=2m,landmark=10m,refiner=4m); the learning rate anneals over "
                        "the budget. A stage without a budget trains for its epochs")
    p.add_argument("--image-size", type=size_at_least(MIN_IMAGE_SIZE), default=None,
                   help=f"model input HxW, each side >= {MIN_IMAGE_SIZE} (default: "
                        f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}, or the --init-from pipeline's)")
    p.add_argument("--crop-size", type=size_at_least(MIN_CROP_SIZE), default=None,
                   help=f"refiner crop HxW, each side >= {MIN_CROP_SIZE} (default: "
                        f"{CROP_SIZE[0]}x{CROP_SIZE[1]}, or the --init-from pipeline's)")
    p.add_argument("--backbone", default=None, choices=BACKBONE_NAMES, metavar="NAME",
                   help="backbone of the landmark model and the refiner: "
                        + ", ".join(BACKBONE_NAMES)
                        + " (default: resnet18, or the --init-from pipeline's)")
    p.add_argument("--detector-backbone", default=None, choices=DETECTOR_BACKBONE_NAMES,
                   metavar="NAME", help="backbone of the vertebra detector: "
                                        + ", ".join(DETECTOR_BACKBONE_NAMES)
                                        + " (default: resnet18, or the --init-from pipeline's)")
    p.add_argument("--weights", default=None,
                   help="local weights file for the --backbone of the landmark model and the "
                        "refiner (the detector's --detector-backbone starts from random "
                        "weights, or from --init-from)")
    p.add_argument("--init-from", default=None, metavar="PIPELINE",
                   help="start every stage from the networks of a saved pipeline (RUN/pipeline "
                        "or RUN) instead of random weights: fine-tune on a few annotated images "
                        "of a new source. The schema, backbones, sizes and detector head not "
                        "given are taken from it (and listed)")
    _add_unlabeled_option(p)
    p.add_argument("--lr", type=float_above(0.0), default=1e-3,
                   help="peak learning rate of the landmark model and the refiner; the "
                        "detector keeps its own (VertebraDetector's lr)")
    p.add_argument("--workers", type=int_at_least(0), default=2,
                   help="DataLoader processes (0: the main process)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampling and "
                                                        "initialization")
    p.add_argument("--detector-head", choices=sorted(DETECTOR_HEADS), default=None,
                   help="Faster R-CNN head: small (64-channel FPN, 256-wide box head) or "
                        "full (torchvision's); default: small when training on CPU, full on "
                        "a GPU, the source's with --init-from")
    p.add_argument("--small-detector", action="store_const", const="small",
                   dest="detector_head", help="the same as --detector-head small")
    _add_schema_option(p)
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds a run trained from other data or settings: clear it and "
                        "train anew (without this, such a run is refused; a run from the same "
                        "data and settings is resumed)")
    p.add_argument("--masks", action="store_true",
                   help="also train the refiner to outline each vertebral body (needs masks: "
                        "COCO segmentation in the annotations; predict then writes them)")
    p.add_argument("--deformity-weight", type=float_above(0.0), default=None,
                   help="the refiner sees crops of deformed bodies (reference height loss "
                        ">= 15 %%: fractures) this many times as often, the detector "
                        "radiographs with the mean weight of their bodies; 1 disables "
                        "(default: TrainConfig.deformity_weight, 24)")
    p.add_argument("--height-weight", type=float_at_least(0.0), default=None,
                   help="weight of the refiner's body-height loss term (relative error of the "
                        "anterior, middle and posterior heights); 0 disables "
                        "(default: TrainConfig.height_weight, 0)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out the images whose annotations have problems (missing image, "
                        "point far outside, labelled twice, ...) instead of refusing the data "
                        "set; they are counted and listed in OUT/skipped_records.csv")
    _add_cache_option(p)
    p.add_argument("--stages", default="detector,landmark,refiner",
                   help="comma-separated subset of detector,landmark,refiner")
    _add_task_class_options(p)


def _add_task_class_options(p: argparse.ArgumentParser) -> None:
    """``train --landmark-class/--refiner-class/--detector-class MODULE:CLASS``."""
    for stage, base in (("landmark", "LandmarkModel"), ("refiner", "CropRefiner"),
                        ("detector", "VertebraDetector")):
        p.add_argument(f"--{stage}-class", default=None, metavar="MODULE:CLASS",
                       help=f"train your subclass of {base} for the {stage} stage, e.g. "
                            f"mypackage.models:My{base} (importable: installed or on "
                            f"PYTHONPATH; default: {base})")


def _task_classes(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--*-class`` options as :class:`~spinelandmarks.training.TrainConfig` fields."""
    return {f"{stage}_class": getattr(args, f"{stage}_class")
            for stage in ("landmark", "refiner", "detector")}


def _add_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", choices=["memory", "disk", "none"], default="memory",
                   help="keep each decoded, normalized radiograph for its crops and later "
                        "epochs: in each worker's memory (within a byte budget), memory-mapped "
                        "in RUN/cache (shared by the workers; needs disk space), or not at all "
                        "(default: memory)")


def _add_overlay_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overlay-size", type=int_at_least(0), default=OVERLAY_MAX_SIDE, metavar="PX",
                   help="long side of the overlays in pixels, 0 for full resolution "
                        f"(default: {OVERLAY_MAX_SIDE}; smaller radiographs keep their size)")
    p.add_argument("--overlay-format", choices=["png", "jpg"], default="png",
                   help="overlay file format (default: png)")


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="inference backend of the networks: onnxruntime runs the "
                        "landmark model, the refiner and the detector's backbone on the CPU "
                        "with ONNX Runtime, the fastest on a CPU (pip install "
                        "'spinelandmarks[onnxruntime]'; exported once per pipeline) "
                        "(default: torch)")


def _verb_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="run a trained pipeline on radiographs",
        description="Writes OUT/predictions.json (step-2 points with scores, needs_review and qc "
                    "per image), OUT/predictions_step1.json, OUT/measurements.csv, "
                    "OUT/failures.csv, OUT/overlays/*.png, OUT/predictions.jsonl (the journal: "
                    "after a crash or Ctrl-C, rerun the same command to resume) and "
                    "OUT/predict.json (the inputs), OUT/summary.json (counts: images, "
                    "needs_review, shifted, shift_alarm). Prints how many images need review "
                    "and whether the images look like the pipeline's training images.")
    p.add_argument("run", help="run directory from `train` (or a pipeline directory)")
    p.add_argument("inputs", nargs="+",
                   help="image files (DICOM, PNG, JPEG, TIFF), folders (searched recursively) "
                        "or .txt / .csv lists of image paths")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="in folders, only paths matching (e.g. '*/lateral/*'); repeatable")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="in folders, leave out paths matching (e.g. '*_AP.dcm'); repeatable")
    p.add_argument("--out", required=True, help="output directory")
    _add_device_options(p, 4)
    _add_parallel_options(p, "1")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    _add_overlay_options(p)
    _add_backend_option(p)
    p.add_argument("--workers", type=int_at_least(0), default=0,
                   help="processes decoding the images (default 0: the main process)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds other files or predictions of other inputs: replace the "
                        "predictions there (without this such a folder is refused; rerunning "
                        "on the same inputs replaces them)")
    p.add_argument("--no-tta", action="store_true",
                   help="refine each vertebra in one crop instead of averaging four views "
                        "(faster, less accurate)")


def _verb_measure(sub: Any) -> None:
    p = sub.add_parser(
        "measure", help="clinical parameters from an annotation file",
        description="Writes OUT (CSV): one row per image with the lumbar angles, segmental "
                    "angles, facing, missing levels and the clinical measurements (pelvic "
                    "parameters, body heights, Genant grades, disc heights, slips).")
    p.add_argument("annotations", help="COCO keypoint file (annotations or predictions)")
    p.add_argument("--out", required=True, help="output CSV")
    _add_schema_option(p)


def _verb_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="compare predictions with ground truth",
        description="Writes OUT/report.md, OUT/metrics.json and plots (Bland-Altman, predicted vs"
                    " true, error per level); prints the headline figures with tails and level "
                    "identification.")
    p.add_argument("predictions", help="predictions.json (step 2)")
    p.add_argument("ground_truth", help="ground-truth annotations.json")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--step1", default=None, help="predictions_step1.json to compare (default: "
                   "next to PREDICTIONS when present)")
    p.add_argument("--allow-partial", action="store_true",
                   help="exit 0 even when some ground-truth images have no prediction (the "
                        "figures then cover the matched images only; without this, exit 1)")
    _add_schema_option(p)


def _verb_export(sub: Any) -> None:
    p = sub.add_parser("export", help="predictions or annotations as files for CVAT or "
                                      "Label Studio, to correct them there",
                       description="Writes, for CVAT: OUT/annotations.xml (CVAT for images "
                                   "1.1: a skeleton per level) and OUT/cvat_labels.json "
                                   "(skeleton labels for the project's Raw label editor); with "
                                   "--format coco: OUT/coco_keypoints.zip (COCO Keypoints 1.0) "
                                   "and OUT/cvat_labels.json; for Label Studio: "
                                   "OUT/label_studio_tasks.json (points as predictions) and "
                                   "OUT/label_studio_config.xml (the labelling interface). "
                                   "Images keep their paths relative to the folder they share "
                                   "(sub-folders included); nothing is written on a refusal.")
    p.add_argument("annotations", help="predictions.json (from predict) or annotations.json")
    p.add_argument("--format", required=True, choices=["cvat", "coco", "label-studio"],
                   help="cvat: CVAT for images 1.1 XML; coco: COCO Keypoints 1.0 (for CVAT "
                        "or other tools); label-studio: Label Studio JSON tasks")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-url", default="/data/local-files/?d=",
                   help="Label Studio: URL prefix of the images (default: its local storage)")
    _add_schema_option(p)


def _verb_import(sub: Any) -> None:
    p = sub.add_parser("import", help="annotations from CVAT, Label Studio or BUU-LSPINE into "
                                      "the dataset layout",
                       description="Writes OUT/annotations.json and OUT/images/ (links to the "
                                   "images, or copies with --copy), after checking every "
                                   "record; nothing is written when a record has a problem.")
    p.add_argument("source", help="CVAT export (CVAT for images 1.1 XML or COCO Keypoints, "
                                  "zipped or not), Label Studio JSON export, or the BUU-LSPINE "
                                  "folder")
    p.add_argument("--format", required=True,
                   choices=["cvat", "coco", "label-studio", "buu-lspine"],
                   help="cvat reads CVAT XML and CVAT's COCO Keypoints export alike")
    p.add_argument("--images", default=None,
                   help="folder holding the images named in the export (cvat, label-studio)")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out the records with problems (image not found, point far "
                        "outside, labelled twice, ...) instead of writing nothing; they are "
                        "counted and listed in OUT/skipped_records.csv")
    _add_schema_option(p)


def _verb_select(sub: Any) -> None:
    p = sub.add_parser(
        "select", help="choose the images of a new source to annotate first",
        description="Predicts every image, scores how unsure the pipeline is of it (QC flags, "
                    "heatmap spread, step 1-2 disagreement) and picks K spread over the "
                    "archive (greedy k-center on the step-1 backbone's pooled features). "
                    "Writes OUT (the K paths, most informative first, one per line) and, with "
                    "--export, the K images' predictions as pre-annotations to correct.")
    p.add_argument("run", help="run directory from `train` (or a pipeline directory)")
    p.add_argument("inputs", nargs="+",
                   help="image files, folders (searched recursively) or .txt / .csv lists")
    p.add_argument("--n", type=int_at_least(1), required=True, metavar="K", help="images to choose")
    p.add_argument("--out", required=True, help="text file to write the chosen paths to")
    p.add_argument("--export", choices=["cvat", "label-studio"], default=None,
                   help="also write the chosen images' predictions for this tool")
    p.add_argument("--export-out", default=None, metavar="DIR",
                   help="folder for --export (as `spinelandmarks export --out`)")
    p.add_argument("--image-url", default="/data/local-files/?d=",
                   help="Label Studio: URL prefix of the images (default: its local storage)")
    p.add_argument("--seed", type=int, default=0, help="order among exact ties")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default: auto)")
    p.add_argument("--batch-size", type=int, default=4, help="images per batch (default: 4)")


def _verb_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="synthesize, train, predict and evaluate end to end")
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--num-train", type=int_at_least(2), default=160,
                   help="synthetic training radiographs")
    p.add_argument("--num-test", type=int_at_least(1), default=40,
                   help="synthetic test radiographs")
    p.add_argument("--max-epochs", type=int_at_least(1), default=None,
                   help="epochs of every stage instead of the time budget (default: a time "
                        "budget sized to the device)")
    p.add_argument("--size", type=int_at_least(MIN_IMAGE_SIZE), default=None,
                   help="long side of the synthetic radiographs (default 512 CPU, 768 GPU)")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and training")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spinelandmarks", formatter_class=HelpFormatter,
        description="Vertebral corner localization and lumbar measurements on sagittal spine "
                    "radiographs (two-step DSNT method).",
        epilog="Exit status: 0 done; 1 done in part (the failed inputs are listed); 2 usage "
               "or input error (nothing done); 130 interrupted. Power users: `spinelandmarks "
               "fit|validate|test -c CONFIG.yaml` runs LightningCLI on any module "
               "(examples/configs/).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_verb in (_verb_synth, _verb_train, _verb_predict, _verb_measure, _verb_evaluate,
                     _verb_export, _verb_import, _verb_select, _verb_demo):
        add_verb(sub)
    for verb in sub.choices.values():
        verb.formatter_class = HelpFormatter  # defaults and choices in every --help
        verb.add_argument("--verbose", action="store_true",
                          help="also show third-party log lines and warnings")
        verb.add_argument("--debug", action="store_true",
                          help="show the Python traceback of an error (also: environment "
                               "variable SPINELANDMARKS_DEBUG=1)")
    return parser


# -- verbs ---------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from .phantoms import PhantomConfig, generate_dataset
    from .schema import NON_VERTEBRAL_LEVEL, resolve_schema

    fov = args.fov_mm
    if fov is None and NON_VERTEBRAL_LEVEL in resolve_schema(args.schema).level_names:
        fov = SYNTH_FOV_WITH_HIPS_MM  # a taller field: the femoral heads in every image
    t0 = time.perf_counter()
    config = PhantomConfig(long_side=args.size,
                           **({} if fov is None else {"fov_height_mm": fov}))
    out = generate_dataset(args.out, args.num_images, seed=args.seed, config=config,
                           fmt=args.format, workers=args.workers, schema=args.schema)
    print(f"wrote {args.num_images} images to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .schema import resolve_schema
    from .training import TrainConfig, split_time_budget, train_pipeline

    _check_unlabeled_args(args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if args.schema is not None:
        resolve_schema(args.schema)  # an unknown name fails before any data is read
    _check_init_from(args.init_from)
    budget = args.time_budget
    if isinstance(budget, float):
        budget = split_time_budget(budget, stages)
    network = _network_options(args)
    cfg = TrainConfig(
        accelerator=args.accelerator, devices=_devices(args.devices),
        num_nodes=args.num_nodes, strategy=args.strategy,
        precision=args.precision or "32-true", max_epochs=args.max_epochs,
        landmark_epochs=args.landmark_epochs,
        detector_epochs=args.detector_epochs, refiner_epochs=args.refiner_epochs,
        batch_size=args.batch_size, weights_path=args.weights, init_from=args.init_from,
        unlabeled=args.unlabeled, unlabeled_rounds=args.unlabeled_rounds,
        lr=args.lr, num_workers=args.workers, seed=args.seed,
        stages=stages, val_dir=args.val, time_budget_s=budget or {}, masks=args.masks,
        **network,
        **_task_classes(args),
        skip_invalid=args.skip_invalid,
        cache=args.cache,
        **({} if args.deformity_weight is None else {"deformity_weight": args.deformity_weight}),
        **({} if args.height_weight is None else {"height_weight": args.height_weight}))
    if cfg.init_from is not None:
        cfg = _inherit_from_source(cfg, set(network))
    out = train_pipeline(args.data, args.out, cfg, overwrite=args.overwrite)
    print(f"pipeline saved to {out}")
    return 0


def _check_init_from(source: str | None) -> None:
    """``--init-from`` must name a saved pipeline (or a run holding one) before any training."""
    if source is None:
        return
    p = Path(source)
    if not ((p / "pipeline.json").is_file() or (p / "pipeline" / "pipeline.json").is_file()):
        raise ValueError(f"--init-from {source}: not a saved pipeline (no pipeline.json there "
                         "or in its pipeline/ folder); give RUN/pipeline of a finished run")


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields that shape the networks, for the options given (the others
    keep the defaults, or come from ``--init-from``; the detector head defaults to the
    accelerator's, :func:`~spinelandmarks.defaults.detector_head`)."""
    head = args.detector_head
    if head is None and args.init_from is None:
        head = detector_head(_accelerator_device(args.accelerator) == "cuda")
    given = {"schema": args.schema, "image_size": args.image_size,
             "crop_size": args.crop_size, "backbone": args.backbone,
             "detector_backbone": args.detector_backbone,
             "detector_kwargs": None if head is None else dict(DETECTOR_HEADS[head])}
    return {k: v for k, v in given.items() if v is not None}


def _inherit_from_source(cfg: TrainConfig, given: set[str]) -> TrainConfig:
    """``cfg`` with the network settings not given taken from ``--init-from``, printed."""
    from .init_from import inherit_settings

    cfg, taken = inherit_settings(cfg, given)
    if taken:
        shown = {k: (v.get("name", "custom") if isinstance(v, dict) and k == "schema"
                     else "x".join(map(str, v)) if isinstance(v, tuple) else v)
                 for k, v in taken.items()}
        print(f"--init-from {cfg.init_from}: taken from the source pipeline: "
              + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in shown.items()))
    return cfg


def _devices(text: str) -> int | str:
    """``"2"`` -> 2 (a count); ``"auto"`` and ``"0,2"`` (device indices) pass to Lightning."""
    return int(text) if text.isdigit() else text


def collect_inputs(inputs: Sequence[str], exclude: Path | None = None, *,
                   include_patterns: Sequence[str] = (), exclude_patterns: Sequence[str] = ()
                   ) -> tuple[list[Path], list[str]]:
    """The image files to predict, and the inputs that do not exist.

    Each input is an image file, a folder (searched recursively for images; ``include`` /
    ``exclude`` glob patterns on the path relative to the folder), or a ``.txt`` / ``.csv``
    list of image paths (one per line, or a ``file`` column; relative to the list's folder).
    Anything under ``exclude`` (the output folder) is left out; duplicates are kept once.
    """
    files: list[Path] = []
    missing: list[str] = []
    skip = exclude.resolve() if exclude is not None else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += [f for f in sorted(p.rglob("*")) if _is_image(f)
                      and _selected(f.relative_to(p), include_patterns, exclude_patterns)]
        elif p.is_file() and p.suffix.lower() in (".txt", ".csv"):
            listed = _listed_files(p)
            files += [f for f in listed if f.is_file()]
            missing += [str(f) for f in listed if not f.is_file()]
        elif p.is_file():
            files.append(p)
        else:
            missing.append(item)
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen and (skip is None or not r.is_relative_to(skip)):
            seen.add(r)
            unique.append(f)
    return unique, missing


def _is_image(f: Path) -> bool:
    return f.is_file() and (f.suffix.lower() in IMAGE_SUFFIXES
                            or (not f.suffix and _is_dicom(f)))


def _selected(rel: Path, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = rel.as_posix()
    if include and not any(fnmatch.fnmatch(name, pat) for pat in include):
        return False
    return not any(fnmatch.fnmatch(name, pat) for pat in exclude)


def _listed_files(listing: Path) -> list[Path]:
    """Paths in a ``.txt`` (one per line, ``#`` comments) or ``.csv`` (column ``file``, else
    the first column) list, relative to the list's folder unless absolute."""
    text = listing.read_text(encoding="utf-8-sig")
    if listing.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        col = rows[0].index("file") if rows and "file" in rows[0] else 0
        names = [r[col] for r in rows[1 if rows and "file" in rows[0] else 0:] if r]
    else:
        names = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    return [Path(n) if Path(n).is_absolute() else listing.parent / n for n in names]


def _is_dicom(path: Path) -> bool:
    from .data.io import is_dicom_file

    return is_dicom_file(path)


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_files

    files, missing = collect_inputs(args.inputs, exclude=Path(args.out),
                                    include_patterns=args.include,
                                    exclude_patterns=args.exclude)
    for m in missing:
        print(f"error: {m}: no such file or directory", file=sys.stderr)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    failures = predict_files(args.run, files, args.out, batch_size=args.batch_size,
                             accelerator=args.accelerator, precision=args.precision or "32",
                             overlays=not args.no_overlays,
                             tta=False if args.no_tta else None, overwrite=args.overwrite,
                             workers=args.workers, devices=_devices(args.devices),
                             num_nodes=args.num_nodes, strategy=args.strategy,
                             overlay_size=args.overlay_size or None,
                             overlay_format=args.overlay_format, backend=args.backend)
    for path, reason in failures:
        print(f"error: {path}: {reason}", file=sys.stderr)
    n_ok = len(files) - len(failures)
    print(f"predicted {n_ok}/{len(files)} images -> {args.out}")
    _print_shift_advice(Path(args.out), args.run)
    return 1 if failures or missing else 0


def _print_shift_advice(out: Path, run: str) -> None:
    """The run's last lines: whether the archive looks like the training images, and what
    to do when it does not (``summary.json``)."""
    import json

    from .adaptation.shift import SUMMARY, RunSummary, advice

    path = out / SUMMARY
    if path.is_file():
        for line in advice(RunSummary.from_json(json.loads(path.read_text())), run):
            print(line)


def cmd_measure(args: argparse.Namespace) -> int:
    from .data.annotations import read_coco
    from .data.datamodule import schema_for
    from .measurement_table import write_measurements_csv

    schema = schema_for(args.schema, [Path(args.annotations)])
    records = read_coco(args.annotations, schema)
    write_measurements_csv(records, schema, args.out)
    print(f"wrote measurements of {len(records)} images to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.annotations import read_coco
    from .data.datamodule import schema_for
    from .evaluation import coverage, coverage_line, evaluate, match_to_ground_truth
    from .evaluation.report import summary_table, write_report

    schema = schema_for(args.schema, [Path(args.ground_truth)])
    gt = read_coco(args.ground_truth, schema)
    root = Path(args.ground_truth).parent
    pred, unmatched = match_to_ground_truth(read_coco(args.predictions, schema), gt, root)
    if not pred:
        raise ValueError(f"{args.predictions}: no prediction matches an image of "
                         f"{args.ground_truth} (by name, path relative to {root}, or unique "
                         f"file name; e.g. {unmatched[:1]} vs {[r.file_name for r in gt[:1]]})")
    if unmatched:
        log.warning("%d prediction(s) match no ground-truth image and are left out: %s",
                    len(unmatched), ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5
                                                               else ""))
    step1_path = Path(args.step1) if args.step1 else (
        Path(args.predictions).with_name("predictions_step1.json"))
    step1 = (match_to_ground_truth(read_coco(step1_path, schema), gt, root)[0]
             if step1_path.is_file() else None)
    with warnings.catch_warnings():  # unmatched predictions were reported above
        warnings.filterwarnings("ignore", message=".*without ground truth ignored")
        metrics = evaluate(pred, gt, schema, step1_records=step1)
    cov = coverage(gt, pred, unmatched)
    metrics["coverage"] = cov
    metrics["n_unmatched_predictions"] = cov["predictions_unmatched"]
    report = write_report(metrics, args.out, pred_records=pred, gt_records=gt, schema=schema,
                          step1_records=step1)
    print(coverage_line(cov))
    print(summary_table(metrics))
    print(f"report: {report}")
    return _partial_evaluation(cov, args.predictions, args.allow_partial)


def _partial_evaluation(cov: dict[str, Any], predictions: str, allow: bool) -> int:
    """Exit 1 (and say so) when ground-truth images have no prediction, unless allowed."""
    if cov["complete"] or allow:
        return EXIT_OK
    print(f"error: {predictions}: {cov['without_prediction']} of {cov['ground_truth_images']} "
          f"ground-truth images have no prediction (e.g. {cov['missing'][0]}); the figures "
          f"cover the {cov['matched']} matched images only: predict the others, or "
          "--allow-partial to accept a partial evaluation", file=sys.stderr)
    return EXIT_PARTIAL


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, num_train=args.num_train, num_test=args.num_test,
                    max_epochs=args.max_epochs, accelerator=args.accelerator, seed=args.seed,
                    long_side=args.size)


def cmd_export(args: argparse.Namespace) -> int:
    from .data.annotation_tools import export_coco, export_cvat, export_label_studio
    from .data.annotations import read_coco
    from .data.datamodule import schema_for

    schema = schema_for(args.schema, [Path(args.annotations)])
    records = read_coco(args.annotations, schema)
    if args.format == "cvat":
        out = export_cvat(records, schema, args.out)
    elif args.format == "coco":
        out = export_coco(records, schema, args.out)
    else:
        out = export_label_studio(records, schema, args.out, image_url=args.image_url)
    print(f"wrote {len(records)} images to {out}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from .data.annotation_tools import (
        read_cvat_problems,
        read_label_studio_problems,
        write_dataset,
    )
    from .data.buu_lspine import import_buu_lspine
    from .schema import resolve_schema

    schema = resolve_schema(args.schema)
    if args.format == "buu-lspine":
        records = import_buu_lspine(args.source, args.out, copy=args.copy, schema=schema)
    else:
        if args.images is None:
            raise ValueError(f"--images: the folder with the images of {args.source} is needed "
                             f"for --format {args.format}")
        reader = (read_label_studio_problems if args.format == "label-studio"
                  else read_cvat_problems)
        read, problems = reader(args.source, schema)
        records = write_dataset(read, schema, args.images, args.out, copy=args.copy,
                                source=str(args.source), problems=problems,
                                skip_invalid=args.skip_invalid)  # logs what it left out
    print(f"wrote {len(records)} images to {Path(args.out) / 'annotations.json'}")
    return EXIT_OK


def cmd_select(args: argparse.Namespace) -> int:
    from ._atomic import atomic_write_text
    from .adaptation.select import select_images
    from .data.annotation_tools import export_cvat, export_label_studio
    from .inference import SpineLandmarkPipeline
    from .predict import resolve_pipeline_dir

    if args.export is not None and args.export_out is None:
        raise ValueError("--export needs --export-out DIR (the folder to write the files to)")
    files, missing = collect_inputs(args.inputs)
    for m in missing:
        print(f"error: {m}: no such file or directory", file=sys.stderr)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return EXIT_USAGE
    pipe = SpineLandmarkPipeline.load(resolve_pipeline_dir(args.run))
    if _accelerator_device(args.accelerator) == "cuda":
        pipe.to("cuda")
    chosen = select_images(pipe, files, args.n, seed=args.seed, batch_size=args.batch_size)
    atomic_write_text(args.out, "".join(f"{c.path}\n" for c in chosen))
    for c in chosen:
        print(f"{c.rank:3d}. {c.path}: {c.reason}")
    print(f"wrote {len(chosen)} of {len(files)} image paths to {args.out}")
    if args.export is not None:
        records = [c.result.to_record(pipe.schema, step=2, image_id=c.rank)
                   for c in chosen if c.result is not None]
        out = (export_cvat(records, pipe.schema, args.export_out) if args.export == "cvat"
               else export_label_studio(records, pipe.schema, args.export_out,
                                        image_url=args.image_url))
        print(f"pre-annotations of the {len(records)} images: {out}")
    return EXIT_PARTIAL if missing else EXIT_OK


def _accelerator_device(accelerator: str) -> str:
    """``cuda`` for gpu (or auto with a usable GPU), else ``cpu``."""
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                             and torch.cuda.is_available())
    return "cuda" if gpu else "cpu"


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "predict": cmd_predict,
            "measure": cmd_measure, "evaluate": cmd_evaluate, "export": cmd_export,
            "import": cmd_import, "select": cmd_select, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("fit", "validate", "test"):
        from .lightning_cli import run_lightning_cli

        return run_lightning_cli(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare command is a usage error: say what to type
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = args.debug or os.environ.get("SPINELANDMARKS_DEBUG", "") not in ("", "0")
    configure_output(verbose=args.verbose or debug)
    try:
        _check_accelerator(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as exc:  # bad input, options or output locations
        if debug:
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _message(exc: BaseException) -> str:
    """An exception as the user should read it: ``PATH: what is wrong``."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        hint = {errno.EROFS: " (choose an --out on a writable disk)",
                errno.ENOSPC: " (free space or choose another --out)",
                errno.EACCES: " (no permission: choose another --out)",
                errno.EEXIST: " (a file is in the way of a folder)",
                errno.ENOTDIR: " (a file is in the way of a folder)"}.get(exc.errno or 0, "")
        return f"{where}: {exc.strerror}{hint}" if where else f"{exc.strerror}{hint}"
    return str(exc)


def _check_accelerator(args: argparse.Namespace) -> None:
    """``--accelerator gpu`` on a machine without a usable GPU: a clear error up front."""
    if getattr(args, "accelerator", None) in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--accelerator gpu: no CUDA GPU is usable on this machine "
                             "(torch.cuda.is_available() is False); use --accelerator cpu "
                             "or auto")


if __name__ == "__main__":
    sys.exit(main())
