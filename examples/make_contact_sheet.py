"""Make docs/images/synthetic_contact_sheet.png: a grid of synthetic phantoms with their corners.

Usage::

    python examples/make_contact_sheet.py [--out docs/images/synthetic_contact_sheet.png]

Each tile is a 1024 px phantom (default ``PhantomConfig``, with fractures, listhesis and
implants made more frequent so that the sheet shows them), downsampled for display. Visible
corners (v = 2) are red, occluded ones (v = 1) green; the caption gives the sacral slope and
the L1-S1 lordosis saved with the image, the facing direction and the pathologies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spinelandmarks.phantoms import PhantomConfig, generate_phantom


def tile(seed: int, config: PhantomConfig, width: int) -> Image.Image:
    """One annotated phantom, ``width`` pixels wide."""
    img, rec = generate_phantom(seed, config)
    h, w = img.shape
    scale = width / w
    pil = Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L")
    pil = pil.resize((width, round(h * scale)), Image.Resampling.LANCZOS).convert("RGB")
    draw = ImageDraw.Draw(pil)
    for (x, y), v in zip(rec.points * scale, rec.visibility, strict=True):
        if v == 0:
            continue
        color = (255, 40, 40) if v == 2 else (40, 255, 40)
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], outline=color, width=1)
    m = rec.meta["synthetic"]
    flags = [f"fx {','.join(f'{k}g{g}' for k, g in m['fractures'].items())}"] if m["fractures"] \
        else []
    flags += [f"slip {k}" for k in m["listhesis"]]
    flags += ["implants"] if m["implants"] else []
    text = (f"#{seed} SS {m['sacral_slope_deg']:.0f} LL {m['l1_s1_lordosis_deg']:.0f} "
            f"{m['facing']}\n" + " ".join(flags))
    draw.rectangle([0, 0, width, 24], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 0))
    return pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/synthetic_contact_sheet.png"))
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--tile-width", type=int, default=230)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = PhantomConfig(p_fracture=0.35, p_listhesis=0.3, p_implants=0.2)
    tiles = [tile(args.seed + i, config, args.tile_width) for i in range(args.rows * args.cols)]
    th = max(t.height for t in tiles)
    sheet = Image.new("RGB", (args.cols * args.tile_width, args.rows * th))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % args.cols) * args.tile_width, (i // args.cols) * th))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet = sheet.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
