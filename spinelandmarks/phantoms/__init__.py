"""Synthetic lateral radiographs with exact ground truth, in three independent styles.

- style A (this package's :mod:`.phantom`, below): drawn lumbar spines, and full-length
  standing films (:mod:`.whole_spine`, schema ``whole_spine_sagittal``);
- style B (:mod:`.projection`): cone-beam projections of 3-D bones;
- style C (:mod:`.outline`): cortical outlines, another imaging chain.

The cross-style benchmark trains on one style and tests on another. Style A:

The generator draws a lumbar spine from clinical ranges (sacral slope, L1-S1 lordosis,
vertebral size and wedging, disc degeneration, compression fractures, spondylolisthesis,
implants), builds it as a chain of endplates from the sacrum upward, renders it with the
surrounding anatomy (posterior elements, sacrum, ilia, femoral heads, lower ribs, soft tissue,
bowel gas, aortic calcification) as a projected attenuation map, and turns that into a
processed radiograph (exposure, blur, quantum noise, scatter haze, gamma, collimation).
Everything is numpy: shapes are signed-distance functions evaluated on pixel grids restricted
to their bounding boxes, so a 1024 px image takes a fraction of a second.

The package has one module per stage: :mod:`.config` (the settings), :mod:`.anatomy` (the
patient drawn in the patient frame, on the endplate chain of :mod:`.frames`), :mod:`.rendering`
(the patient projected and drawn on a :mod:`.canvas`), :mod:`.exposure` (the imaging chain),
:mod:`.phantom` (one image and its ground truth) and :mod:`.writer` (datasets on disk).

Geometry and ground truth
-------------------------
The column is built in a *patient frame* in millimetres (anterior to +x, caudal to +y, origin
at the middle of the S1 superior endplate). Each step from one endplate to the next turns the
endplate by a known wedge angle, so the tilt of every endplate is known exactly; the
L1-S1 lordosis is the sum of the disc and body wedges from S1 up to L1. The patient frame is
then mapped to the image by a similarity transform (mirror for a patient facing left,
rotation ``rotation_deg`` about the image centre, scale ``1 / pixel_spacing``, shift).

Ground-truth points are the *nominal anatomical corners* of each vertebral body: the vertex
where the endplate line meets the anterior or posterior wall line. The drawn body has rounded
corners (radius ``corner_radius_mm``) and slightly concave endplates and anterior wall, so the
rounded bony rim passes ``r (1 / sin(theta / 2) - 1)`` inside the vertex (about 0.4 mm for
``r = 1 mm`` and a right angle), which is below the annotation precision of the reference
study. S1 carries its two superior corners (the sacral plate).

The angles saved in ``record.meta["synthetic"]`` (``sacral_slope_deg``,
``l1_s1_lordosis_deg``, ``l1_l5_lordosis_deg``) are **computed from the final corner
coordinates in image axes** with the formulas of CONVENTIONS section 4 (also for corners
that fell outside the field of view and are therefore absent from the record), so they match
what a user recomputes from the record exactly. The drawn anatomical values are saved too:
lordosis is invariant to the field-of-view rotation, and
``sacral_slope_deg = sacral_slope_anatomical_deg + facing_sign * rotation_deg`` where
``facing_sign`` is +1 for a patient facing right (anterior to +x) and -1 for facing left.

Example
-------
>>> from spinelandmarks.phantoms import PhantomConfig, generate_phantom
>>> img, rec = generate_phantom(7, PhantomConfig(long_side=256))
>>> img.shape, img.dtype, rec.points.shape
((256, 205), dtype('float32'), (22, 2))
"""

from __future__ import annotations

from .config import PhantomConfig
from .outline import OutlineConfig, generate_outline_dataset, generate_outline_phantom
from .phantom import PHANTOM_POINTS, generate_phantom
from .projection import (
    ProjectionConfig,
    generate_projection_dataset,
    generate_projection_phantom,
)
from .whole_spine import generate_whole_spine_phantom
from .writer import generate_dataset

__all__ = ["PHANTOM_POINTS", "OutlineConfig", "PhantomConfig", "ProjectionConfig",
           "generate_dataset", "generate_outline_dataset", "generate_outline_phantom",
           "generate_phantom", "generate_projection_dataset", "generate_projection_phantom",
           "generate_whole_spine_phantom"]
