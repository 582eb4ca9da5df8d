"""The spine measured from its points: the clinical definitions.

=====================  ===========================================================
:mod:`.angles`         lordosis, sacral slope, segmental angles, facing (degrees)
:mod:`.vertebrae`      body sizes and level centres (pixels)
:mod:`.measurements`   spinopelvic balance, morphometry and Genant grades, disc
                       heights, slips, the fracture screen
:mod:`.alignment`      whole-spine sagittal alignment (SVA, T4-T12 kyphosis, TPA)
=====================  ===========================================================

Definitions: ``docs/conventions.md``. The metrics that compare predictions with the truth are
in :mod:`spinelandmarks.metrics` and :mod:`spinelandmarks.evaluation`.
"""

from .alignment import sagittal_alignment
from .angles import (
    LUMBAR_PARAMETERS,
    defined_parameters,
    endplate_tilts,
    facing,
    lordosis,
    lumbar_parameters,
    schema_parameters,
    segmental_angle_names,
    segmental_angles,
    wrap_angle,
)
from .measurements import clinical_columns, genant_grades, height_loss, morphometry
from .vertebrae import level_centres, vertebra_size

__all__ = ["LUMBAR_PARAMETERS", "clinical_columns", "defined_parameters", "endplate_tilts",
           "facing", "genant_grades", "height_loss", "level_centres", "lordosis",
           "lumbar_parameters", "morphometry", "sagittal_alignment", "schema_parameters",
           "segmental_angle_names", "segmental_angles", "vertebra_size", "wrap_angle"]
