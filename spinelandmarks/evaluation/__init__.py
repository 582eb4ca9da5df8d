"""Evaluation against ground truth.

==================  =================================================================
:mod:`.errors`      :func:`evaluate`: localization, angle and identification errors with
                    their tails, step 2 and step 1, against the reference study
:mod:`.clinical`    agreement of the clinical measurements (:func:`evaluate_clinical`)
:mod:`.agreement`   the statistics behind it (MAE, limits of agreement, ICC, sensitivity
                    and specificity with confidence intervals)
:mod:`.masks`       Dice, IoU and HD95 of the body masks (:func:`evaluate_masks`)
:mod:`.report`      ``report.md`` and the plots (:func:`write_report`)
==================  =================================================================

The metric classes themselves (torchmetrics, DDP-safe) are in :mod:`spinelandmarks.metrics`;
the measurement table of a file (``measurements.csv``) in
:mod:`spinelandmarks.measurement_table`.
"""

from __future__ import annotations

from .._deprecation import moved_names
from .clinical import CLINICAL_REFERENCE, FRACTURE_LINES, evaluate_clinical
from .errors import (
    REFERENCE,
    SDR_THRESHOLDS_MM,
    coverage,
    coverage_line,
    evaluate,
    match_to_ground_truth,
    metrics_to_json,
    pair_records,
    tail_figures,
)
from .masks import evaluate_masks
from .report import summary_table, write_report

__all__ = ["CLINICAL_REFERENCE", "FRACTURE_LINES", "REFERENCE", "SDR_THRESHOLDS_MM", "coverage",
           "coverage_line", "evaluate", "evaluate_clinical", "evaluate_masks",
           "match_to_ground_truth", "metrics_to_json", "pair_records", "summary_table",
           "tail_figures", "write_report"]

#: Names that moved to :mod:`spinelandmarks.measurement_table` in 0.2 (served here until 0.3).
__getattr__ = moved_names(__name__, dict.fromkeys(
    ("ANGLE_COLUMNS", "ANGLE_LABELS", "angle_columns", "measure_records",
     "write_measurements_csv"), "spinelandmarks.measurement_table"))
