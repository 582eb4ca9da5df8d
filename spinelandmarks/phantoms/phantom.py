"""One phantom: the anatomy drawn, rendered and exposed, and its ground-truth record."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.annotations import ImageRecord
from ..schema import CORNERS, LUMBAR_SAGITTAL, LandmarkSchema, resolve_schema
from .anatomy import DISC_NAMES, SEGMENT_NAMES, Anatomy, draw_anatomy
from .canvas import _body_outline, _endplate_middle
from .config import LUMBAR, Array, PhantomConfig, SeedLike
from .exposure import Exposure, expose
from .frames import _apply
from .rendering import Rendering, render

__all__ = ["PHANTOM_POINTS", "check_schema", "generate_phantom"]

#: The points a phantom has ground truth for, per level.
PHANTOM_POINTS: dict[str, tuple[str, ...]] = {
    **{lv: (*CORNERS, "middle_superior", "middle_inferior") for lv in LUMBAR},
    "S1": ("anterior_superior", "posterior_superior"),
    "FH": ("centre_1", "centre_2"),
}


def check_schema(schema: LandmarkSchema | str) -> LandmarkSchema:
    """The schema, if phantoms have ground truth for all its points, else a ``ValueError``."""
    sch = resolve_schema(schema)
    missing = [f"{lv.name}.{pt}" for lv in sch.levels for pt in lv.points
               if pt not in PHANTOM_POINTS.get(lv.name, ())]
    if missing:
        raise ValueError(f"schema {sch.name!r}: phantoms have no ground truth for "
                         f"{', '.join(missing)} (they have: " + "; ".join(
                             f"{lv} {', '.join(pts)}" for lv, pts in PHANTOM_POINTS.items())
                         + ")")
    return sch


def generate_phantom(rng_or_seed: SeedLike, config: PhantomConfig | None = None, *,
                     file_name: str | None = None, image_id: int = 0,
                     patient_id: str | None = None,
                     schema: LandmarkSchema | str = LUMBAR_SAGITTAL
                     ) -> tuple[np.ndarray, ImageRecord]:
    """Generate one synthetic lateral lumbar radiograph and its ground truth.

    Parameters
    ----------
    rng_or_seed : int, numpy Generator or SeedSequence
        Source of randomness; the same seed gives the same image and record.
    config : PhantomConfig, optional
        Generator settings; default ``PhantomConfig()`` (1024 x 819 px).
    file_name : str, optional
        ``record.file_name``; default ``"<patient_id>.png"``.
    image_id : int
        ``record.image_id``.
    patient_id : str, optional
        Default ``"synth-NNNNNN"`` from an integer seed, else drawn from the generator.
    schema : LandmarkSchema or str
        The points of the record: any schema made of :data:`PHANTOM_POINTS` (the corners, the
        endplate middles on the drawn outline, the drawn femoral head centres), such as
        ``lumbopelvic_sagittal`` or ``lumbar_morphometry``. The image does not depend on it.

    Returns
    -------
    image : np.ndarray
        (H, W) float32 in ``[0, 1]``, bone bright.
    record : ImageRecord
        Points of ``schema`` in pixels (NaN and ``v = 0`` outside the field of view
        or behind the collimator, ``v = 1`` under metal, else ``v = 2``), ``pixel_spacing``
        (row_mm, col_mm), ``patient_id`` and ``meta["synthetic"]``: the generating parameters
        (angles in degrees, lengths in mm; see the module docstring for their frame).
    """
    cfg = config or PhantomConfig()
    sch = check_schema(schema)
    rng = _as_rng(rng_or_seed)
    anat = draw_anatomy(rng, cfg)
    drawn = render(rng, cfg, anat)
    exp = expose(rng, cfg, drawn.canvas, anat.spacing, drawn.implants)
    if patient_id is None:
        patient_id = (f"synth-{int(rng_or_seed):06d}" if isinstance(rng_or_seed, int | np.integer)
                      else f"synth-{int(rng.integers(0, 10**9)):09d}")
    return exp.image, _record(anat, drawn, exp, sch, file_name or f"{patient_id}.png",
                              image_id, patient_id)


def _as_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _visibility(pts_img: Array, exp: Exposure, spacing: float) -> Array:
    """(N,) int8: 0 outside the image or behind the collimator, 1 under metal, else 2."""
    H, W = exp.image.shape
    vis = np.full(len(pts_img), 2, np.int8)
    occl_r = max(1.5 / spacing, 1.0)
    for i, (x, y) in enumerate(pts_img):
        ix, iy = math.floor(x), math.floor(y)
        if not (0.0 <= x < W and 0.0 <= y < H) or exp.coll_mask[iy, ix] > 0.5:
            vis[i] = 0
            continue
        if exp.metal_blur is not None:
            rr_ = math.ceil(occl_r)
            win = exp.metal_blur[max(iy - rr_, 0): iy + rr_ + 1, max(ix - rr_, 0): ix + rr_ + 1]
            if win.size and float(win.max()) > 0.8:
                vis[i] = 1
    return vis


def _tilt_img(p: Array, a: Array, facing: int) -> float:
    return math.degrees(math.atan2(a[1] - p[1], facing * (a[0] - p[0])))


def _image_angles(pts_img: Array, facing: int) -> tuple[float, float, float]:
    """Sacral slope, L1-S1 and L1-L5 lordosis (degrees) from the corners in image axes, with
    the formulas of CONVENTIONS section 4."""
    def tilt(level: str, side: str) -> float:
        if level == "S1":
            a, p = pts_img[20], pts_img[21]
        else:
            k = LUMBAR.index(level) * 4
            a, p = (pts_img[k], pts_img[k + 1]) if side == "sup" else \
                (pts_img[k + 3], pts_img[k + 2])
        return _tilt_img(p, a, facing)

    ss_img = tilt("S1", "sup")
    return ss_img, ss_img - tilt("L1", "sup"), tilt("L5", "inf") - tilt("L1", "sup")


def _schema_points(anat: Anatomy, drawn: Rendering, schema: LandmarkSchema) -> Array:
    """(N, 2) the schema's points in the patient frame (mm), in schema order."""
    def point(level: str, name: str) -> Array:
        if level == "FH":
            return drawn.femoral_heads[int(name[-1]) - 1]
        if level == "S1":
            return anat.s1.a if name == "anterior_superior" else anat.s1.p
        vb = anat.vertebrae[level]
        if name.startswith("middle_"):
            return _endplate_middle(vb, "sup" if name == "middle_superior" else "inf",
                                    drawn.corner_radius, *drawn.body_concavity[level],
                                    drawn.endplate_rim)
        return vb.corners[CORNERS.index(name)]

    return np.stack([point(lv.name, pt) for lv in schema.levels for pt in lv.points])


def _record(anat: Anatomy, drawn: Rendering, exp: Exposure, schema: LandmarkSchema,
            file_name: str, image_id: int, patient_id: str) -> ImageRecord:
    """The ground truth: visible points, the angles as a user recomputes them, metadata."""
    H, W = exp.image.shape
    pts_img = _apply(drawn.to_img, anat.lumbar_points())
    gt_img = (pts_img if schema == LUMBAR_SAGITTAL
              else _apply(drawn.to_img, _schema_points(anat, drawn, schema)))
    vis = _visibility(gt_img, exp, anat.spacing)
    points = gt_img.copy()
    points[vis == 0] = np.nan
    ss_img, l1_s1, l1_l5 = _image_angles(pts_img, anat.facing)
    # internal consistency of the construction (exact up to float rounding)
    assert abs(l1_s1 - anat.ll_anat) < 1e-6
    assert abs(ss_img - (anat.ss + anat.facing * drawn.rot)) < 1e-6
    hip_img = _apply(drawn.to_img, anat.hip[None])[0]
    s1_mid_img = 0.5 * (pts_img[20] + pts_img[21])
    pt_img = math.degrees(math.atan2(anat.facing * (hip_img[0] - s1_mid_img[0]),
                                     hip_img[1] - s1_mid_img[1]))
    synthetic = _meta(anat, drawn, exp, (ss_img, l1_s1, l1_l5, pt_img))
    synthetic["femoral_head_center_px"] = [float(hip_img[0]), float(hip_img[1])]
    return ImageRecord(
        file_name=file_name, width=W, height=H, points=points, visibility=vis,
        image_id=image_id, pixel_spacing=(anat.spacing, anat.spacing), patient_id=patient_id,
        meta={"synthetic": synthetic}, masks=_body_masks(anat, drawn, schema, H, W))


def _body_masks(anat: Anatomy, drawn: Rendering, schema: LandmarkSchema, H: int, W: int
                ) -> dict[str, list[list[float]]]:
    """The drawn outline of every lumbar body of the schema that reaches into the image, as
    a COCO polygon in pixels (180 vertices; fractured shapes as drawn)."""
    masks: dict[str, list[list[float]]] = {}
    for lv in (lv for lv in LUMBAR if lv in schema.level_names):
        outline = _apply(drawn.to_img, _body_outline(anat.vertebrae[lv], drawn.corner_radius,
                                                      *drawn.body_concavity[lv],
                                                      drawn.endplate_rim))
        inside = ((outline[:, 0] > 0) & (outline[:, 0] < W) & (outline[:, 1] > 0)
                  & (outline[:, 1] < H))
        if inside.any():
            masks[lv] = [[round(float(v), 3) for v in outline.reshape(-1)]]
    return masks


def _meta(anat: Anatomy, drawn: Rendering, exp: Exposure,
          angles: tuple[float, float, float, float]) -> dict[str, Any]:
    """``record.meta["synthetic"]``: the generating parameters (degrees, mm)."""
    ss_img, l1_s1, l1_l5, pt_img = angles
    path = anat.pathology
    return {
        "generator": "spinelandmarks.phantoms",
        "sacral_slope_deg": ss_img,
        "l1_s1_lordosis_deg": l1_s1,
        "l1_l5_lordosis_deg": l1_l5,
        "sacral_slope_anatomical_deg": anat.ss,
        "pelvic_tilt_deg": pt_img,
        "pelvic_incidence_deg": anat.pi_deg,
        "facing": "left" if anat.facing < 0 else "right",
        "rotation_deg": drawn.rot,
        "segment_wedges_deg": {n: float(w) for n, w in zip(SEGMENT_NAMES, anat.wedge,
                                                           strict=True)},
        "fractures": path.fractures,
        "fracture_types": path.fracture_type,
        "fracture_height_loss": path.fracture_loss,
        "listhesis": path.listhesis,
        "disc_height_mm": {n: round(float(h), 4) for n, h in zip(DISC_NAMES[:5],
                                                                 anat.disc_h[:5], strict=True)},
        "disc_degeneration": path.degen,
        "osteophytes": drawn.osteophytes,
        "implants": drawn.implants,
        "implant_details": drawn.implant_info,
        "aortic_calcification": drawn.aortic,
        "size_scale": anat.sc,
        "bone_density": anat.density,
        "noise_level": exp.noise_level,
        "blur_px": exp.blur_px,
        "scatter": exp.haze,
        "gamma": exp.gamma,
        "collimation": exp.collimated,
        "cropped": drawn.cropped,
        "bowel_gas_blobs": drawn.n_gas,
    }
