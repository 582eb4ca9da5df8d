"""Draw the clinical angles on a synthetic radiograph (docs/images/angles.png).

Run: python examples/make_angle_figure.py [--out docs/images/angles.png] [--seed 7]

Extends the three endplates the angles use (L1 superior, L5 inferior, S1 superior) and the
horizontal at S1, and writes each angle as measured from the ground-truth corners.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from spinelandmarks.anatomy.angles import lumbar_parameters
from spinelandmarks.data.plot import draw_points, save_png
from spinelandmarks.phantoms import PhantomConfig, generate_phantom
from spinelandmarks.schema import LUMBAR_SAGITTAL as S

LINES = {("L1", "superior"): (66, 135, 245), ("L5", "inferior"): (245, 166, 35),
         ("S1", "superior"): (230, 60, 60)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/angles.png")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    cfg = PhantomConfig(long_side=640, p_fracture=0, p_listhesis=0, p_implants=0, p_crop=0,
                        p_facing_left=0.0)
    image, rec = generate_phantom(args.seed, cfg)
    params = {k: float(v) for k, v in lumbar_parameters(
        torch.from_numpy(rec.points)[None], S).items()}
    img = Image.fromarray(draw_points(image, rec.points, S, rec.visibility, labels=True))
    draw = ImageDraw.Draw(img)
    for (level, side), colour in LINES.items():
        e = S.endplate(level, side)
        p, a = rec.points[e.posterior], rec.points[e.anterior]
        d = (a - p) / np.linalg.norm(a - p)
        draw.line([tuple(p - 60 * d), tuple(a + 60 * d)], fill=colour, width=2)
    s1 = S.endplate("S1", "superior")
    a = rec.points[s1.anterior]
    draw.line([(a[0] - 140, a[1]), (a[0] + 40, a[1])], fill=(255, 255, 255), width=1)
    text = [(f"L1-L5 lordosis = tilt(L5 inf) - tilt(L1 sup) = {params['l1_l5_lordosis']:.1f} deg",
             LINES[("L5", "inferior")]),
            (f"L1-S1 lordosis = tilt(S1 sup) - tilt(L1 sup) = {params['l1_s1_lordosis']:.1f} deg",
             LINES[("L1", "superior")]),
            (f"Sacral slope = tilt(S1 sup) vs horizontal = {params['sacral_slope']:.1f} deg",
             LINES[("S1", "superior")])]
    draw.rectangle([0, 0, img.width, 10 + 16 * len(text)], fill=(0, 0, 0))
    for i, (line, colour) in enumerate(text):
        draw.text((8, 8 + 16 * i), line, fill=colour, font_size=13)
    save_png(args.out, np.asarray(img))
    print(f"wrote {args.out}: {params}")


if __name__ == "__main__":
    main()
