"""Settings of the phantom generator, and the names shared by its stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHAIN", "LUMBAR", "Array", "PhantomConfig", "SeedLike"]

#: Annotated lumbar levels, cranial to caudal.
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
#: Levels built above S1, caudal to cranial (T12 and T11 are drawn, not annotated).
CHAIN = ("L5", "L4", "L3", "L2", "L1", "T12", "T11")

Array = np.ndarray
SeedLike = int | np.random.Generator | np.random.SeedSequence


@dataclass
class PhantomConfig:
    """Parameters of the synthetic radiograph generator.

    Attributes
    ----------
    long_side : int
        Image height in pixels (portrait images; the long side).
    aspect : float
        Width / height; the width is ``round(long_side * aspect)``.
    pixel_spacing_mm : float or None
        Fixed pixel spacing in mm/px. ``None`` (default): the field of view height is drawn
        from ``fov_height_mm`` and the spacing is ``fov / long_side`` (about 0.3 mm/px at
        1024 px, i.e. a 0.2 mm/px detector image resized to the output size).
    fov_height_mm : (float, float)
        Range of the field-of-view height, mm.
    sacral_slope_deg, lordosis_deg : (float, float)
        Clinical ranges of the anatomical sacral slope and L1-S1 lordosis, degrees.
    size_scale : (float, float)
        Range of the patient size factor applied to every dimension (lumbar body depth
        about 35-45 mm, height 25-30 mm, discs 8-12 mm at scale 1).
    max_rotation_deg : float
        Field-of-view rotation is uniform in +-this, degrees.
    max_shift_frac : float
        Spine centre offset from the image centre, fraction of the image size.
    p_crop : float
        Probability of a larger offset that may push vertebrae out of the field of view.
    p_facing_left, p_fracture, p_listhesis, p_implants : float
        Probabilities per image of a patient facing left (image x mirrored), of one or two
        vertebral compression fractures, of a spondylolisthesis (L4 or L5), of metal implants
        (pedicle screws, rods, interbody cages).
    p_disc_degeneration : float
        Probability per lumbar disc of height loss (30-65 %).
    p_osteophytes, p_aortic_calcification, p_collimation : float
        Probabilities per image of anterior osteophytes, a calcified aorta and visible
        collimator edges.
    bowel_gas : (int, int)
        Range of the number of bowel-gas blobs.
    noise : (float, float)
        Range of the quantum-noise level (attenuation units at zero attenuation).
    blur_mm : (float, float)
        Range of the Gaussian system blur sigma, mm (at least 0.35 px is applied).
    scatter : (float, float)
        Range of the scatter-haze fraction.
    gamma : (float, float)
        Range of the display gamma.
    ilium_shift_mm : (float, float)
        Range of the iliac crest's cranial shift from its drawn height (near the L4-L5 disc),
        mm, scaled with the patient; the wing stretches to the femoral heads, which stay where
        the pelvic incidence puts them. (0, 0), the default, draws no random number for it.
    endplate_rim : float
        Fraction of each lumbar and S1 endplate, at each end, that stays straight when the
        endplate is concave or depressed by a biconcave fracture: the ring apophysis, the
        cortical rim that a codfish vertebra keeps, so the corners stay where the walls meet
        it. 0 draws every endplate as one arc from corner to corner (the phantoms before
        2026-11-29), which leaves biconcave fractures knife-edge horns thinner than a pixel.
    """

    long_side: int = 1024
    aspect: float = 0.8
    pixel_spacing_mm: float | None = None
    fov_height_mm: tuple[float, float] = (260.0, 330.0)
    sacral_slope_deg: tuple[float, float] = (25.0, 55.0)
    lordosis_deg: tuple[float, float] = (20.0, 70.0)
    size_scale: tuple[float, float] = (0.88, 1.12)
    max_rotation_deg: float = 5.0
    max_shift_frac: float = 0.06
    p_crop: float = 0.06
    p_facing_left: float = 0.5
    p_fracture: float = 0.15
    p_listhesis: float = 0.12
    p_implants: float = 0.08
    p_disc_degeneration: float = 0.2
    p_osteophytes: float = 0.25
    p_aortic_calcification: float = 0.25
    p_collimation: float = 0.5
    bowel_gas: tuple[int, int] = (3, 14)
    noise: tuple[float, float] = (0.01, 0.04)
    blur_mm: tuple[float, float] = (0.15, 0.45)
    scatter: tuple[float, float] = (0.0, 0.25)
    gamma: tuple[float, float] = (0.75, 1.35)
    ilium_shift_mm: tuple[float, float] = (0.0, 0.0)
    endplate_rim: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.endplate_rim < 0.5:
            raise ValueError(f"endplate_rim must be in [0, 0.5), got {self.endplate_rim}")

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (H, W) in pixels."""
        return int(self.long_side), max(8, round(self.long_side * self.aspect))
